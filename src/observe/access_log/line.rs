//! One access-log line, formatted on the writer thread.
//!
//! Hand-written rather than through serde: the generic serializer formats
//! addresses and the time with `Display`/`write!` and measured about 600 ns
//! a line, most of what the log cost a request on a busy core. This writes
//! the same line with the time stamp cached per second, integers through
//! `itoa` and strings copied between the bytes that need escaping.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use super::{Entry, Format};

/// Formats lines, reusing the time stamp while the second stays the same.
pub(super) struct LineWriter {
    format: Format,
    /// The second `stamp` was made for (`u64::MAX`: none yet).
    second: u64,
    /// `2023-11-14T22:13:20` (JSON) or `14/Nov/2023:22:13:20 +0000` (Common).
    stamp: Vec<u8>,
}

impl LineWriter {
    pub(super) fn new(format: Format) -> Self {
        Self {
            format,
            second: u64::MAX,
            stamp: Vec::with_capacity(32),
        }
    }

    /// Appends `entry`'s line, newline included, to `out`; `time` is when
    /// its request arrived.
    pub(super) fn write(&mut self, entry: &Entry, time: SystemTime, out: &mut Vec<u8>) {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.second {
            self.second = since.as_secs();
            self.stamp.clear();
            stamp(self.format, self.second, &mut self.stamp);
        }
        match self.format {
            Format::Json => self.json(entry, since.subsec_millis(), out),
            Format::Common => self.common(entry, out),
        }
        out.push(b'\n');
    }

