//! A TCP fault-injection proxy.
//!
//! The simulator puts one [`FaultProxy`] between the server and each backing store (Redis, MongoDB through
//! FerretDB): the server is pointed at the proxy's address, and the proxy forwards every accepted connection to
//! the real upstream. The simulator then switches the proxy's [`ProxyMode`] to inject a fault and back to
//! [`ProxyMode::Pass`] (with [`FaultProxy::heal`]) to end it:
//!
//! * [`ProxyMode::Latency`] delays every chunk, in both directions, without serialising throughput;
//! * [`ProxyMode::Reset`] aborts every open connection with a TCP RST and resets new ones at once;
//! * [`ProxyMode::Blackhole`] is a partition: bytes are swallowed, nothing is answered, and the connections that
//!   lived through it are reset when it ends, since their byte streams have holes;
//! * [`ProxyMode::SlowClose`] holds back the propagation of a close (EOF) from one side to the other.
//!
//! Design: one accept-loop task, and one task per connection that runs both directions concurrently (so one
//! direction stalling never blocks the other). The mode travels in a [`tokio::sync::watch`] channel together with
//! an *epoch* that goes up whenever every open connection must be reset (entering `Reset`, leaving `Blackhole`);
//! a connection that sees the epoch move away from the one it started with aborts both of its sockets with RST.
//! Each direction reads into a 16 KiB buffer; with nothing queued and no delay it writes the chunk straight
//! through, like [`tokio::io::copy`], so `Pass` costs no allocation per chunk. A delayed chunk goes to a FIFO
//! queue with its due time while reading carries on, which keeps order without serialising throughput.
//! A [`CancellationToken`] stops everything on [`FaultProxy::shutdown`] or drop.

use std::collections::VecDeque;
use std::fmt;
use std::future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Size of the read buffer of each direction of each connection.
const BUF_SIZE: usize = 16 * 1024;
/// Most bytes one direction holds back (delayed) before it stops reading from its source.
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum ProxyMode {
    /// Forward everything as it comes.
    Pass,
    /// Every chunk, in either direction, is delivered `ms` later (order kept, throughput not serialised: queue
    /// chunks with their due time).
    Latency {
        /// Delay added to every chunk, in milliseconds.
        ms: u64,
    },
    /// Entering this mode aborts every open connection with a TCP RST on both sides (SO_LINGER 0, then close);
    /// while in it, new connections are accepted and reset at once.
    Reset,
    /// Connections stay open, bytes are read and discarded, nothing is forwarded or answered (a partition). New
    /// connections are accepted and treated the same. When the mode changes away from Blackhole, every connection
    /// that was blackholed is reset (RST), because the streams lost bytes and must not resume.
    Blackhole,
    /// When one side closes (EOF), the proxy waits `ms` before closing the other side.
    SlowClose {
        /// Delay before a close is passed on, in milliseconds.
        ms: u64,
    },
}

/// Counters of one proxy since it started.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Connections the proxy reset because of a fault (`Reset` mode, or the end of `Blackhole`). A reset that
    /// merely passes on a reset from one side to the other is not counted.
    pub reset: u64,
    /// Payload bytes forwarded, both directions together.
    pub bytes: u64,
}

/// The mode plus the reset epoch, as carried by the watch channel.
#[derive(Debug, Clone, Copy)]
struct State {
    mode: ProxyMode,
    /// Goes up by one whenever every open connection must be reset.
    epoch: u64,
}

/// What the accept loop, the connection tasks and the handle share.
struct Shared {
    upstream: SocketAddr,
    state: watch::Sender<State>,
    cancel: CancellationToken,
    accepted: AtomicU64,
    reset: AtomicU64,
    bytes: AtomicU64,
}

