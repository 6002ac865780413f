//! Slow, idle and greedy clients against the connection bounds (`Config::http`), and
//! bodies that end early or are badly framed: each over raw TCP, because an HTTP client
//! would not misbehave this way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::TestApp;

/// Slack past a bound for the server's timer and two busy cores to act.
const MARGIN: Duration = Duration::from_millis(750);
/// How early a close may look, seen from the client: the server's timer starts a moment
/// before the client reads the last byte it sent.
const EARLY_SLACK: Duration = Duration::from_millis(25);
/// Longest wait for anything in these tests; a connection still open then was held.
const OUTER: Duration = Duration::from_secs(5);

/// An address other than the test's own, so that the connections a test holds and its
/// probes count against different per-client caps (Linux routes all of 127/8 to lo).
const OTHER_CLIENT: [u8; 4] = [127, 0, 0, 2];

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.server.addr).await.expect("connect")
}

async fn connect_from(client: [u8; 4], app: &TestApp) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((client, 0))).expect("bind the client address");
    socket.connect(app.server.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection (a reset counts as a
/// close). Fails if it is still open after [`OUTER`].
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(OUTER, async {
        let mut buf = [0_u8; 4096];
        while let Ok(read @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..read]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {OUTER:?}; received {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Reads exactly one answer with a `content-length` from a connection that stays open.
async fn read_one_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        if let Some(head_end) = find(&received, b"\r\n\r\n") {
            let response = RawResponse::parse(&received);
            let length: usize = response.header("content-length").and_then(|v| v.parse().ok()).expect("content-length");
            if received.len() >= head_end + 4 + length {
                return response;
            }
        }
        let read = tokio::time::timeout(OUTER, stream.read(&mut buf)).await.expect("an answer").expect("read");
        assert!(read > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// An HTTP/1.1 answer as received.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Self {
        let head_end = find(bytes, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..head_end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self { status, headers, body: bytes[head_end + 4..].to_vec() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer of `status` and `problem_type` with a request id, and
    /// returns its document.
    fn assert_problem(&self, status: u16, problem_type: &str) -> Value {
        let document: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert!(self.header("x-request-id").is_some_and(|id| !id.is_empty()), "no request id: {self:?}");
        assert_eq!(document["status"], status, "{document}");
        assert_eq!(document["type"], problem_type, "{document}");
        document
    }
}

/// Asserts a close after `elapsed`, between `earliest` and `latest` (plus [`MARGIN`]).
fn assert_closed_between(elapsed: Duration, earliest: Duration, latest: Duration, what: &str) {
    assert!(elapsed + EARLY_SLACK >= earliest, "{what} closed after {elapsed:?}, before {earliest:?}");
    assert!(elapsed <= latest + MARGIN, "{what} closed after {elapsed:?}, its bound is {latest:?}");
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: flashsale.test\r\n\r\n";

// --- Finding 1: slow and idle clients, connection caps ---------------------------------

#[tokio::test]
async fn a_client_sending_a_header_line_every_100_ms_is_cut_off_at_the_header_read_timeout() {
    let bound = Duration::from_millis(400);
    let app = TestApp::spawn_with(|config| {
        config.http.header_read_timeout_ms = 400;
        config.http.keep_alive_idle_timeout_ms = 400;
    })
    .await;
    let started = Instant::now();
    let (mut reader, mut writer) = connect(&app).await.into_split();
    // The slow client: a head that never ends, one line at a time, until it cannot write.
    let slow_client = tokio::spawn(async move {
        let mut line = 0;
        let mut next = "GET /healthz HTTP/1.1\r\n".to_owned();
        while writer.write_all(next.as_bytes()).await.is_ok() {
            next = format!("x-line-{line}: 1\r\n");
            line += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let received = read_until_closed(&mut reader).await;
    assert_closed_between(started.elapsed(), bound, bound, "a trickled request head");
    // hyper answers a head that did not arrive in time with nothing (README: "Answers
    // that are not problem+json").
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    slow_client.abort();
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_answered_408_at_the_body_read_timeout() {
    let bound = Duration::from_millis(300);
    let app = TestApp::spawn_with(|config| config.http.body_read_timeout_ms = 300).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: flashsale.test\r\n\
              Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let received = read_until_closed(&mut stream).await;
    assert_closed_between(started.elapsed(), bound, bound, "a request whose body stopped");
    let response = RawResponse::parse(&received);
    response.assert_problem(408, "/problems/request-timeout");
    assert_eq!(response.header("connection"), Some("close"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_and_a_silent_one_are_closed_at_the_idle_timeout() {
    let bound = Duration::from_millis(300);
    let app = TestApp::spawn_with(|config| config.http.keep_alive_idle_timeout_ms = 300).await;

    let mut kept_alive = connect(&app).await;
    kept_alive.write_all(HEALTHZ).await.expect("write");
    assert_eq!(read_one_response(&mut kept_alive).await.status, 200);
    let answered = Instant::now();
    let received = read_until_closed(&mut kept_alive).await;
    // Checked every half of the bound: closed between 1 and 1.5 times it after the last byte.
    assert_closed_between(answered.elapsed(), bound, bound + bound / 2, "an idle kept-alive connection");
    assert!(received.is_empty());

    let started = Instant::now();
    let mut silent = connect(&app).await;
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert_closed_between(started.elapsed(), bound, bound + bound / 2, "a connection that never sent a byte");
}

#[tokio::test]
async fn healthz_answers_while_one_client_holds_all_the_connections_it_may_and_its_next_one_gets_a_503_problem() {
    let app = TestApp::spawn_with(|config| {
        config.http.max_connections = 64;
        config.http.max_connections_per_client = 4;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(OTHER_CLIENT, &app).await);
    }
    // Accepted after the four held ones (the listener takes connections in order), so
    // counted after them: refused.
    let mut fifth = connect_from(OTHER_CLIENT, &app).await;
    fifth.write_all(HEALTHZ).await.expect("write");
    let refused = RawResponse::parse(&read_until_closed(&mut fifth).await);
    let problem = refused.assert_problem(503, "/problems/too-many-connections");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("client address")), "{problem}");

    // Another client is served meanwhile.
    let health = app.client().get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);

    // Once the held connections close, the client has its slots back.
    drop(held);
    assert_eventually_served_from(OTHER_CLIENT, &app).await;
}

#[tokio::test]
async fn past_the_total_connection_cap_every_new_connection_gets_a_503_problem_and_accepting_goes_on() {
    let app = TestApp::spawn_with(|config| {
        config.http.max_connections = 3;
        config.http.max_connections_per_client = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(OTHER_CLIENT, &app).await);
    }
    for _ in 0..20 {
        let mut refused = connect(&app).await;
        refused.write_all(HEALTHZ).await.expect("write");
        let response = RawResponse::parse(&read_until_closed(&mut refused).await);
        let problem = response.assert_problem(503, "/problems/too-many-connections");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("the server holds")), "{problem}");
    }
    drop(held);
    assert_eventually_served_from([127, 0, 0, 1], &app).await;
}

#[tokio::test]
async fn a_shutdown_drops_a_request_still_in_flight_once_the_drain_bound_has_passed() {
    let bound = Duration::from_millis(300);
    let app = TestApp::spawn_with(|config| config.http.shutdown_drain_timeout_ms = 300).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: flashsale.test\r\nExpect: 100-continue\r\n\
              Content-Type: application/json\r\nContent-Length: 64\r\n\r\n",
        )
        .await
        .expect("write");
    // hyper sends `100 Continue` when the handler starts reading the body: from then on
    // the request is in flight, and its body never completes.
    let mut continued = [0_u8; 25];
    tokio::time::timeout(OUTER, stream.read_exact(&mut continued)).await.expect("100 Continue").expect("read");
    assert!(continued.starts_with(b"HTTP/1.1 100 Continue"), "{:?}", String::from_utf8_lossy(&continued));
    stream.write_all(b"{").await.expect("write");

    let started = Instant::now();
    let TestApp { server, .. } = app;
    tokio::time::timeout(OUTER, server.stop()).await.expect("the shutdown ended").expect("a clean shutdown");
    assert_closed_between(started.elapsed(), bound, bound, "the shutdown with a request in flight");
    assert!(read_until_closed(&mut stream).await.is_empty(), "dropped without an answer");
}

#[tokio::test]
async fn a_client_that_reads_none_of_its_answers_loses_its_connection_at_the_write_stall_bound() {
    let stall = Duration::from_millis(600);
    let app = TestApp::spawn_with(|config| {
        config.http.keep_alive_idle_timeout_ms = 200;
        config.http.header_read_timeout_ms = 200;
        config.http.write_stall_timeout_ms = 600;
        config.http.max_connections_per_client = 1;
    })
    .await;
    // A client with a small receive buffer pipelines requests for a large answer and
    // never reads: once the answers fill both sockets' buffers the server's write waits,
    // the server stops reading requests, and so the client's writes stop completing.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    socket.bind(SocketAddr::from((OTHER_CLIENT, 0))).expect("bind the client address");
    let mut reader_of_nothing = socket.connect(app.server.addr).await.expect("connect");
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(16);
    let mut stalled = false;
    for _ in 0..10_000 {
        let write = tokio::time::timeout(Duration::from_millis(300), reader_of_nothing.write_all(requests.as_bytes()));
        if write.await.is_err() {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "the server kept reading requests whose answers nobody read");
    let stalled_at = Instant::now();

    // The stalled connection holds the client's one slot...
    let mut refused = connect_from(OTHER_CLIENT, &app).await;
    refused.write_all(HEALTHZ).await.expect("write");
    let response = RawResponse::parse(&read_until_closed(&mut refused).await);
    response.assert_problem(503, "/problems/too-many-connections");
    // ...until the server drops it: no byte moved for the stall bound while it had an
    // answer to send (the idle close alone would wait for that answer for ever).
    assert_eventually_served_from(OTHER_CLIENT, &app).await;
    let held_for = stalled_at.elapsed();
    assert!(held_for <= stall + stall / 2 + MARGIN, "the stalled connection was held for {held_for:?}");
}

/// `/healthz` from `client` answers 200 within [`OUTER`]: the server notices closed
/// connections on its own time, so a refusal may come first.
async fn assert_eventually_served_from(client: [u8; 4], app: &TestApp) {
    let deadline = Instant::now() + OUTER;
    loop {
        let mut stream = connect_from(client, app).await;
        stream.write_all(HEALTHZ).await.expect("write");
        let response = read_one_response(&mut stream).await;
        if response.status == 200 {
            return;
        }
        assert_eq!(response.status, 503, "{response:?}");
        assert!(Instant::now() < deadline, "still refused {OUTER:?} after the held connections closed");
        // Polling the server's count, not waiting for a moment to pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- Finding 4: a body that ends early or is badly chunked is malformed, not too large --

#[tokio::test]
async fn a_body_that_ends_before_its_content_length_is_a_400_problem_saying_so() {
    let app = TestApp::spawn().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: flashsale.test\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .expect("write");
    stream.shutdown().await.expect("close the write half");
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    let problem = response.assert_problem(400, "/problems/malformed-body");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("end of file before message length reached"), "{problem}");
}

#[tokio::test]
async fn a_badly_chunked_body_is_a_400_problem_saying_so() {
    let app = TestApp::spawn().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: flashsale.test\r\n\
              Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    let problem = response.assert_problem(400, "/problems/malformed-body");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("chunk size")), "{problem}");
}

// --- Bounds on what one request may make the server hold ----------------------------

#[tokio::test]
async fn a_request_head_past_the_head_bound_is_431_whether_or_not_it_ever_ends() {
    let app = TestApp::spawn().await;
    let bound = app.config.http.max_head_bytes;
    let request_line = "GET /healthz HTTP/1.1\r\nHost: t\r\n";
    let head_of = |total: usize| {
        let filler = total - request_line.len() - "x-filler: \r\n\r\n".len();
        format!("{request_line}x-filler: {}\r\n\r\n", "a".repeat(filler))
    };

    // A head of exactly the bound is served.
    let mut stream = connect(&app).await;
    stream.write_all(head_of(bound).as_bytes()).await.expect("write");
    assert_eq!(read_one_response(&mut stream).await.status, 200, "a head of {bound} bytes");

    // One byte more is refused.
    let mut stream = connect(&app).await;
    stream.write_all(head_of(bound + 1).as_bytes()).await.expect("write");
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    assert_eq!(response.status, 431, "a head of {} bytes: {response:?}", bound + 1);

    // A head that never ends is refused as soon as it passes the bound, not held until
    // the head read timeout: the bound is on what the connection buffers.
    let mut stream = connect(&app).await;
    let unending = format!("{request_line}x-filler: {}", "a".repeat(bound));
    stream.write_all(unending.as_bytes()).await.expect("write");
    let started = Instant::now();
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    assert_eq!(response.status, 431, "a head that never ends: {response:?}");
    let head_read_timeout = Duration::from_millis(app.config.http.header_read_timeout_ms);
    assert!(started.elapsed() < head_read_timeout, "answered only after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_body_declared_larger_than_the_limit_is_413_before_any_of_it_is_read() {
    let app = TestApp::spawn().await;
    let declared = app.config.max_body_bytes + 1;
    // The head alone, no body byte: the answer cannot come from reading the body (that
    // would wait for the body read timeout and answer 408). With `Expect: 100-continue`
    // the client is not asked to send the body at all.
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut stream = connect(&app).await;
        let head = format!(
            "POST /api/v1/auth/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {declared}\r\n{expect}\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let response = read_one_response(&mut stream).await;
        let problem = response.assert_problem(413, "/problems/payload-too-large");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(&app.config.max_body_bytes.to_string())),
            "{problem}"
        );
    }

    // A body of exactly the limit is still read (and judged on its content).
    let mut stream = connect(&app).await;
    let body_of = |email: &str| format!("{{\"email\":\"{email}\",\"password\":\"x\"}}");
    let body = body_of(&"a".repeat(app.config.max_body_bytes - body_of("").len()));
    assert_eq!(body.len(), app.config.max_body_bytes);
    let request = format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let response = read_one_response(&mut stream).await;
    assert_eq!(response.status, 422, "a body of exactly the limit: {response:?}");
}

#[tokio::test]
async fn an_http_1_1_request_without_exactly_one_host_is_a_400_problem() {
    let app = TestApp::spawn().await;
    let cases = [
        ("no Host", "GET /api/v1/products HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", "GET /api/v1/products HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("one Host", "GET /api/v1/products HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("HTTP/1.0 without Host", "GET /api/v1/products HTTP/1.0\r\n\r\n", 200),
    ];
    for (what, request, status) in cases {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        let response = read_one_response(&mut stream).await;
        if status == 200 {
            assert_eq!(response.status, 200, "{what}: {response:?}");
        } else {
            let problem = response.assert_problem(status, "/problems/bad-request");
            assert!(problem["detail"].as_str().is_some_and(|d| d.contains("Host")), "{what}: {problem}");
        }
    }
}

// --- Finding 5: what hyper answers itself, pinned to the list in README.md -------------

#[tokio::test]
async fn hyper_answers_exactly_the_framing_errors_the_readme_lists_with_an_empty_body_and_closes() {
    let app = TestApp::spawn().await;
    let many_headers: String = (0..101).map(|i| format!("x-h-{i}: 1\r\n")).collect();
    let long_target = "a".repeat(app.config.http.max_head_bytes);
    let cases: Vec<(&str, String, u16)> = vec![
        ("a garbage request line", "GARBAGE\r\n\r\n".to_owned(), 400),
        ("HTTP/9.9", "GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n".to_owned(), 400),
        ("a bad header name", "GET /healthz HTTP/1.1\r\nHost: t\r\nbad header: 1\r\n\r\n".to_owned(), 400),
        (
            "two different Content-Lengths",
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_owned(),
            400,
        ),
        (
            "a negative Content-Length",
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_owned(),
            400,
        ),
        (
            "Transfer-Encoding: gzip",
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST /api/v1/auth/login HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            400,
        ),
        ("101 header fields", format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n"), 431),
        ("a request target longer than the head bound", format!("GET /{long_target} HTTP/1.1\r\nHost: t\r\n\r\n"), 431),
    ];
    for (what, request, status) in cases {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.expect("write");
        let response = RawResponse::parse(&read_until_closed(&mut stream).await);
        assert_eq!(response.status, status, "{what}: {response:?}");
        assert_eq!(response.header("content-length"), Some("0"), "{what}: {response:?}");
        assert!(response.body.is_empty() && response.header("content-type").is_none(), "{what}: {response:?}");
    }
}
