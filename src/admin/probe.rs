//! `rgate healthcheck`: asks a running rgate's admin plane whether it is
//! alive, for container `HEALTHCHECK`s in an image with no shell or curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok` when `GET /healthz` on `admin` answers 200 within two seconds.
pub fn healthcheck(admin: SocketAddr) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&admin, TIMEOUT).map_err(|error| format!("{admin}: {error}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| {
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: rgate\r\nConnection: close\r\n\r\n")
        })
        .map_err(|error| format!("{admin}: {error}"))?;
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) => return Err(format!("{admin}: {error}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("{admin}/healthz answered {status_line:?}"))
    }
}
