//! One request and its response head over an upstream connection.

use std::io;

use bytes::Buf;
use http::{header, Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::codec::{self, HeadError, RequestFraming, ResponseFraming, ResponseHead};
use super::{Connection, RequestBody, RequestBodyError, READ_CHUNK};
use crate::proxy::headers::Forwarded;
use crate::proxy::inbound::{ClientBody, ClientBodyError};
use crate::wire::chunked;

/// How the response body that follows a head is delimited, and whether the
/// connection can be pooled once it has been read.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    pub(super) framing: ResponseFraming,
    pub(super) keep_alive: bool,
}

/// Why an exchange ended without a response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before a complete response head")]
    Closed,
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("reading the client's body: {0}")]
    ClientBody(#[source] ClientBodyError),
    #[error("the client went away while waiting for the response")]
    ClientGone,
    #[error("no response head by the route's deadline")]
    Timeout,
    #[error("the client's body is over the route's max_body")]
    TooLarge,
}

/// A failed exchange, with the request when not a byte of it was sent.
#[derive(Debug)]
pub struct Failed<'a> {
    pub error: SendError,
    pub unsent: Option<RequestBody<'a>>,
}

impl From<SendError> for Failed<'_> {
    fn from(error: SendError) -> Self {
        Failed {
            error,
            unsent: None,
        }
    }
}

