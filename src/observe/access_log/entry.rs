//! What one request leaves in the log.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use smallvec::SmallVec;

/// Room for the request's strings inside the entry; longer ones spill to
/// the heap.
const INLINE: usize = 192;

/// One request's line, filled as the request goes and formatted by the
/// writer thread.
#[derive(Debug)]
pub struct Entry {
    /// When the request's head arrived; the writer turns it into wall-clock
    /// time, so a request reads no clock for its line.
    pub start: Instant,
    pub texts: Texts,
    pub trace_id: Option<[u8; 32]>,
    pub client_ip: IpAddr,
    pub method: Method,
    pub status: Option<u16>,
    /// The declared request and response body sizes (`Content-Length`).
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub duration: Duration,
    pub endpoint: Option<SocketAddr>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub attempts: u32,
    pub error: Option<&'static str>,
}

/// The request's target, Host and request id, copied into one buffer in
/// the entry. Copies rather than shared references: a typical request's fit
/// inline, so logging allocates nothing, and the entry keeps nothing of the
/// request alive (the connection can reuse its read buffer at once).
#[derive(Debug)]
pub struct Texts {
    bytes: SmallVec<[u8; INLINE]>,
    path: Range<usize>,
    host: Option<Range<usize>>,
    request_id: Option<Range<usize>>,
}

impl Texts {
    pub fn new(path: &str, host: Option<&[u8]>) -> Self {
        let mut bytes = SmallVec::new();
        bytes.extend_from_slice(path.as_bytes());
        let mut texts = Self {
            bytes,
            path: 0..path.len(),
            host: None,
            request_id: None,
        };
        texts.host = host.map(|host| texts.push(host));
        texts
    }

    pub fn set_request_id(&mut self, id: &[u8]) {
        self.request_id = Some(self.push(id));
    }

    fn push(&mut self, text: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text);
        start..self.bytes.len()
    }

    /// The target as the client sent it (UTF-8: it was checked as a URI).
    pub fn path(&self) -> &[u8] {
        &self.bytes[self.path.clone()]
    }

    /// The Host field's bytes, as received.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.clone().map(|range| &self.bytes[range])
    }

    /// The request id's bytes, once the request got one.
    pub fn request_id(&self) -> Option<&[u8]> {
        self.request_id.clone().map(|range| &self.bytes[range])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_keep_their_fields_apart_inline_and_spilled() {
        let mut texts = Texts::new("/api/orders?page=2", Some(b"shop.example.com"));
        assert_eq!(texts.request_id(), None);
        texts.set_request_id(b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(texts.path(), b"/api/orders?page=2");
        assert_eq!(texts.host(), Some(&b"shop.example.com"[..]));
        assert_eq!(
            texts.request_id(),
            Some(&b"4bf92f3577b34da6a3ce929d0e0e4736"[..])
        );
        assert!(!texts.bytes.spilled());

        let long = format!("/{}", "x".repeat(300));
        let mut texts = Texts::new(&long, None);
        texts.set_request_id(b"id-1");
        assert!(texts.bytes.spilled());
        assert_eq!(texts.path(), long.as_bytes());
        assert_eq!(texts.host(), None);
        assert_eq!(texts.request_id(), Some(&b"id-1"[..]));
    }
}
