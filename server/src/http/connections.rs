//! The accept loop: each connection served by hyper under named bounds (size of and time
//! to read a request head, idle time, an answer the client stopped reading, connections
//! in total and per client address), connections past a bound refused with a 503
//! problem rather than left to exhaust descriptors, and a bounded drain at shutdown.
//! `axum::serve` exposes none of these bounds.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower::util::Oneshot;

use crate::config::Config;
use crate::error::{ApiError, PROBLEM_JSON};
use crate::http::middleware::REQUEST_ID;
use crate::http::slots::{Refusal, Slot, Slots};

/// Refused connections being answered at once; past it a refused connection is closed
/// unanswered (each one answered holds a descriptor for up to [`REFUSAL_LINGER`]).
const REFUSALS_ANSWERING_MAX: usize = 64;
/// How long a refused connection has to take its 503 and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Bytes of a refused connection's request read and dropped, at most.
const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// Descriptors left for everything but client connections (backend pools, the listener,
/// the runtime, refusals being answered) when the connection cap is fitted to the
/// process's open-files limit.
const DESCRIPTORS_RESERVED: u64 = 256;
/// Pause after an accept error that is not the peer's (out of descriptors, of memory).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Refusals between two log lines about them.
const REFUSALS_PER_LOG_LINE: u64 = 1_000;

/// The connection bounds of one server, from its configuration (`Config::http`).
#[derive(Debug, Clone)]
pub struct ServeSettings {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    write_stall_timeout: Duration,
    drain_timeout: Duration,
    max_connections: usize,
    max_head_bytes: usize,
    /// `None` when the peer is a trusted proxy, so that the client is not known here.
    max_connections_per_client: Option<usize>,
}

impl ServeSettings {
    /// The configured bounds, the connection cap lowered to fit the open-files limit.
    pub fn from_config(config: &Config) -> Self {
        let limits = &config.http;
        let max_connections = fit_to_open_files_limit(limits.max_connections);
        let per_client = limits.max_connections_per_client.min(max_connections);
        Self {
            header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(limits.keep_alive_idle_timeout_ms),
            write_stall_timeout: Duration::from_millis(limits.write_stall_timeout_ms),
            drain_timeout: Duration::from_millis(limits.shutdown_drain_timeout_ms),
            max_connections,
            max_head_bytes: limits.max_head_bytes,
            max_connections_per_client: (!config.trust_forwarded_for).then_some(per_client),
        }
    }
}

/// `configured`, or less if the process may not open that many files besides the ones
/// it needs for other things: a cap past that limit would fail by `accept` errors.
fn fit_to_open_files_limit(configured: usize) -> usize {
    let Some(open_files) = open_files_limit() else {
        return configured;
    };
    let reserved = DESCRIPTORS_RESERVED + REFUSALS_ANSWERING_MAX as u64;
    let fits = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX).max(1);
    if configured > fits {
        tracing::warn!(
            configured,
            open_files,
            serving = fits,
            "--http-max-connections is more than the open-files limit allows; raise `ulimit -n` to serve more"
        );
        return fits;
    }
    configured
}

/// The soft limit on this process's open files, where the system tells (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    // `Max open files  <soft>  <hard>  files`; `unlimited` does not parse: no limit.
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `router` on `listener` until `shutdown` fires. Then stops accepting, calls
/// `on_shutdown` (which ends the answers that never end by themselves, event streams),
/// lets in-flight requests finish for at most the drain bound, and drops what is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: CancellationToken,
    on_shutdown: impl FnOnce(),
) {
    let mut http = http1::Builder::new();
    // The read buffer's bound is what bounds a head that never completes; the header
    // size bound alone is only checked once a head has parsed.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_head_bytes)
        .max_header_size(settings.max_head_bytes);
    let slots = Arc::new(Slots::new(settings.max_connections, settings.max_connections_per_client));
    let mut refusals = Refusals::new(settings.max_connections, settings.max_connections_per_client);
    // Each connection task holds a receiver; the drain is over when all are dropped.
    let (drain_tx, drain_rx) = watch::channel(());
    let abort = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                accept_failed(&err, &shutdown).await;
                continue;
            }
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refusals.refuse(stream, peer, refusal);
                continue;
            }
        };
        let activity = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Metered { stream, activity: activity.clone(), stalled: stalled.clone() });
        let connection = http.serve_connection(io, PeerService { router: router.clone(), peer: ConnectInfo(peer) });
        let watch = ConnectionWatch {
            activity,
            stalled,
            idle_timeout: settings.idle_timeout,
            write_stall_timeout: settings.write_stall_timeout,
            shutdown: shutdown.clone(),
            abort: abort.clone(),
            _slot: slot,
            _drain: drain_rx.clone(),
        };
        tokio::spawn(watch.drive(connection));
    }
    on_shutdown();
    drop(listener);
    drop(drain_rx);
    if tokio::time::timeout(settings.drain_timeout, drain_tx.closed()).await.is_err() {
        tracing::warn!(
            drain_timeout_ms = settings.drain_timeout.as_millis(),
            "requests still in flight after the shutdown drain bound; dropping their connections"
        );
        abort.cancel();
        drain_tx.closed().await;
    }
}

