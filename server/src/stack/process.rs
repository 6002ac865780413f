//! Child processes of the local stack. Every child is started from one long-lived
//! launcher thread with a parent-death signal, so a test binary that exits (or
//! crashes) takes its backends with it; dropping a handle stops its process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use anyhow::{Context, anyhow};
use tempfile::TempDir;

use super::{STARTUP_TIMEOUT, find_binary, free_port, wait_for_port};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from the launcher thread. Linux delivers the parent-death signal
/// when the *thread* that forked exits, so children must come from a thread that lives
/// as long as the process.
fn spawn_from_launcher(command: Command) -> anyhow::Result<Child> {
    static LAUNCHER: OnceLock<std::sync::Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("flashsale-launcher".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    with_parent_death_signal(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawning the launcher thread");
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .map_err(|_| anyhow!("launcher lock poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| anyhow!("launcher thread is gone"))?;
    reply_rx.recv().map_err(|_| anyhow!("launcher thread is gone"))?.context("spawning a backend")
}

#[allow(unsafe_code)]
fn with_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A child process that is stopped (after a SIGCONT, in case it was paused) when the
/// handle is dropped.
#[derive(Debug, Default)]
struct ChildProcess(Option<Child>);

impl ChildProcess {
    fn replace(&mut self, child: Child) {
        self.kill();
        self.0 = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.0.take() {
            self.signal_child(&process, libc::SIGCONT);
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.0 {
            self.signal_child(child, signal);
        }
    }

    fn signal_child(&self, child: &Child, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
        #[allow(unsafe_code)]
        // SAFETY: sending a signal to our own child's pid has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether redis-server keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisPersistence {
    /// No RDB, no AOF: a restart comes back empty (data loss).
    None,
    /// Append-only file, fsync on every write.
    AppendOnly,
}

/// A `redis-server` on a free port.
#[derive(Debug)]
pub struct RedisServer {
    child: ChildProcess,
    port: u16,
    dir: TempDir,
    persistence: RedisPersistence,
    binary: PathBuf,
}

impl RedisServer {
    pub fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        let binary = find_binary("redis-server", "FLASHSALE_REDIS_SERVER_BIN")?;
        let dir = tempfile::Builder::new().prefix("flashsale-redis-").tempdir()?;
        let mut server = Self { child: ChildProcess::default(), port: free_port()?, dir, persistence, binary };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--maxmemory-policy")
            .arg("noeviction")
            .arg("--protected-mode")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        match self.persistence {
            RedisPersistence::None => command.arg("--appendonly").arg("no"),
            RedisPersistence::AppendOnly => command.arg("--appendonly").arg("yes").arg("--appendfsync").arg("always"),
        };
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        self.child.replace(spawn_from_launcher(command)?);
        wait_for_port(([127, 0, 0, 1], self.port).into(), STARTUP_TIMEOUT).context("redis-server did not start")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no shutdown save, whatever the persistence.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts again on the same port and directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGSTOP: the process stops answering but keeps its connections.
    pub fn pause(&self) {
        self.child.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.child.signal(libc::SIGCONT);
    }
}

/// A FerretDB (SQLite handler) on a free port.
#[derive(Debug)]
pub struct FerretDb {
    child: ChildProcess,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
}

impl FerretDb {
    pub fn start() -> anyhow::Result<Self> {
        let binary = find_binary("ferretdb", "FLASHSALE_FERRETDB_BIN")?;
        let dir = tempfile::Builder::new().prefix("flashsale-ferretdb-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let mut server = Self { child: ChildProcess::default(), port: free_port()?, dir, binary };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("ferretdb.log"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", data.display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--debug-addr=-")
            .arg("--telemetry=disable")
            .arg(format!("--state-dir={}", self.dir.path().display()))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child.replace(spawn_from_launcher(command)?);
        wait_for_port(([127, 0, 0, 1], self.port).into(), STARTUP_TIMEOUT).context("ferretdb did not start")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// SIGSTOP: the process stops answering but keeps its connections.
    pub fn pause(&self) {
        self.child.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.child.signal(libc::SIGCONT);
    }
}