impl Connection {
    /// Sends a request and reads the response head. The head is borrowed,
    /// so a retry can send it again. The body is streamed as it arrives,
    /// while watching for the upstream to answer early (it may refuse a body
    /// without reading it); an early answer stops the upload, and the
    /// connection is then not reused.
    ///
    /// The exchange must have its response head by `deadline`. The
    /// connection's one timer bounds it: arming a timer per request would
    /// cost a timer-wheel insert and removal each time, so a timer that fires
    /// early (armed for an earlier request) is re-armed instead, and with
    /// steady route timeouts that happens about once per timeout period.
    pub(crate) async fn send<'a>(
        &mut self,
        head: &http::request::Parts,
        forwarded: &Forwarded<'_>,
        body: RequestBody<'a>,
        deadline: Instant,
    ) -> Result<Response<Framing>, Failed<'a>> {
        let mut timer = match self.timer.take() {
            Some(timer) => timer,
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let expired = async {
            loop {
                timer.as_mut().await;
                if Instant::now() >= deadline {
                    break;
                }
                timer.as_mut().reset(deadline);
            }
        };
        let result = tokio::select! {
            biased;
            result = self.exchange(head, forwarded, body) => result,
            () = expired => Err(SendError::Timeout.into()),
        };
        self.timer = Some(timer);
        result
    }

    async fn exchange<'a>(
        &mut self,
        head: &http::request::Parts,
        forwarded: &Forwarded<'_>,
        mut body: RequestBody<'a>,
    ) -> Result<Response<Framing>, Failed<'a>> {
        let framing = request_framing(head, &body);
        self.write_buf.clear();
        codec::encode_request_head(head, forwarded, framing, &mut self.write_buf);
        if let RequestBody::Full(Some(bytes)) = &body {
            self.write_buf.extend_from_slice(bytes);
        }
        if let Err((error, sent)) = write_fresh(&mut self.stream, &self.write_buf).await {
            return Err(Failed {
                error: SendError::Write(error),
                unsent: (sent == 0).then_some(body),
            });
        }
        let mut early = None;
        let mut upload_error = None;
        if matches!(body, RequestBody::Incoming(..)) && !body.is_end_stream() {
            // Boxed, like connecting: most requests have no body to stream.
            match Box::pin(self.upload(&mut body, framing, &head.method)).await {
                Ok(Upload::Complete) => {}
                Ok(Upload::Answered(head)) => early = Some(head),
                Err(UploadError::Write(error)) => upload_error = Some(error),
                Err(UploadError::Failed(error)) => return Err(error.into()),
            }
        }
        let complete = early.is_none() && upload_error.is_none();
        let response = match early {
            Some(head) => head,
            None => match self.read_head_unless_gone(&head.method, &mut body).await {
                Ok(head) => head,
                // The upstream may have answered and closed while the body was
                // going out: its answer wins, else the write error tells why.
                Err(error) => return Err(upload_error.map_or(error, SendError::Write).into()),
            },
        };
        let mut answer = Response::new(Framing {
            framing: response.framing,
            keep_alive: response.keep_alive && complete,
        });
        *answer.status_mut() = response.status;
        *answer.version_mut() = response.version;
        *answer.headers_mut() = response.headers;
        Ok(answer)
    }

    /// Streams the client's body upstream until it ends or the upstream answers.
    async fn upload(
        &mut self,
        body: &mut RequestBody<'_>,
        framing: RequestFraming,
        method: &Method,
    ) -> Result<Upload, UploadError> {
        let chunked = framing == RequestFraming::Chunked;
        loop {
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    ready.map_err(|error| UploadError::Failed(SendError::Read(error)))?;
                    match self.stream.try_read_buf(&mut self.read_buf) {
                        Ok(0) => return Err(UploadError::Failed(SendError::Closed)),
                        Ok(_) => {
                            if let Some(head) = self.final_head(method).map_err(UploadError::Failed)? {
                                return Ok(Upload::Answered(head));
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Err(UploadError::Failed(SendError::Read(error))),
                    }
                }
                frame = body.frame() => {
                    let data = match frame {
                        None => None,
                        Some(Err(RequestBodyError::Client(error))) => {
                            return Err(UploadError::Failed(SendError::ClientBody(error)))
                        }
                        Some(Err(RequestBodyError::TooLarge)) => {
                            return Err(UploadError::Failed(SendError::TooLarge))
                        }
                        // Trailer fields are not passed on.
                        Some(Ok(frame)) => frame.into_data().ok(),
                    };
                    let end = data.is_none() || body.is_end_stream();
                    match data {
                        Some(data) if !data.is_empty() && chunked => {
                            self.write_buf.clear();
                            chunked::encode_chunk_size(data.len(), &mut self.write_buf);
                            let mut chunk = Buf::chain(Buf::chain(&self.write_buf[..], data), &b"\r\n"[..]);
                            self.stream.write_all_buf(&mut chunk).await
                        }
                        Some(mut data) => self.stream.write_all_buf(&mut data).await,
                        None => Ok(()),
                    }
                    .map_err(UploadError::Write)?;
                    if end {
                        if chunked {
                            self.stream.write_all(chunked::LAST_CHUNK).await.map_err(UploadError::Write)?;
                        }
                        return Ok(Upload::Complete);
                    }
                }
            }
        }
    }

    /// Reads the response head; for a client body streamed from an HTTP/1
    /// connection, gives up if the client goes away meanwhile.
    async fn read_head_unless_gone(
        &mut self,
        method: &Method,
        body: &mut RequestBody<'_>,
    ) -> Result<ResponseHead, SendError> {
        match body {
            RequestBody::Incoming(client @ ClientBody::Http1(_), _) => tokio::select! {
                biased;
                head = self.read_head(method) => head,
                () = client.gone() => Err(SendError::ClientGone),
            },
            _ => self.read_head(method).await,
        }
    }

    /// Reads until a final response head (interim 1xx answers other than 101
    /// are skipped).
    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, SendError> {
        loop {
            if let Some(head) = self.final_head(method)? {
                return Ok(head);
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => return Err(SendError::Closed),
                Ok(_) => {}
                Err(error) => return Err(SendError::Read(error)),
            }
        }
    }

    /// The first final response head in the read buffer, if one is complete.
    fn final_head(&mut self, method: &Method) -> Result<Option<ResponseHead>, SendError> {
        while !self.read_buf.is_empty() {
            match codec::parse_response_head(&mut self.read_buf, method, &mut self.spans)? {
                Some(head)
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS => {}
                Some(head) => return Ok(Some(head)),
                None => break,
            }
        }
        Ok(None)
    }
}

/// How an upload ended: complete, or cut short by the upstream's answer.
enum Upload {
    Complete,
    Answered(ResponseHead),
}

enum UploadError {
    /// The upstream stopped taking the body; it may still have answered.
    Write(io::Error),
    Failed(SendError),
}

/// How the body goes on the wire. A length the client declared is kept; a
/// body of unknown length is chunked (RFC 9112 §6.1).
fn request_framing(head: &http::request::Parts, body: &RequestBody<'_>) -> RequestFraming {
    match body {
        RequestBody::Full(Some(bytes)) => RequestFraming::Length(bytes.len() as u64),
        _ if body.is_end_stream() => {
            if head.headers.contains_key(header::CONTENT_LENGTH) {
                RequestFraming::Length(0)
            } else {
                RequestFraming::Empty
            }
        }
        _ => match body.size_hint().exact() {
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        },
    }
}

/// Writes all of `bytes`; on failure, also says how many were sent.
async fn write_fresh(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
) -> Result<(), (io::Error, usize)> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), sent)),
            Ok(n) => sent += n,
            Err(error) => return Err((error, sent)),
        }
    }
    Ok(())
}
