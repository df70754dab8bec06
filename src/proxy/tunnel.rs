//! An accepted protocol switch (e.g. a WebSocket): once the client has the
//! upstream's 101, the two connections are spliced both ways until both sides
//! have closed (a side that closes has its close passed on).
//!
//! The tunnel is in-flight work on the backend: it keeps its bulkhead slot
//! (and its least_conn count) for its whole life. Its upstream connection now
//! carries another protocol, so it never returns to the pool.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::debug;

use super::client::{Connection, Held};

/// The upstream side of a switched connection, carried to the client
/// connection as the body of the 101 response.
#[derive(Debug)]
pub struct Tunnel {
    upstream: TcpStream,
    /// Bytes the upstream sent right behind its 101: the new protocol's.
    early: BytesMut,
    _held: Held,
}

impl Tunnel {
    pub(crate) fn new(connection: Connection, held: Held) -> Self {
        let (upstream, early) = connection.into_io();
        Self {
            upstream,
            early,
            _held: held,
        }
    }

    /// Splices `client` with the upstream. `client_early` holds what the
    /// client sent right behind its request head, already read by rgate.
    pub async fn run<C>(mut self, client: &mut C, client_early: &[u8])
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let relayed = async {
            client.write_all(&self.early).await?;
            client.flush().await?;
            self.upstream.write_all(client_early).await?;
            tokio::io::copy_bidirectional(client, &mut self.upstream).await
        };
        if let Err(error) = relayed.await {
            debug!(%error, "tunnel ended with an error");
        }
    }
}