impl Shared {
    fn mode(&self) -> ProxyMode {
        self.state.borrow().mode
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to one upstream and injects the faults of its current [`ProxyMode`].
///
/// Dropping it shuts it down (see [`FaultProxy::shutdown`]).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 on a free port (or `listen_port` if Some) and forwards to `upstream`. Upstream need
    /// not be up yet: a connection is made to upstream per accepted client; if upstream refuses, the client
    /// connection is closed.
    ///
    /// Must be called inside a Tokio runtime, which runs the proxy's tasks.
    pub async fn start(upstream: SocketAddr, listen_port: Option<u16>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port.unwrap_or(0))).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State { mode: ProxyMode::Pass, epoch: 0 });
        let shared = Arc::new(Shared {
            upstream,
            state,
            cancel: CancellationToken::new(),
            accepted: AtomicU64::new(0),
            reset: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the mode. Entering [`ProxyMode::Reset`] resets every open connection; leaving
    /// [`ProxyMode::Blackhole`] resets every connection that was blackholed. Setting the current mode again is a
    /// no-op, except for `Reset`, which resets whatever is open (nothing, normally).
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.state.send_modify(|state| {
            let leaving_blackhole = state.mode == ProxyMode::Blackhole && mode != ProxyMode::Blackhole;
            if mode == ProxyMode::Reset || leaving_blackhole {
                state.epoch += 1;
            }
            state.mode = mode;
        });
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Back to Pass (resetting blackholed connections as above).
    pub fn heal(&self) {
        self.set_mode(ProxyMode::Pass);
    }

    /// Counters: connections accepted, connections reset by the proxy, bytes forwarded.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            reset: self.shared.reset.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting and closes every connection. Idempotent; the listener and the connections close as soon as
    /// their tasks next run, not necessarily before this returns.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("mode", &self.mode())
            .field("stats", &self.stats())
            .field("shut_down", &self.shared.cancel.is_cancelled())
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Accepts clients until shutdown, one task per connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle_connection(client, Arc::clone(&shared)));
            }
            Err(_) => {
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// How a connection's life ended.
enum Ending {
    /// Both directions closed cleanly, or the proxy shut down: close normally.
    Close,
    /// A fault resets the connection: RST both sides, and count it.
    Fault,
    /// One side failed (e.g. was reset): pass the failure on by resetting both sides.
    Broken,
}

/// Runs one client connection from accept to close.
async fn handle_connection(mut client: TcpStream, shared: Arc<Shared>) {
    let mut state_rx = shared.state.subscribe();
    let start = *state_rx.borrow_and_update();
    if start.mode == ProxyMode::Reset {
        shared.reset.fetch_add(1, Ordering::Relaxed);
        abort(client);
        return;
    }
    // Best effort: without it, small request/response exchanges would pay Nagle delays the real path does not.
    let _ = client.set_nodelay(true);

    // A connection born in a partition never reaches upstream; it is reset when the partition ends.
    let mut upstream = None;
    if start.mode != ProxyMode::Blackhole {
        let connected = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            () = epoch_moved(&mut state_rx, start.epoch) => {
                shared.reset.fetch_add(1, Ordering::Relaxed);
                abort(client);
                return;
            }
            connected = TcpStream::connect(shared.upstream) => connected,
        };
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                upstream = Some(stream);
            }
            // Upstream is down or refuses: close the client (by dropping it).
            Err(_) => return,
        }
    }

    let ending = tokio::select! {
        biased;
        () = shared.cancel.cancelled() => Ending::Close,
        () = epoch_moved(&mut state_rx, start.epoch) => Ending::Fault,
        result = session(&mut client, upstream.as_mut(), &shared) => match result {
            Ok(()) => Ending::Close,
            Err(_) => Ending::Broken,
        },
    };
    match ending {
        Ending::Close => {}
        Ending::Fault | Ending::Broken => {
            if matches!(ending, Ending::Fault) {
                shared.reset.fetch_add(1, Ordering::Relaxed);
            }
            abort(client);
            if let Some(upstream) = upstream {
                abort(upstream);
            }
        }
    }
}

/// Completes once the reset epoch differs from `epoch`.
async fn epoch_moved(state_rx: &mut watch::Receiver<State>, epoch: u64) {
    loop {
        if state_rx.borrow_and_update().epoch != epoch {
            return;
        }
        if state_rx.changed().await.is_err() {
            // The sender lives as long as `Shared`, which the caller holds; never reached in practice.
            future::pending::<()>().await;
        }
    }
}

/// Closes `stream` with a TCP RST rather than a FIN.
fn abort(stream: TcpStream) {
    // If SO_LINGER cannot be set, the close below is an ordinary FIN: still a close.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Moves bytes both ways until both directions have closed cleanly (`Ok`) or one side fails (`Err`). Without an
/// upstream (a connection born in a partition) it only swallows what the client sends.
async fn session(client: &mut TcpStream, upstream: Option<&mut TcpStream>, shared: &Shared) -> io::Result<()> {
    let Some(upstream) = upstream else {
        return swallow(client).await;
    };
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    tokio::try_join!(pump(client_read, upstream_write, shared), pump(upstream_read, client_write, shared))?;
    Ok(())
}

/// Reads and discards until the stream fails; after EOF, waits forever (the partition swallowed the close too).
async fn swallow(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        if stream.read(&mut buf).await? == 0 {
            return future::pending().await;
        }
    }
}

/// What a queued item carries.
enum Payload {
    Data(Vec<u8>),
    Eof,
}