/// An accept error: the peer's own (it gave up before we took it) is nothing; any other
/// (out of descriptors) is logged and waited out briefly rather than retried in a spin.
async fn accept_failed(err: &io::Error, shutdown: &CancellationToken) {
    use io::ErrorKind as K;
    if matches!(err.kind(), K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused) {
        return;
    }
    tracing::error!(error = %err, "accept error");
    tokio::select! {
        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
        () = shutdown.cancelled() => {}
    }
}

/// The router, called with the connection's peer address as `ConnectInfo` (what
/// `into_make_service_with_connect_info` does under `axum::serve`).
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: ConnectInfo<SocketAddr>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for PeerService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Oneshot<Router, hyper::Request<Incoming>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.router.clone().oneshot(request)
    }
}

/// What a connection's task holds besides the connection: the bounds it watches, and
/// the slot and drain receiver it gives back when it ends.
struct ConnectionWatch {
    /// Reads and writes that moved bytes, counted by [`Metered`].
    activity: Arc<AtomicU64>,
    /// Whether the last write found the socket full (set by [`Metered`]).
    stalled: Arc<AtomicBool>,
    idle_timeout: Duration,
    write_stall_timeout: Duration,
    shutdown: CancellationToken,
    abort: CancellationToken,
    _slot: Slot,
    _drain: watch::Receiver<()>,
}

impl ConnectionWatch {
    /// Runs the connection to its end. It is shut down gracefully (hyper closes it at once
    /// between requests, else after the answer in progress) when no byte has moved for
    /// the idle bound or the server shuts down; it is dropped when an answer has waited
    /// on a full socket, no byte moving, for the write-stall bound (a client that reads
    /// nothing would otherwise hold it through the graceful close), or when the drain
    /// runs out.
    async fn drive(self, connection: http1::Connection<TokioIo<Metered>, PeerService>) {
        let mut connection = pin!(connection);
        let check_every = self.idle_timeout / 2;
        let mut check = pin!(tokio::time::sleep(check_every));
        let mut shutdown = pin!(self.shutdown.cancelled());
        let mut abort = pin!(self.abort.cancelled());
        let (mut seen, mut quiet_checks, mut closing) = (0_u64, 0_u32, false);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = &mut shutdown, if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = &mut check => {
                    let now_seen = self.activity.load(Ordering::Relaxed);
                    if now_seen == seen {
                        quiet_checks = quiet_checks.saturating_add(1);
                    } else {
                        (seen, quiet_checks) = (now_seen, 0);
                    }
                    // No byte moved since a check before the last `quiet_checks` ones: quiet
                    // for at least that many halves of the idle bound.
                    let quiet_for = check_every * quiet_checks;
                    if quiet_for >= self.write_stall_timeout && self.stalled.load(Ordering::Relaxed) {
                        tracing::debug!(
                            write_stall_timeout_ms = self.write_stall_timeout.as_millis(),
                            "dropping a connection whose client reads none of its answer"
                        );
                        return;
                    }
                    // Two quiet checks in a row: quiet for at least the whole bound.
                    if quiet_checks >= 2 && !closing {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    check.as_mut().reset(tokio::time::Instant::now() + check_every);
                }
                () = &mut abort => return,
            }
        }
    }
}