    fn json(&self, entry: &Entry, millis: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(&self.stamp);
        out.push(b'.');
        three_digits(out, millis);
        out.extend_from_slice(b"Z\",\"request_id\":");
        optional_string(out, entry.texts.request_id().filter(|id| text(id)));
        out.extend_from_slice(b",\"trace_id\":");
        optional_string(
            out,
            entry
                .trace_id
                .as_ref()
                .map(|id| &id[..])
                .filter(|id| id.is_ascii()),
        );
        out.extend_from_slice(b",\"client_ip\":\"");
        ip(out, entry.client_ip);
        out.extend_from_slice(b"\",\"method\":");
        string(out, entry.method.as_str().as_bytes());
        out.extend_from_slice(b",\"host\":");
        optional_string(out, entry.texts.host().filter(|host| text(host)));
        out.extend_from_slice(b",\"path\":");
        string(out, entry.texts.path());
        out.extend_from_slice(b",\"status\":");
        optional_number(out, entry.status.map(u64::from));
        out.extend_from_slice(b",\"bytes_in\":");
        optional_number(out, entry.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        optional_number(out, entry.bytes_out);
        // Milliseconds with microsecond digits: `1.500`.
        let micros = u64::try_from(entry.duration.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(b",\"duration_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        out.push(b'.');
        three_digits(out, (micros % 1000) as u32);
        out.extend_from_slice(b",\"upstream\":");
        match entry.endpoint {
            Some(endpoint) => {
                out.push(b'"');
                socket_addr(out, endpoint);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"route\":");
        optional_string(out, entry.route.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"backend\":");
        optional_string(out, entry.backend.as_deref().map(str::as_bytes));
        out.extend_from_slice(b",\"attempts\":");
        out.extend_from_slice(itoa::Buffer::new().format(entry.attempts).as_bytes());
        out.extend_from_slice(b",\"error\":");
        optional_string(out, entry.error.map(str::as_bytes));
        out.push(b'}');
    }

    fn common(&self, entry: &Entry, out: &mut Vec<u8>) {
        ip(out, entry.client_ip);
        out.extend_from_slice(b" - - [");
        out.extend_from_slice(&self.stamp);
        out.extend_from_slice(b"] \"");
        out.extend_from_slice(entry.method.as_str().as_bytes());
        out.push(b' ');
        // Quotes, backslashes and bytes outside printable ASCII as `\"`, `\\`, `\xNN`.
        let path = entry.texts.path();
        if path
            .iter()
            .all(|&b| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\'' | b'\\'))
        {
            out.extend_from_slice(path);
        } else {
            let _ = write!(out, "{}", path.escape_ascii());
        }
        out.extend_from_slice(b" HTTP/1.1\" ");
        match entry.status {
            Some(status) => out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes()),
            None => out.push(b'-'),
        }
        out.push(b' ');
        match entry.bytes_out {
            Some(bytes) => out.extend_from_slice(itoa::Buffer::new().format(bytes).as_bytes()),
            None => out.push(b'-'),
        }
    }
}

/// The part of the time stamp that changes once a second.
fn stamp(format: Format, secs: u64, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil(secs / 86_400);
    let rest = secs % 86_400;
    let (hour, minute, second) = (rest / 3600, rest / 60 % 60, rest % 60);
    let _ = match format {
        Format::Json => write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        ),
        Format::Common => write!(
            out,
            "{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000",
            MONTHS[(month - 1) as usize],
        ),
    };
}

/// Year, month (1–12) and day of a day count since 1970-01-01 (Howard
/// Hinnant's civil-from-days).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Whether a header value is text (visible ASCII, as `HeaderValue::to_str`
/// asks); one that is not is logged as `null` rather than guessed at.
fn text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// `000`–`999`.
fn three_digits(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

fn optional_number(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn optional_string(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of UTF-8 bytes. Most strings need no escaping, which a
/// branch-free pass over all of them finds quickly; the rest are copied in
/// runs between the bytes that do.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn special(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }
    out.push(b'"');
    if !s.iter().fold(false, |any, &b| any | special(b)) {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::Method;

    use super::*;
    use crate::observe::access_log::Texts;

    fn texts(path: &str, host: Option<&[u8]>, request_id: Option<&[u8]>) -> Texts {
        let mut texts = Texts::new(path, host);
        if let Some(id) = request_id {
            texts.set_request_id(id);
        }
        texts
    }

    fn entry() -> Entry {
        Entry {
            start: Instant::now(),
            texts: texts(
                "/api/orders/\"1\"?page=2",
                Some(b"shop.example.com"),
                Some(b"id-1"),
            ),
            trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
            client_ip: "192.0.2.7".parse().unwrap(),
            method: Method::POST,
            status: Some(201),
            bytes_in: Some(12),
            bytes_out: None,
            duration: Duration::from_micros(1500),
            endpoint: Some("127.0.0.1:9001".parse().unwrap()),
            route: Some("orders".into()),
            backend: Some("orders".into()),
            attempts: 2,
            error: None,
        }
    }

    const TIME: Duration = Duration::from_secs(1_700_000_000);

    fn line(entry: &Entry, format: Format) -> String {
        line_at(entry, SystemTime::UNIX_EPOCH + TIME, format)
    }

    fn line_at(entry: &Entry, time: SystemTime, format: Format) -> String {
        let mut out = Vec::new();
        LineWriter::new(format).write(entry, time, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_carry_every_field() {
        let out = line(&entry(), Format::Json);
        assert!(out.ends_with('\n'));
        let line: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(line["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(line["request_id"], "id-1");
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["client_ip"], "192.0.2.7");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["host"], "shop.example.com");
        assert_eq!(line["path"], "/api/orders/\"1\"?page=2");
        assert_eq!(line["status"], 201);
        assert_eq!(line["bytes_in"], 12);
        assert_eq!(line["bytes_out"], serde_json::Value::Null);
        assert_eq!(line["duration_ms"], 1.5);
        assert_eq!(line["upstream"], "127.0.0.1:9001");
        assert_eq!(line["route"], "orders");
        assert_eq!(line["backend"], "orders");
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["error"], serde_json::Value::Null);
    }

    #[test]
    fn json_lines_match_a_general_serializer_on_awkward_values() {
        let mut entry = entry();
        entry.texts = texts("/a\\c\"d\u{e9}\u{1f600}", Some(b"caf\xe9"), None);
        entry.client_ip = "2001:db8::7".parse().unwrap();
        entry.endpoint = Some("[::1]:8080".parse().unwrap());
        entry.duration = Duration::from_nanos(12_345_678_999);
        entry.error = Some("upstream_timeout");
        entry.status = None;
        let line: serde_json::Value = serde_json::from_str(&line(&entry, Format::Json)).unwrap();
        assert_eq!(line["path"], "/a\\c\"d\u{e9}\u{1f600}");
        assert_eq!(line["client_ip"], "2001:db8::7");
        assert_eq!(line["upstream"], "[::1]:8080");
        assert_eq!(line["request_id"], serde_json::Value::Null);
        // Not visible ASCII: left out rather than guessed at.
        assert_eq!(line["host"], serde_json::Value::Null);
        assert_eq!(line["duration_ms"], 12345.678);
        assert_eq!(line["error"], "upstream_timeout");
        assert_eq!(line["status"], serde_json::Value::Null);
    }

    #[test]
    fn strings_escape_what_json_requires() {
        let mut out = Vec::new();
        string(
            &mut out,
            "a\u{1}b\\c\"d\te\n\r\u{1f}\u{7f}\u{e9}".as_bytes(),
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "\"a\\u0001b\\\\c\\\"d\\te\\n\\r\\u001f\u{7f}\u{e9}\"");
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "a\u{1}b\\c\"d\te\n\r\u{1f}\u{7f}\u{e9}");
    }

    #[test]
    fn the_stamp_follows_the_second() {
        let mut writer = LineWriter::new(Format::Json);
        let entry = entry();
        let mut out = Vec::new();
        for (offset, expected) in [
            (999, "2023-11-14T22:13:20.999Z"),
            (1_000, "2023-11-14T22:13:21.000Z"),
            (86_400_007, "2023-11-15T22:13:20.007Z"),
        ] {
            let time = SystemTime::UNIX_EPOCH + TIME + Duration::from_millis(offset);
            out.clear();
            writer.write(&entry, time, &mut out);
            let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(line["time"], expected);
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        let leap = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        let json: serde_json::Value =
            serde_json::from_str(&line_at(&entry(), leap, Format::Json)).unwrap();
        assert_eq!(json["time"], "2024-02-29T12:34:56.789Z");
        assert!(line_at(&entry(), leap, Format::Common).contains("[29/Feb/2024:12:34:56 +0000]"));
    }

    #[test]
    fn common_lines_escape_the_path() {
        assert_eq!(
            line(&entry(), Format::Common),
            "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"POST /api/orders/\\\"1\\\"?page=2 HTTP/1.1\" 201 -\n"
        );
        let mut plain = entry();
        plain.texts = texts("/api/orders?page=2", None, None);
        plain.bytes_out = Some(100);
        assert_eq!(
            line(&plain, Format::Common),
            "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"POST /api/orders?page=2 HTTP/1.1\" 201 100\n"
        );
    }
}
