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
    static LAUNCHER: OnceLock<Result<std::sync::Mutex<mpsc::Sender<SpawnRequest>>, String>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("flashsale-launcher".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    with_parent_death_signal(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| std::sync::Mutex::new(tx))
            .map_err(|error| format!("spawning the launcher thread: {error}"))
    });
    let sender = launcher.as_ref().map_err(|error| anyhow!("{error}"))?;
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

/// What a restart leaves in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataOnRestart {
    /// Whatever the persistence setting kept.
    Keep,
    /// The AOF directory and the RDB file are deleted (`nodes.conf` stays).
    Delete,
}

/// Data files a restart without persistence deletes: the AOF directory (Redis 7), the
/// single AOF file of older versions, and the RDB snapshot.
const DATA_FILES: &[&str] = &["appendonlydir", "appendonly.aof", "dump.rdb"];

/// A `redis-server` on a free port.
#[derive(Debug)]
pub struct RedisServer {
    child: ChildProcess,
    port: u16,
    dir: TempDir,
    persistence: RedisPersistence,
    binary: PathBuf,
    /// Arguments after the common ones (cluster mode); the same on every restart.
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start(persistence: RedisPersistence) -> anyhow::Result<Self> {
        Self::start_with_args(persistence, free_port()?, |_| Vec::new())
    }

    /// Starts on `port` with extra arguments, built from the server's data directory
    /// (which exists by then). The arguments are kept for every restart.
    pub(super) fn start_with_args(
        persistence: RedisPersistence,
        port: u16,
        extra_args: impl FnOnce(&Path) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        let binary = find_binary("redis-server", "FLASHSALE_REDIS_SERVER_BIN")?;
        let dir = tempfile::Builder::new().prefix("flashsale-redis-").tempdir()?;
        let extra_args = extra_args(dir.path());
        let mut server = Self { child: ChildProcess::default(), port, dir, persistence, binary, extra_args };
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
        command.args(&self.extra_args);
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

    /// Starts again on the same port, directory and arguments (a cluster node keeps its
    /// `nodes.conf`, so it rejoins with its slots). Keeps the data when persistence is
    /// [`RedisPersistence::AppendOnly`]; comes back empty otherwise.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_leaving(DataOnRestart::Keep)
    }

    /// Restart without persistence, whatever the persistence setting: SIGKILL, delete the
    /// data files (AOF, RDB) but keep a cluster node's `nodes.conf`, start again on the
    /// same port. Every key this server held is lost.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.restart_leaving(DataOnRestart::Delete)
    }

    fn restart_leaving(&mut self, data: DataOnRestart) -> anyhow::Result<()> {
        self.kill();
        if data == DataOnRestart::Delete {
            self.delete_data_files()?;
        }
        self.spawn()
    }

    fn delete_data_files(&self) -> anyhow::Result<()> {
        for name in DATA_FILES {
            let path = self.dir.path().join(name);
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            };
            removed.with_context(|| format!("deleting {}", path.display()))?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(server: &RedisServer) -> redis::Connection {
        let client = redis::Client::open(server.url()).expect("url");
        client.get_connection_with_timeout(std::time::Duration::from_secs(5)).expect("connect")
    }

    #[test]
    fn restart_keeps_append_only_data_and_restart_empty_loses_it() {
        let mut server = RedisServer::start(RedisPersistence::AppendOnly).expect("redis-server");
        let () = redis::cmd("SET").arg("k").arg("v").query(&mut connect(&server)).expect("SET");
        server.restart().expect("restart");
        let kept: Option<String> = redis::cmd("GET").arg("k").query(&mut connect(&server)).expect("GET");
        assert_eq!(kept.as_deref(), Some("v"), "the AOF survives a restart");
        server.restart_empty().expect("restart without data");
        let lost: Option<String> = redis::cmd("GET").arg("k").query(&mut connect(&server)).expect("GET");
        assert_eq!(lost, None, "restart_empty deletes the AOF");
    }
}