/// A TCP stream that counts the reads and writes that moved bytes, so that the
/// connection's task can tell an idle connection without reading the clock per request.
struct Metered {
    stream: TcpStream,
    activity: Arc<AtomicU64>,
    /// Set when a write finds the socket full, cleared when one moves bytes.
    stalled: Arc<AtomicBool>,
}

impl Metered {
    fn moved<T>(&self, polled: &Poll<io::Result<T>>, moved: impl Fn(&T) -> bool) {
        if matches!(polled, Poll::Ready(Ok(value)) if moved(value)) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        self.moved(polled, |written| *written > 0);
        match polled {
            Poll::Pending => self.stalled.store(true, Ordering::Relaxed),
            Poll::Ready(Ok(1..)) => self.stalled.store(false, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let after = buf.filled().len();
        self.moved(&polled, |()| after > before);
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Answers refused connections: a 503 problem, then a lingering close, for a bounded
/// number at once.
struct Refusals {
    answering: Arc<Semaphore>,
    server_full: Bytes,
    client_full: Bytes,
    refused: u64,
}

impl Refusals {
    fn new(max_total: usize, max_per_client: Option<usize>) -> Self {
        let problem = |detail: String| {
            Bytes::from(serde_json::to_vec(&ApiError::TooManyConnections(detail).problem()).unwrap_or_default())
        };
        Self {
            answering: Arc::new(Semaphore::new(REFUSALS_ANSWERING_MAX)),
            server_full: problem(format!("the server holds as many connections as it may ({max_total}); retry later")),
            client_full: problem(format!(
                "this client address holds as many connections as it may ({}); reuse one, or retry later",
                max_per_client.unwrap_or(max_total)
            )),
            refused: 0,
        }
    }

    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        self.refused += 1;
        if self.refused % REFUSALS_PER_LOG_LINE == 1 {
            tracing::warn!(?refusal, %peer, refused_so_far = self.refused, "connection refused at the connection cap");
        }
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        let body = match refusal {
            Refusal::ServerFull => self.server_full.clone(),
            Refusal::ClientFull => self.client_full.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_LINGER, answer_and_close(stream, body)).await;
        });
    }
}

/// Writes the 503 before reading the request (a server may answer early and close), then
/// reads what the client sent until it closes: closing with unread bytes would reset the
/// connection, which can destroy the answer before the client reads it.
async fn answer_and_close(mut stream: TcpStream, body: Bytes) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n{REQUEST_ID}: {}\r\n\r\n",
        body.len(),
        uuid::Uuid::new_v4(),
    );
    let mut answer = Vec::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(&body);
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    let mut buf = [0_u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN_BYTES_MAX {
        match stream.read(&mut buf).await? {
            0 => break,
            read => drained += read,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// One write, polled once: what the socket took, or `Pending` when it is full.
    async fn write_once(stream: &mut Metered, bytes: &[u8]) -> Poll<io::Result<usize>> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *stream).poll_write(cx, bytes))).await
    }

    #[tokio::test]
    async fn a_write_that_finds_the_socket_full_marks_the_stream_stalled_until_one_moves_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stalled = Arc::new(AtomicBool::new(false));
        let mut stream = Metered { stream: server, activity: Arc::new(AtomicU64::new(0)), stalled: stalled.clone() };

        // The client reads nothing: writes go into the socket buffers until they are full.
        let chunk = vec![7_u8; 64 * 1024];
        let mut sent = 0;
        loop {
            match write_once(&mut stream, &chunk).await {
                Poll::Ready(Ok(written)) => {
                    assert!(!stalled.load(Ordering::Relaxed), "a write that moved bytes is not a stall");
                    sent += written;
                }
                Poll::Ready(Err(err)) => panic!("write failed: {err}"),
                Poll::Pending => break,
            }
        }
        assert!(stalled.load(Ordering::Relaxed), "the full socket marked the stream stalled");

        // The client reads everything sent; the next write moves bytes and clears the mark.
        let mut received = vec![0_u8; sent];
        client.read_exact(&mut received).await.expect("read what was sent");
        let written = stream.write(b"more").await.expect("a write once there is room");
        assert_eq!(written, 4);
        assert!(!stalled.load(Ordering::Relaxed), "a write that moved bytes cleared the stall");
    }
}