/// A chunk (or the close) waiting for its due time.
struct Queued {
    due: Instant,
    payload: Payload,
    /// How much of `Data` has been written already.
    written: usize,
}

/// The chunks one direction holds back, in order.
#[derive(Default)]
struct Backlog {
    items: VecDeque<Queued>,
    /// Unwritten data bytes in `items`.
    bytes: usize,
}

/// What one delivery step did.
enum Delivered {
    /// Some bytes (possibly all of the head chunk) were written, or dropped by a partition.
    Progress,
    /// The close was passed on: this direction is done.
    Eof,
}

impl Backlog {
    fn push(&mut self, due: Instant, payload: Payload) {
        if let Payload::Data(data) = &payload {
            self.bytes += data.len();
        }
        self.items.push_back(Queued { due, payload, written: 0 });
    }

    /// Waits for the head's due time, then writes (part of) it to `dst`, or drops it if the proxy is in a
    /// partition by then. Cancel-safe: the sleep is re-armed with the same deadline and `write` either wrote or
    /// did not.
    async fn deliver(&mut self, dst: &mut WriteHalf<'_>, shared: &Shared) -> io::Result<Delivered> {
        let Some(head) = self.items.front_mut() else {
            return Ok(Delivered::Progress);
        };
        tokio::time::sleep_until(head.due).await;
        let done = if shared.mode() == ProxyMode::Blackhole {
            if let Payload::Data(data) = &head.payload {
                self.bytes -= data.len() - head.written;
            }
            true
        } else {
            match &head.payload {
                Payload::Eof => {
                    dst.shutdown().await?;
                    self.items.pop_front();
                    return Ok(Delivered::Eof);
                }
                Payload::Data(data) => {
                    let n = dst.write(&data[head.written..]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    head.written += n;
                    self.bytes -= n;
                    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    head.written == data.len()
                }
            }
        };
        if done {
            self.items.pop_front();
        }
        Ok(Delivered::Progress)
    }
}

/// Copies one direction, `src` to `dst`, applying the mode to each chunk as it is read (and `Blackhole` again as
/// it is delivered). Returns `Ok` once the close has been passed on; never returns if a partition swallowed it.
async fn pump(mut src: ReadHalf<'_>, mut dst: WriteHalf<'_>, shared: &Shared) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut backlog = Backlog::default();
    let mut reading = true;
    loop {
        if !reading && backlog.items.is_empty() {
            // The close was lost in a partition: stay silent until the connection is reset or shut down.
            return future::pending().await;
        }
        tokio::select! {
            read = src.read(&mut buf), if reading && backlog.bytes < MAX_QUEUED_BYTES => {
                let n = read?;
                if n == 0 {
                    reading = false;
                }
                let delay = match shared.mode() {
                    ProxyMode::Blackhole => continue,
                    // `Reset` only shows here for the instant before the connection is torn down.
                    ProxyMode::Pass | ProxyMode::Reset => Duration::ZERO,
                    ProxyMode::Latency { ms } => Duration::from_millis(ms),
                    ProxyMode::SlowClose { ms } if n == 0 => Duration::from_millis(ms),
                    ProxyMode::SlowClose { .. } => Duration::ZERO,
                };
                if delay.is_zero() && backlog.items.is_empty() {
                    // The fast path: nothing ahead of this chunk, so write it straight through.
                    if n == 0 {
                        dst.shutdown().await?;
                        return Ok(());
                    }
                    dst.write_all(&buf[..n]).await?;
                    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let payload = if n == 0 { Payload::Eof } else { Payload::Data(buf[..n].to_vec()) };
                    backlog.push(Instant::now() + delay, payload);
                }
            }
            delivered = backlog.deliver(&mut dst, shared), if !backlog.items.is_empty() => {
                if let Delivered::Eof = delivered? {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generous bound for things that must happen.
    const SOON: Duration = Duration::from_secs(5);
    /// How long "no answer" has to last to count as no answer.
    const SILENCE: Duration = Duration::from_millis(300);

    /// Starts an echo server on 127.0.0.1; each connection echoes until EOF, then closes.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind echo server");
        let addr = listener.local_addr().expect("echo server address");
        tokio::spawn(serve_echo(listener));
        addr
    }

    async fn serve_echo(listener: TcpListener) {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    }

    async fn connect(proxy: &FaultProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Sends `msg` and reads the same number of bytes back, failing on error or after [`SOON`].
    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        stream.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(SOON, stream.read_exact(&mut back)).await.expect("echo in time").expect("read echo");
        back
    }

    /// Asserts that the stream was closed or reset: a read yields EOF or an error (not data, not silence).
    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(SOON, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {SOON:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("expected a close, read {n} bytes"),
        }
    }

    /// Asserts that the stream was reset: a read fails with ECONNRESET.
    async fn assert_reset(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(SOON, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {SOON:?}"),
            Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            Ok(Ok(n)) => panic!("expected a reset, read {n} bytes"),
        }
    }

    /// Asserts that nothing arrives for [`SILENCE`].
    async fn assert_silent(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        if let Ok(read) = tokio::time::timeout(SILENCE, stream.read(&mut buf)).await {
            panic!("expected silence, got {read:?}");
        }
    }

    #[tokio::test]
    async fn pass_forwards_both_ways_and_passes_the_close_on() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        assert_eq!(proxy.mode(), ProxyMode::Pass);
        assert_eq!(proxy.addr().ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(proxy.port(), proxy.addr().port());
        let mut client = connect(&proxy).await;
        assert_eq!(round_trip(&mut client, b"hello").await, b"hello");

        // A payload much larger than the buffers and socket buffers, written while reading it back.
        let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = client.split();
        let writer = async {
            write.write_all(&big).await.expect("write big");
            write.shutdown().await.expect("half-close");
        };
        let reader = async {
            let mut back = Vec::new();
            read.read_to_end(&mut back).await.expect("read big and EOF");
            back
        };
        let ((), back) = tokio::time::timeout(SOON, async { tokio::join!(writer, reader) }).await.expect("in time");
        assert!(back == big, "echoed payload differs");

        let stats = proxy.stats();
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.reset, 0);
        assert_eq!(stats.bytes, 2 * (5 + big.len() as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pass_handles_hundreds_of_concurrent_connections() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let mut clients = Vec::new();
        for _ in 0..200 {
            clients.push(connect(&proxy).await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut client) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                let msg = format!("client {i}").into_bytes();
                for _ in 0..10 {
                    assert_eq!(round_trip(&mut client, &msg).await, msg);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("client task");
        }
        assert_eq!(proxy.stats().accepted, 200);
    }

    #[tokio::test]
    async fn latency_delays_each_direction_and_keeps_order() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let mut client = connect(&proxy).await;
        round_trip(&mut client, b"warm").await;

        let ms = 150;
        proxy.set_mode(ProxyMode::Latency { ms });
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut client, b"ping").await, b"ping");
        let elapsed = started.elapsed();
        // Delayed once on the way out and once on the way back.
        assert!(elapsed >= Duration::from_millis(2 * ms), "round trip took {elapsed:?}");

        // Several separate writes come back complete and in order, and are not delayed one after the other:
        // the whole batch takes about one round trip, not one per write.
        let started = std::time::Instant::now();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let chunk = [i; 1000];
            client.write_all(&chunk).await.expect("write");
            expected.extend_from_slice(&chunk);
        }
        let mut back = vec![0u8; expected.len()];
        tokio::time::timeout(SOON, client.read_exact(&mut back)).await.expect("in time").expect("read");
        assert!(back == expected, "chunks reordered or corrupted");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(2 * ms), "batch took {elapsed:?}");
        assert!(elapsed < Duration::from_millis(10 * ms), "chunks were serialised: batch took {elapsed:?}");

        proxy.heal();
        assert_eq!(round_trip(&mut client, b"fast").await, b"fast");
        assert_eq!(proxy.stats().reset, 0);
    }

