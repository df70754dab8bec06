use super::*;

const MAX: usize = 64 * 1024;

fn parse(raw: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(raw);
    parse_request_head(&mut buf, MAX, &mut Vec::new())
}

fn framing(fields: &str) -> Result<BodyFraming, HeadError> {
    let raw = format!("POST /a HTTP/1.1\r\nhost: a\r\n{fields}\r\n");
    parse(raw.as_bytes()).map(|head| head.unwrap().framing)
}

#[test]
fn a_head_is_parsed_and_taken_off_the_buffer() {
    let mut buf = BytesMut::from(&b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 2\r\n\r\nNEXT"[..]);
    let head = parse_request_head(&mut buf, MAX, &mut Vec::new())
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.method, Method::GET);
    assert_eq!(head.parts.uri, "/a?b=1");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "x");
    assert_eq!(head.parts.headers["x-two"], "2");
    assert_eq!(head.framing, BodyFraming::Empty);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    assert_eq!(&buf[..], b"NEXT");
}

#[test]
fn an_incomplete_head_waits_for_more_and_an_oversized_one_is_refused() {
    assert!(parse(b"GET /a HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nX-Big: "[..]);
    buf.extend_from_slice(&[b'a'; 100]);
    assert_eq!(
        parse_request_head(&mut buf, 64, &mut Vec::new()).unwrap_err(),
        HeadError::TooLarge
    );
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse(raw.as_bytes()).unwrap_err(), HeadError::TooLarge);
}

#[test]
fn bodies_are_framed_by_one_length_or_a_single_chunked_coding() {
    assert_eq!(framing(""), Ok(BodyFraming::Empty));
    assert_eq!(framing("content-length: 0\r\n"), Ok(BodyFraming::Empty));
    assert_eq!(
        framing("content-length: 12\r\n"),
        Ok(BodyFraming::Length(12))
    );
    assert_eq!(
        framing("content-length: 12\r\ncontent-length: 12\r\n"),
        Ok(BodyFraming::Length(12))
    );
    assert_eq!(
        framing("transfer-encoding: Chunked\r\n"),
        Ok(BodyFraming::Chunked)
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    let bad = |fields: &str, why: BadRequest| {
        assert_eq!(framing(fields), Err(HeadError::Bad(why)), "{fields:?}");
    };
    bad(
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        BadRequest::TransferEncoding,
    );
    bad(
        "transfer-encoding: gzip, chunked\r\n",
        BadRequest::TransferEncoding,
    );
    bad(
        "transfer-encoding: identity\r\n",
        BadRequest::TransferEncoding,
    );
    bad(
        "content-length: 3\r\ntransfer-encoding: chunked\r\n",
        BadRequest::ConflictingLengths,
    );
    bad(
        "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
        BadRequest::ConflictingLengths,
    );
    bad(
        "content-length: 3\r\ncontent-length: 4\r\n",
        BadRequest::ContentLength,
    );
    bad("content-length: +3\r\n", BadRequest::ContentLength);
    let http_1_0 = parse(b"POST /a HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!(
        http_1_0.unwrap_err(),
        HeadError::Bad(BadRequest::TransferEncoding)
    );
}

#[test]
fn malformed_heads_are_bad_requests() {
    for raw in [
        &b"GET /x HTTP/1.1 extra\r\n\r\n"[..],
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX Bad: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Fold: a\r\n  b\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
    ] {
        assert!(
            matches!(parse(raw), Err(HeadError::Bad(_))),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn keep_alive_and_expect_continue_follow_version_and_fields() {
    let head = |raw: &str| parse(raw.as_bytes()).unwrap().unwrap();
    assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    let expecting =
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    assert!(head(expecting).expect_continue);
    let bodiless = "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
    assert!(!head(bodiless).expect_continue);
}

fn encoded(plan: ResponsePlan, headers: &[(&str, &str)], version: Version) -> String {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let mut out = Vec::new();
    encode_response_head(StatusCode::OK, &map, plan, version, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_response_head_carries_rgates_framing_and_connection_fields_only() {
    let plan = ResponsePlan::new(
        StatusCode::OK,
        &HeaderMap::new(),
        Some(5),
        &Method::GET,
        Version::HTTP_11,
        true,
    );
    let fields = [
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("content-length", "99"),
        ("connection", "keep-alive"),
        ("x-a", "1"),
    ];
    assert_eq!(
        encoded(plan, &fields, Version::HTTP_11),
        "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
    );
    let closing = ResponsePlan {
        keep_alive: false,
        ..plan
    };
    assert!(encoded(closing, &fields, Version::HTTP_11).ends_with("connection: close\r\n\r\n"));
    assert!(encoded(plan, &fields, Version::HTTP_10).ends_with("connection: keep-alive\r\n\r\n"));
    let undated = encoded(plan, &[], Version::HTTP_11);
    assert!(
        undated.contains("\r\ndate: ") && undated.contains(" GMT\r\n"),
        "{undated}"
    );
}

#[test]
fn the_plan_follows_method_status_length_and_version() {
    let plan = |status: u16, fields: &[(&str, &str)], length, method: Method, version| {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let status = StatusCode::from_u16(status).unwrap();
        let plan = ResponsePlan::new(status, &map, length, &method, version, true);
        (plan.framing, plan.send_body, plan.keep_alive)
    };
    use ResponseFraming as F;
    let v11 = Version::HTTP_11;
    assert_eq!(
        plan(200, &[], Some(3), Method::GET, v11),
        (F::Length(3), true, true)
    );
    assert_eq!(
        plan(200, &[], None, Method::GET, v11),
        (F::Chunked, true, true)
    );
    assert_eq!(
        plan(200, &[], None, Method::GET, Version::HTTP_10),
        (F::UntilClose, true, false)
    );
    let declared = [("content-length", "40")];
    assert_eq!(
        plan(200, &declared, Some(0), Method::HEAD, v11),
        (F::AsIs, false, true)
    );
    assert_eq!(
        plan(200, &[], Some(7), Method::HEAD, v11),
        (F::Length(7), false, true)
    );
    assert_eq!(
        plan(304, &declared, Some(0), Method::GET, v11),
        (F::AsIs, false, true)
    );
    assert_eq!(
        plan(204, &[], Some(0), Method::GET, v11),
        (F::None, false, true)
    );
    assert_eq!(
        plan(101, &[], Some(0), Method::GET, v11),
        (F::None, false, false)
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Hostile bytes never panic the parser, and a head is found the same
        /// whether it arrives whole or cut anywhere.
        #[test]
        fn parsing_is_total_and_split_invariant(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..300,
        ) {
            let whole = parse(&bytes).map(|head| head.map(|head| head.parts.uri));
            let cut = cut.min(bytes.len());
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut found = parse_request_head(&mut buf, MAX, &mut Vec::new()).map(|head| head.map(|head| head.parts.uri));
            if matches!(found, Ok(None)) {
                buf.extend_from_slice(&bytes[cut..]);
                found = parse_request_head(&mut buf, MAX, &mut Vec::new()).map(|head| head.map(|head| head.parts.uri));
            }
            prop_assert_eq!(found, whole);
        }
    }
}
