//! The chunked transfer coding (RFC 9112 §7.1), both ways.

use bytes::{Bytes, BytesMut};

use super::MAX_HEAD_SIZE;

/// Appends a chunk-size line for `length` bytes of data.
pub(crate) fn encode_chunk_size(length: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{length:X}\r\n");
}

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A body the upstream framed wrongly.
#[derive(Debug, thiserror::Error)]
pub enum BodyFramingError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("missing CRLF after chunk data")]
    ChunkEnd,
    #[error("trailer section over {MAX_HEAD_SIZE} bytes")]
    Trailers,
}

/// What the chunked decoder found in the buffer.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section were read: the body is complete.
    End,
    /// More bytes are needed.
    Incomplete,
}

/// Decodes the chunked coding incrementally, taking what it consumes out of
/// the connection's read buffer. Trailer fields are read and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkedDecoder {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyFramingError> {
        loop {
            match *self {
                ChunkedDecoder::Size => {
                    let Some(line) = take_line(buf, BodyFramingError::ChunkSize)? else {
                        return Ok(Decoded::Incomplete);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        ChunkedDecoder::Trailers
                    } else {
                        ChunkedDecoder::Data(size)
                    };
                }
                ChunkedDecoder::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::Incomplete);
                    }
                    let take = remaining.min(buf.len() as u64);
                    // `take` fits in usize: it is at most buf.len().
                    let data = buf.split_to(take as usize).freeze();
                    *self = match remaining - take {
                        0 => ChunkedDecoder::DataEnd,
                        left => ChunkedDecoder::Data(left),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkedDecoder::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::Incomplete);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyFramingError::ChunkEnd);
                    }
                    let _ = buf.split_to(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers => {
                    let Some(line) = take_line(buf, BodyFramingError::Trailers)? else {
                        return Ok(Decoded::Incomplete);
                    };
                    if line.is_empty() {
                        *self = ChunkedDecoder::Done;
                    }
                }
                ChunkedDecoder::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`.
fn take_line(
    buf: &mut BytesMut,
    too_long: BodyFramingError,
) -> Result<Option<Bytes>, BodyFramingError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = buf.split_to(end + 1).freeze();
            match line.strip_suffix(b"\r\n") {
                Some(content) => Ok(Some(line.slice(..content.len()))),
                None => Err(too_long),
            }
        }
        None if buf.len() >= MAX_HEAD_SIZE => Err(too_long),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, BodyFramingError> {
    let digits = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    // 16 hex digits fill a u64; more would overflow.
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
        return Err(BodyFramingError::ChunkSize);
    }
    Ok(line[..digits].iter().fold(0u64, |n, &digit| {
        n << 4 | u64::from((digit as char).to_digit(16).unwrap_or_default())
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn decode_all(
        wire: &[u8],
        split: usize,
    ) -> Result<(Vec<u8>, BytesMut), BodyFramingError> {
        let mut decoder = ChunkedDecoder::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::End => return Ok((body, buf)),
                    Decoded::Incomplete => break,
                }
            }
        }
        Ok((body, buf))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let (body, rest) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "split {split}");
            // What follows the body stays for the next response.
            assert!(b"NEXT".starts_with(&rest), "split {split}");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        assert!(matches!(
            decode_all(b"zz\r\n", 64),
            Err(BodyFramingError::ChunkSize)
        ));
        assert!(matches!(
            decode_all(b"\r\n", 64),
            Err(BodyFramingError::ChunkSize)
        ));
        assert!(matches!(
            decode_all(b"11111111111111111\r\n", 64),
            Err(BodyFramingError::ChunkSize)
        ));
        assert!(matches!(
            decode_all(b"5 x\r\nhello\r\n", 64),
            Err(BodyFramingError::ChunkSize)
        ));
        assert!(matches!(
            decode_all(b"5\nhello\r\n", 64),
            Err(BodyFramingError::ChunkSize)
        ));
        assert!(matches!(
            decode_all(b"2\r\nhello\r\n", 64),
            Err(BodyFramingError::ChunkEnd)
        ));
        let endless = vec![b'a'; MAX_HEAD_SIZE + 1];
        assert!(matches!(
            decode_all(&endless, 4096),
            Err(BodyFramingError::ChunkSize)
        ));
    }
}
