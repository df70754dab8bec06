use super::*;

/// Feeds `stream` in pieces of every size from 1 up; each split must agree.
fn conflicts(stream: &[u8]) -> Vec<u64> {
    let whole = scan_in_pieces(stream, stream.len().max(1));
    for size in 1..stream.len() {
        assert_eq!(scan_in_pieces(stream, size), whole, "pieces of {size}");
    }
    whole
}

fn scan_in_pieces(stream: &[u8], size: usize) -> Vec<u64> {
    let mut scanner = Scanner::new(64 * 1024);
    stream
        .chunks(size)
        .filter_map(|piece| scanner.scan(piece))
        .collect()
}

#[test]
fn both_fields_in_either_order_are_found_with_the_request_index() {
    assert_eq!(
        conflicts(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        [0]
    );
    let second = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n";
    assert_eq!(conflicts(second), [1]);
}

#[test]
fn bodies_are_skipped_by_their_framing() {
    // Lookalike heads inside bodies are data, not requests.
    let fake = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut by_length = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        fake.len()
    )
    .into_bytes();
    by_length.extend_from_slice(fake);
    by_length.extend_from_slice(
        b"GET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(conflicts(&by_length), [1]);

    let mut chunked = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x};ext=1\r\n", fake.len()).as_bytes());
    chunked.extend_from_slice(fake);
    chunked.extend_from_slice(b"\r\n0\r\nx-trailer: 1\r\n\r\n");
    chunked.extend_from_slice(
        b"GET /b HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(conflicts(&chunked), [1]);
}

#[test]
fn clean_streams_have_no_conflicts() {
    let stream = b"\r\nGET / HTTP/1.1\nHost: a\n\n\
        POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\
        GET /c HTTP/1.1\r\n\r\n";
    assert!(conflicts(stream).is_empty());
}

#[test]
fn the_watch_steps_aside_where_hyper_ends_http1() {
    let behind = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for opening in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        let mut stream = opening.to_vec();
        stream.extend_from_slice(behind);
        assert!(
            conflicts(&stream).is_empty(),
            "{:?}",
            String::from_utf8_lossy(opening)
        );
    }
    let mut scanner = Scanner::new(16);
    assert_eq!(scanner.scan(b"GET /a-very-long-line"), None);
    assert_eq!(scanner.state, State::Off);
}

#[test]
fn the_record_flags_only_the_conflicting_request() {
    let record = FramingRecord::default();
    record.conflict.store(1, Relaxed);
    assert!(!record.next_request_conflicts());
    assert!(record.next_request_conflicts());
    assert!(!record.next_request_conflicts());
}

mod fuzz {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    const PIECES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"POST /a HTTP/1.1\n",
        b"CONNECT a:1 HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"Content-Length: 5\r\n",
        b"content-length: 18446744073709551615\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Upgrade: x\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"5\r\n",
        b"FFFFFFFFFFFFFFFF\r\n",
        b"0\r\n",
        b"hello",
    ];

    /// Streams made of framing-significant pieces and arbitrary bytes.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            select(PIECES).prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Client bytes can never make the watch panic (a panic would stop
        /// the process: release builds abort), and how the bytes are split
        /// across reads never changes what it finds.
        #[test]
        fn any_stream_is_followed_the_same_whatever_the_reads(
            bytes in stream(),
            size in 1usize..64,
        ) {
            let whole = scan_in_pieces(&bytes, bytes.len().max(1));
            prop_assert_eq!(scan_in_pieces(&bytes, size), whole);
        }
    }
}

#[test]
fn a_close_lingers_only_in_the_middle_of_a_body() {
    let mut scanner = Scanner::new(1024);
    scanner.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!scanner.mid_body(), "between requests");
    scanner.scan(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    assert!(scanner.mid_body(), "7 bytes still to come");
    scanner.scan(b"defghij");
    assert!(!scanner.mid_body());
    scanner.scan(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    assert!(scanner.mid_body(), "no last chunk yet");
    scanner.scan(b"0\r\n\r\n");
    assert!(!scanner.mid_body());
    scanner.scan(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(scanner.mid_body(), "refused with its body unread");
}
