//! A bare HTTP/1.1 load driver for the baselines: requests written as bytes on kept-alive
//! TCP connections, answers read up to their `Content-Length`, nothing parsed beyond the
//! status and the framing. It is to HTTP what `redis-benchmark` is to Redis: the cheapest
//! client that still speaks the protocol, so that on a machine the driver shares with the
//! server, the driver's own CPU takes as little as it can from what is measured.
//!
//! Plain `http://` only (the server behind TLS is measured with a general client), one
//! request at a time per connection (no pipelining), and answers must carry a
//! `Content-Length` (axum's do); anything else is an error of the request, never a
//! guess. A connection whose answer said `connection: close`, or that failed, is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line and header block read before the answer is refused.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest body read before the answer is refused.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4 * 1024;

/// Kept-alive connections to one `http://host:port`.
#[derive(Debug)]
pub struct WireClient {
    address: SocketAddr,
    /// `host[:port]` as the `Host` header says it.
    host: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl WireClient {
    /// A client of the server at `base_url` (`http://host:port`, any path ignored).
    pub async fn new(base_url: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base_url).with_context(|| format!("parsing {base_url}"))?;
        anyhow::ensure!(url.scheme() == "http", "the bare driver speaks plain http://, not {}", url.scheme());
        let host = url.host_str().context("the URL names no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let address = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self { address, host, idle: Mutex::new(Vec::new()) })
    }

    /// The `Host` header value.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one whole request (head and body, as bytes) and reads its answer: the status.
    pub async fn send(&self, request: &[u8]) -> io::Result<u16> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut stream = match pooled {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.address).await?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        stream.write_all(request).await?;
        let answer = read_answer(&mut stream).await?;
        if answer.keep_alive {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(stream);
        }
        Ok(answer.status)
    }
}

/// A request without a body, ready to send.
pub fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push_str("\r\n");
    }
    if method != "GET" {
        text.push_str("content-length: 0\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// What the driver keeps of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub keep_alive: bool,
}

async fn read_answer(stream: &mut TcpStream) -> io::Result<Answer> {
    let mut buffer = Vec::with_capacity(READ_CHUNK);
    loop {
        if let Some(head) = parse_head(&buffer)? {
            let total = head.length + head.body_length;
            while buffer.len() < total {
                read_some(stream, &mut buffer).await?;
            }
            if buffer.len() > total {
                return Err(invalid("bytes after the answer (the driver never pipelines)"));
            }
            return Ok(head.answer);
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(invalid("the answer's head is too long"));
        }
        read_some(stream, &mut buffer).await?;
    }
}

async fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<()> {
    let start = buffer.len();
    buffer.resize(start + READ_CHUNK, 0);
    let read = stream.read(&mut buffer[start..]).await;
    let read = match read {
        Ok(read) => read,
        Err(err) => {
            buffer.truncate(start);
            return Err(err);
        }
    };
    buffer.truncate(start + read);
    if read == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(())
}

/// A parsed head: the answer, the head's length and the body's.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    answer: Answer,
    length: usize,
    body_length: usize,
}

/// The head of an answer, once `bytes` holds all of it.
fn parse_head(bytes: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| invalid("the answer's head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(invalid("not an HTTP/1.x answer"));
    }
    let status = parts.next().and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| invalid("no status code"))?;
    let mut body_length = None;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Err(invalid("a header line without ':'")) };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value.parse::<usize>().map_err(|_| invalid("a Content-Length that is not a number"))?;
            if length > MAX_BODY_BYTES {
                return Err(invalid("the answer's body is too long"));
            }
            body_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("a chunked answer (the driver reads Content-Length framing only)"));
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    // 1xx, 204 and 304 answers have no body.
    let bodiless = status < 200 || status == 204 || status == 304;
    let body_length = match body_length {
        Some(length) => length,
        None if bodiless => 0,
        None => return Err(invalid("an answer without Content-Length")),
    };
    Ok(Some(Head { answer: Answer { status, keep_alive }, length: end + 4, body_length }))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete() {
        let answer = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\nContent-Length: 12\r\n\r\n{\"a\":1234567}";
        assert_eq!(parse_head(&answer[..20]).expect("partial"), None);
        let head = parse_head(answer).expect("parsed").expect("complete");
        assert_eq!(head.answer, Answer { status: 409, keep_alive: true });
        assert_eq!(head.length, answer.len() - 13);
        assert_eq!(head.body_length, 12);
    }

    #[test]
    fn framing_the_driver_cannot_follow_is_an_error() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n").is_err(), "no Content-Length");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n").is_err(), "over the bound");
        assert!(parse_head(b"SPDY/3 200 OK\r\n\r\n").is_err());
        let closing = parse_head(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").expect("ok").expect("head");
        assert_eq!((closing.answer.keep_alive, closing.body_length), (false, 0));
    }

    #[test]
    fn requests_carry_host_headers_and_an_empty_body() {
        let bytes = request("POST", "/api/v1/user/buy/x", "127.0.0.1:8080", &[("idempotency-key", "k1")]);
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            text,
            "POST /api/v1/user/buy/x HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nidempotency-key: k1\r\ncontent-length: 0\r\n\r\n"
        );
        let get = String::from_utf8(request("GET", "/healthz", "h", &[])).expect("ascii");
        assert_eq!(get, "GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n");
    }
}