    #[tokio::test]
    async fn reset_aborts_open_and_new_connections_and_heal_restores_service() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"before").await;

        proxy.set_mode(ProxyMode::Reset);
        assert_eq!(proxy.mode(), ProxyMode::Reset);
        assert_reset(&mut open).await;

        let mut late = connect(&proxy).await;
        assert_reset(&mut late).await;

        proxy.heal();
        let mut fresh = connect(&proxy).await;
        assert_eq!(round_trip(&mut fresh, b"after").await, b"after");
        let stats = proxy.stats();
        assert_eq!(stats.accepted, 3);
        assert_eq!(stats.reset, 2);
    }

    #[tokio::test]
    async fn blackhole_swallows_traffic_and_its_end_resets_the_blackholed_connections() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"before").await;

        proxy.set_mode(ProxyMode::Blackhole);
        open.write_all(b"lost").await.expect("write into the partition");
        assert_silent(&mut open).await;
        let mut late = connect(&proxy).await;
        late.write_all(b"lost too").await.expect("write into the partition");
        assert_silent(&mut late).await;
        assert_eq!(proxy.stats().reset, 0);

        // Leaving the partition (here to Latency, not Pass) resets both, rather than delivering late bytes.
        proxy.set_mode(ProxyMode::Latency { ms: 1 });
        assert_reset(&mut open).await;
        assert_reset(&mut late).await;
        assert_eq!(proxy.stats().reset, 2);

        proxy.heal();
        let mut fresh = connect(&proxy).await;
        assert_eq!(round_trip(&mut fresh, b"after").await, b"after");
        // Healing from a mode other than Blackhole resets nothing.
        assert_eq!(proxy.stats().reset, 2);
    }

    #[tokio::test]
    async fn slow_close_delays_the_close_in_each_direction() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let ms = 250;
        proxy.set_mode(ProxyMode::SlowClose { ms });
        let mut client = connect(&proxy).await;
        // Data is not delayed.
        assert_eq!(round_trip(&mut client, b"data").await, b"data");

        // Our close reaches the echo server `ms` late; its close comes back `ms` late too.
        let started = std::time::Instant::now();
        client.shutdown().await.expect("half-close");
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(SOON, client.read(&mut buf)).await.expect("close in time").expect("read");
        assert_eq!(read, 0);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(2 * ms), "close took {elapsed:?}");

        // In Pass the close is passed on at once.
        proxy.heal();
        let mut client = connect(&proxy).await;
        round_trip(&mut client, b"data").await;
        let started = std::time::Instant::now();
        client.shutdown().await.expect("half-close");
        let read = tokio::time::timeout(SOON, client.read(&mut buf)).await.expect("close in time").expect("read");
        assert_eq!(read, 0);
        assert!(started.elapsed() < Duration::from_millis(ms), "pass close took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn shutdown_closes_connections_and_stops_accepting() {
        let proxy = FaultProxy::start(echo_server().await, None).await.expect("start proxy");
        let mut open = connect(&proxy).await;
        round_trip(&mut open, b"before").await;

        proxy.shutdown();
        assert_closed(&mut open).await;
        // The listener closes as soon as the accept loop sees the cancellation. Until then a connection attempt
        // may still land in the kernel's backlog; it is closed unserved when the listener goes. After that,
        // connecting is refused.
        let refused = tokio::time::timeout(SOON, async {
            loop {
                match TcpStream::connect(proxy.addr()).await {
                    Err(e) => break e,
                    Ok(mut late) => assert_closed(&mut late).await,
                }
            }
        })
        .await
        .expect("refused in time");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(proxy.stats().accepted, 1);
    }

    #[tokio::test]
    async fn upstream_down_closes_the_client_and_a_later_upstream_is_used() {
        // Reserve a port, then free it so nothing listens there.
        let reserved = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let upstream = reserved.local_addr().expect("address");
        drop(reserved);

        let proxy = FaultProxy::start(upstream, None).await.expect("start proxy");
        let mut client = connect(&proxy).await;
        assert_closed(&mut client).await;

        let listener = TcpListener::bind(upstream).await.expect("rebind the upstream port");
        tokio::spawn(serve_echo(listener));
        let mut client = connect(&proxy).await;
        assert_eq!(round_trip(&mut client, b"up now").await, b"up now");
    }

    #[tokio::test]
    async fn a_fixed_listen_port_is_honoured_and_drop_shuts_down() {
        let reserved = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = reserved.local_addr().expect("address").port();
        drop(reserved);

        let proxy = FaultProxy::start(echo_server().await, Some(port)).await.expect("start proxy");
        assert_eq!(proxy.port(), port);
        let mut client = connect(&proxy).await;
        round_trip(&mut client, b"x").await;
        assert!(format!("{proxy:?}").contains("FaultProxy"));
        drop(proxy);
        assert_closed(&mut client).await;
    }

    #[test]
    fn modes_and_stats_serialise_with_a_mode_tag() {
        let json = |mode| serde_json::to_string(&mode).expect("serialise");
        assert_eq!(json(ProxyMode::Pass), r#"{"mode":"pass"}"#);
        assert_eq!(json(ProxyMode::Latency { ms: 5 }), r#"{"mode":"latency","ms":5}"#);
        assert_eq!(json(ProxyMode::Reset), r#"{"mode":"reset"}"#);
        assert_eq!(json(ProxyMode::Blackhole), r#"{"mode":"blackhole"}"#);
        assert_eq!(json(ProxyMode::SlowClose { ms: 7 }), r#"{"mode":"slow_close","ms":7}"#);
        let stats = serde_json::to_string(&ProxyStats { accepted: 1, reset: 2, bytes: 3 }).expect("serialise");
        assert_eq!(stats, r#"{"accepted":1,"reset":2,"bytes":3}"#);
    }
}
