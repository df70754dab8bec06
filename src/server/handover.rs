//! Listener handover: a new rgate takes the running one's listening sockets
//! over a Unix socket (`SCM_RIGHTS`), the way HAProxy's `-x`, Envoy's hot
//! restart and Pingora's upgrade do. The sockets never close, so no
//! connection is refused and no handshake reset: the kernel keeps queueing
//! them on the same sockets, and whichever process accepts first serves.
//!
//! 1. The running process (`--handover-socket PATH`) listens on `PATH`.
//! 2. The new one (`--handover-socket PATH --take-over`) connects and gets a
//!    one-line header naming the sockets, with their descriptors attached.
//! 3. It starts serving on them and answers `ok`.
//! 4. The old process then stops accepting and drains, as on SIGTERM. If the
//!    new one dies before its `ok`, the old one goes on serving.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tracing::{info, warn};

/// The protocol's name and version, first on the header line.
const MAGIC: &str = "rgate-handover/1";
/// Descriptors one `SCM_RIGHTS` message may carry on Linux (`SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// How long the new process waits for the old one at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening sockets a gateway serves on.
#[derive(Debug, Default)]
pub struct Listeners {
    /// One per worker on the main port.
    pub main: Vec<TcpListener>,
    /// One per worker on `tls.redirect_http_port`, when set.
    pub redirect: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Copies of the descriptors, for the handover server to send later.
    pub fn duplicate(&self) -> io::Result<Listeners> {
        Ok(Listeners {
            main: self
                .main
                .iter()
                .map(TcpListener::try_clone)
                .collect::<Result<_, _>>()?,
            redirect: self
                .redirect
                .iter()
                .map(TcpListener::try_clone)
                .collect::<Result<_, _>>()?,
            admin: self
                .admin
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?,
        })
    }

    fn all(&self) -> Vec<BorrowedFd<'_>> {
        self.main
            .iter()
            .chain(&self.redirect)
            .chain(&self.admin)
            .map(AsFd::as_fd)
            .collect()
    }
}

/// The new process's side, between receiving the sockets and serving on them.
#[derive(Debug)]
pub struct Taken {
    stream: UnixStream,
}

impl Taken {
    /// Tells the old process that this one serves: it stops accepting and drains.
    pub fn confirm(mut self) -> io::Result<()> {
        self.stream.write_all(b"ok\n")
    }
}

/// Connects to the process serving handovers on `path` and takes its sockets.
pub fn take(path: &Path) -> io::Result<(Listeners, Taken)> {
    let stream = UnixStream::connect(path).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("no rgate answers handovers on {}: {error}", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    let mut header = [0u8; 256];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut header)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let header = std::str::from_utf8(&header[..received.bytes])
        .map_err(|_| invalid("the header is not text"))?;
    let (main, redirect, admin) = parse_header(header)?;
    if fds.len() != main + redirect + usize::from(admin) {
        return Err(invalid(&format!(
            "the header names {} sockets but {} came",
            main + redirect + usize::from(admin),
            fds.len()
        )));
    }
    let mut fds = fds.into_iter().map(TcpListener::from);
    let listeners = Listeners {
        main: fds.by_ref().take(main).collect(),
        redirect: fds.by_ref().take(redirect).collect(),
        admin: fds.next().filter(|_| admin),
    };
    for listener in listeners
        .main
        .iter()
        .chain(&listeners.redirect)
        .chain(&listeners.admin)
    {
        listener.set_nonblocking(true)?;
    }
    Ok((listeners, Taken { stream }))
}

fn invalid(problem: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handover: {problem}"))
}

