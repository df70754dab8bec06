use super::*;
use crate::proxy::headers::{ClientAddr, Scheme};
use http::HeaderValue;

fn head(raw: &str, method: &Method) -> Result<Option<ResponseHead>, HeadError> {
    let mut buf = BytesMut::from(raw);
    parse_response_head(&mut buf, method, &mut Vec::new())
}

fn framing(raw: &str) -> (ResponseFraming, bool) {
    let head = head(raw, &Method::GET).unwrap().unwrap();
    (head.framing, head.keep_alive)
}

#[test]
fn request_head_has_rgates_forwarding_and_framing_fields_only() {
    let mut request = http::Request::post("/a/b?q=1")
        .header("host", "x")
        .header("content-length", "99")
        .header("transfer-encoding", "chunked")
        .header("expect", "100-continue")
        .header("x-request-id", "client-claim")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "192.0.2.1")
        .header("accept", "*/*")
        .body(())
        .unwrap();
    *request.uri_mut() = "/a/b?q=1".parse().unwrap();
    let (parts, ()) = request.into_parts();
    let client = ClientAddr::new("127.0.0.2:1000".parse().unwrap(), Scheme::Http);
    let id = HeaderValue::from_static("id-9");
    let forwarded = Forwarded {
        client: &client,
        trusted: true,
        host: None,
        prefix: None,
        request_id: &id,
        trace: &crate::proxy::trace::TEST_TRACE,
    };
    let mut out = Vec::new();
    encode_request_head(&parts, &forwarded, RequestFraming::Length(12), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /a/b?q=1 HTTP/1.1\r\nhost: x\r\naccept: */*\r\n\
         x-forwarded-for: 192.0.2.1, 127.0.0.2\r\nx-forwarded-proto: http\r\n\
         x-request-id: id-9\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ncontent-length: 12\r\n\r\n"
    );
    let mut out = Vec::new();
    encode_request_head(&parts, &forwarded, RequestFraming::Chunked, &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntransfer-encoding: chunked\r\n\r\n"));
    let mut out = Vec::new();
    encode_request_head(&parts, &forwarded, RequestFraming::Empty, &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("x-request-id: id-9\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"));
    let mut out = Vec::new();
    crate::wire::chunked::encode_chunk_size(300, &mut out);
    assert_eq!(out, b"12C\r\n");
}

#[test]
fn response_head_is_parsed_and_removed_from_the_buffer() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhelloNEXT",
    );
    let head = parse_response_head(&mut buf, &Method::GET, &mut Vec::new())
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.version, Version::HTTP_11);
    let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(head.framing, ResponseFraming::Length(5));
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"helloNEXT");
}

#[test]
fn partial_heads_wait_for_more_and_oversized_ones_fail() {
    assert!(head("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
        .unwrap()
        .is_none());
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_SIZE));
    assert!(matches!(
        head(&huge, &Method::GET),
        Err(HeadError::TooLarge)
    ));
    assert!(matches!(
        head("HTTP/1.1 2x0 OK\r\n\r\n", &Method::GET),
        Err(HeadError::Syntax(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 099 OK\r\n\r\n", &Method::GET),
        Err(HeadError::Status)
    ));
    assert!(matches!(
        head("NOTHTTP\r\n\r\n", &Method::GET),
        Err(HeadError::Syntax(_))
    ));
}

#[test]
fn body_framing_follows_rfc_9112() {
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        (ResponseFraming::Empty, true)
    );
    assert_eq!(
        framing("HTTP/1.1 204 No Content\r\n\r\n"),
        (ResponseFraming::Empty, true)
    );
    assert_eq!(
        framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        (ResponseFraming::Empty, true)
    );
    let head_request = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head_request.framing, ResponseFraming::Empty);
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        (ResponseFraming::Chunked, true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        (ResponseFraming::UntilClose, false)
    );
    // A length beside a coding: the coding wins, and the connection is not reused.
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (ResponseFraming::Chunked, false)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\n\r\n"),
        (ResponseFraming::UntilClose, false)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"),
        (ResponseFraming::Length(2), false)
    );
    assert_eq!(
        framing("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"),
        (ResponseFraming::Length(2), false)
    );
    assert_eq!(
        framing("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n"),
        (ResponseFraming::Length(2), true)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n"),
        (ResponseFraming::Length(7), true)
    );
}

#[test]
fn conflicting_or_malformed_lengths_are_refused() {
    for bad in [
        "5, 6",
        "-1",
        "+5",
        "",
        "0x10",
        "99999999999999999999",
        "5 5",
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert!(
            matches!(head(&raw, &Method::GET), Err(HeadError::ContentLength)),
            "{bad:?}"
        );
    }
    let twice = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert!(matches!(
        head(twice, &Method::GET),
        Err(HeadError::ContentLength)
    ));
}

mod fuzz {
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::wire::chunked::tests::decode_all;

    const PIECES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 101 S\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"\n",
        b"5;x\r\n",
        b"FFFFFFFFFFFFFFFF\r\n",
        b"0\r\n",
        b"hello",
    ];

    fn wire() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            select(PIECES).prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Upstream bytes can never make rgate panic, whatever their framing.
        #[test]
        fn any_upstream_bytes_are_parsed_or_refused(bytes in wire(), size in 1usize..64) {
            for method in [Method::GET, Method::HEAD] {
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(_)) = parse_response_head(&mut buf, &method, &mut Vec::new()) {
                    prop_assert!(buf.len() < bytes.len());
                }
            }
            let whole = decode_all(&bytes, bytes.len().max(1)).map(|(body, _)| body).ok();
            let split = decode_all(&bytes, size).map(|(body, _)| body).ok();
            if let (Some(whole), Some(split)) = (whole, split) {
                prop_assert!(whole.starts_with(&split) || split.starts_with(&whole));
            }
        }
    }
}
