//! The health check probe of `flashsale healthcheck`: one HTTP/1.1 GET with a bounded
//! time, healthy on a 2xx answer. Container images of the server hold no curl, so their
//! health check runs the server binary itself against its own `/readyz`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on the whole probe (connecting, sending, reading the status line) unless told.
/// Shorter than the few seconds container engines give a health check command.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Most bytes of the answer read while looking for the end of its status line.
const MAX_STATUS_LINE_BYTES: usize = 1_024;
/// The path probed when no `--url` is given.
const READINESS_PATH: &str = "/readyz";

/// Options of `flashsale healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// URL to GET (plain http). Default: `/readyz` on this instance's `--listen-addr`,
    /// with an unspecified address (`0.0.0.0`, `::`) probed on the loopback.
    #[arg(long, env = "FLASHSALE_HEALTHCHECK_URL")]
    pub url: Option<String>,

    /// The address the server listens on, to probe when no `--url` is given.
    #[arg(long, env = "FLASHSALE_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Bound on the whole probe: connecting, sending the request, reading the status line.
    #[arg(long, env = "FLASHSALE_HEALTHCHECK_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
}

impl HealthcheckArgs {
    /// The URL to probe: `--url`, or `/readyz` on the listen address.
    pub fn target_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => readiness_url(self.listen_addr),
        }
    }
}

/// Why a probe did not find the target healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url}: only plain http://host[:port]/path URLs can be probed")]
    InvalidUrl { url: String },
    #[error("{url}: no status line within {timeout_ms} ms")]
    TimedOut { url: String, timeout_ms: u64 },
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url}: the answer does not start with an HTTP status line: {line:?}")]
    NotHttp { url: String, line: String },
    #[error("{url}: answered {status}")]
    Unhealthy { url: String, status: u16 },
}

/// `/readyz` on `listen_addr`; an unspecified address is reached on the loopback.
pub fn readiness_url(listen_addr: SocketAddr) -> String {
    let ip = match listen_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}{READINESS_PATH}", SocketAddr::new(ip, listen_addr.port()))
}

/// GETs `url` and succeeds with the status code when it is 2xx.
pub async fn check(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let status = probe(url, timeout).await?;
    match (200..300).contains(&status) {
        true => Ok(status),
        false => Err(ProbeError::Unhealthy { url: url.to_owned(), status }),
    }
}

/// The status code of one GET of `url`, read within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let (authority, path) = split_http_url(url).ok_or_else(|| ProbeError::InvalidUrl { url: url.to_owned() })?;
    let exchange = async {
        let address = match authority.contains(':') && !authority.ends_with(']') {
            true => authority.to_owned(),
            false => format!("{authority}:80"),
        };
        let mut stream = TcpStream::connect(address).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: flashsale-healthcheck\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        read_status_line(&mut stream).await
    };
    let line = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(line)) => line,
        Ok(Err(source)) => return Err(ProbeError::Io { url: url.to_owned(), source }),
        Err(_elapsed) => {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            return Err(ProbeError::TimedOut { url: url.to_owned(), timeout_ms });
        }
    };
    parse_status_line(&line).ok_or_else(|| ProbeError::NotHttp { url: url.to_owned(), line })
}

/// `("host:port", "/path?query")` of an `http://` URL; the path defaults to `/`.
fn split_http_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    // No user info, no fragment, no whitespace that would break the request line.
    let valid = !authority.is_empty()
        && !authority.contains('@')
        && !path.contains('#')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some((authority, path))
}

/// Bytes up to the first CRLF (or the end of the answer), at most [`MAX_STATUS_LINE_BYTES`].
async fn read_status_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(128);
    let mut buffer = [0_u8; 256];
    while head.len() < MAX_STATUS_LINE_BYTES {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.windows(2).any(|pair| pair == b"\r\n") {
            break;
        }
    }
    let line = head.split(|&byte| byte == b'\r' || byte == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).into_owned())
}

/// The code of a status line such as `HTTP/1.1 503 Service Unavailable`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    let code = parts.next()?;
    let valid = version.starts_with("HTTP/1.") && code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    const SHORT: Duration = Duration::from_secs(5);

    /// A std listener on a free port that answers one connection with `answer` once it
    /// has read the request head, and gives back that request.
    fn answer_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/readyz", listener.local_addr().expect("addr"));
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buffer = [0_u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut buffer).expect("read");
                assert!(read > 0, "the probe closed before its request head ended");
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(answer.as_bytes()).expect("write");
            String::from_utf8(request).expect("utf-8 request")
        });
        (url, thread)
    }

    #[tokio::test]
    async fn a_200_answer_is_healthy_and_the_request_is_a_plain_get_of_the_path() {
        let (url, server) = answer_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(check(&url, SHORT).await.expect("healthy"), 200);
        let request = server.join().expect("server thread");
        assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_503_answer_is_unhealthy_with_its_status() {
        let (url, server) = answer_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let error = check(&url, SHORT).await.expect_err("unhealthy");
        assert!(matches!(error, ProbeError::Unhealthy { status: 503, .. }), "{error}");
        server.join().expect("server thread");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_is_unhealthy() {
        let (url, server) = answer_once("-ERR wrong protocol\r\n");
        let error = check(&url, SHORT).await.expect_err("not http");
        assert!(matches!(error, ProbeError::NotHttp { .. }), "{error}");
        server.join().expect("server thread");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_probe_at_its_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/readyz", listener.local_addr().expect("addr"));
        // The kernel completes the connection in the backlog; nothing ever reads it.
        let error = check(&url, Duration::from_millis(100)).await.expect_err("timed out");
        assert!(matches!(error, ProbeError::TimedOut { timeout_ms: 100, .. }), "{error}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/readyz", listener.local_addr().expect("addr"));
        drop(listener);
        let error = check(&url, SHORT).await.expect_err("refused");
        assert!(matches!(error, ProbeError::Io { .. }), "{error}");
    }

    #[tokio::test]
    async fn only_plain_http_urls_are_probed() {
        for url in ["https://127.0.0.1/readyz", "127.0.0.1:8080", "http:///readyz", "http://a@b/", "http://h/a b"] {
            let error = check(url, SHORT).await.expect_err(url);
            assert!(matches!(error, ProbeError::InvalidUrl { .. }), "{url}: {error}");
        }
    }

    #[test]
    fn the_default_url_is_readyz_on_the_listen_address_with_an_unspecified_ip_on_the_loopback() {
        let url = |addr: &str| readiness_url(addr.parse().expect("socket address"));
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(url("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80/readyz");
    }

    #[test]
    fn status_lines_parse_to_their_code_and_anything_else_does_not() {
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status_line("HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status_line("HTTP/2 200"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