/// `rgate-handover/1 main=N redirect=M admin=0|1`.
fn parse_header(header: &str) -> io::Result<(usize, usize, bool)> {
    let mut words = header.trim_end().split(' ');
    if words.next() != Some(MAGIC) {
        return Err(invalid(&format!("not an rgate handover ({header:?})")));
    }
    let mut field = |name: &str| -> io::Result<usize> {
        words
            .next()
            .and_then(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| invalid(&format!("no {name}= in {header:?}")))
    };
    let main = field("main")?;
    let redirect = field("redirect")?;
    let admin = field("admin")?;
    if main == 0 || admin > 1 {
        return Err(invalid(&format!("bad counts in {header:?}")));
    }
    Ok((main, redirect, admin == 1))
}

/// The running process's side: a Unix socket a successor connects to.
#[derive(Debug)]
pub struct HandoverServer {
    path: PathBuf,
    listener: UnixListener,
    sockets: Listeners,
}

impl HandoverServer {
    /// Listens on `path` (replacing a socket file left there) to hand over
    /// `sockets` (copies of the workers' descriptors).
    pub fn bind(path: &Path, sockets: Listeners) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            sockets,
        })
    }

    /// Serves successors until one confirms it serves; then returns, and the
    /// caller drains. A successor that fails midway is logged and the next
    /// one waited for.
    pub async fn serve(self) {
        let listener = match tokio::net::UnixListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, "handover socket unusable; restarts will refuse the busy port");
                return std::future::pending().await;
            }
        };
        info!(path = %self.path.display(), "handover socket listening");
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "handover: accept failed");
                    continue;
                }
            };
            match hand_over(stream, &self.sockets).await {
                Ok(()) => {
                    info!("listeners handed over to a new rgate; draining");
                    return;
                }
                Err(error) => warn!(%error, "handover failed; still serving"),
            }
        }
    }
}

/// Sends the sockets and waits for the successor's `ok`.
async fn hand_over(stream: tokio::net::UnixStream, sockets: &Listeners) -> io::Result<()> {
    let fds = sockets.all();
    if fds.len() > MAX_FDS {
        return Err(invalid(&format!(
            "{} sockets, more than one message carries",
            fds.len()
        )));
    }
    let header = format!(
        "{MAGIC} main={} redirect={} admin={}\n",
        sockets.main.len(),
        sockets.redirect.len(),
        u8::from(sockets.admin.is_some())
    );
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(invalid("the descriptors do not fit the control buffer"));
    }
    sendmsg(
        &stream,
        &[IoSlice::new(header.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    // The successor answers once it serves; until then this process serves.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        stream.set_read_timeout(None)?;
        let mut answer = [0u8; 3];
        stream.read_exact(&mut answer).map(|()| answer)
    })
    .await
    .map_err(io::Error::other)??;
    if &answer == b"ok\n" {
        Ok(())
    } else {
        Err(invalid("the successor did not confirm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_strictly() {
        assert_eq!(
            parse_header("rgate-handover/1 main=2 redirect=0 admin=1\n").unwrap(),
            (2, 0, true)
        );
        for bad in [
            "",
            "rgate-handover/2 main=2 redirect=0 admin=1",
            "rgate-handover/1 main=0 redirect=0 admin=0",
            "rgate-handover/1 main=2 admin=1",
            "rgate-handover/1 main=x redirect=0 admin=0",
            "rgate-handover/1 main=1 redirect=0 admin=2",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sockets_travel_and_keep_their_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = main.local_addr().unwrap();
        let sockets = Listeners {
            main: vec![main],
            redirect: Vec::new(),
            admin: None,
        };
        let server = HandoverServer::bind(&path, sockets.duplicate().unwrap()).unwrap();
        // A connection queued on the old process's socket before the handover.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        drop(sockets);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let served = std::thread::spawn(move || runtime.block_on(server.serve()));
        let (taken, confirm) = take(&path).unwrap();
        assert_eq!(taken.main.len(), 1);
        assert_eq!(taken.main[0].local_addr().unwrap(), addr);
        taken.main[0].set_nonblocking(false).unwrap();
        let (_accepted, _) = taken.main[0].accept().unwrap();
        confirm.confirm().unwrap();
        served.join().unwrap();
    }
}
