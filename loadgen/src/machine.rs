//! The machine and software a report was measured on: figures mean little without
//! them. Read from `/proc` and from the tools themselves; anything unreadable is said
//! to be unknown rather than guessed.

use std::process::Command;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cpus: usize,
    pub memory: String,
    pub kernel: String,
    pub redis: String,
    pub ferretdb: String,
    pub rustc: String,
    pub loadgen_version: String,
    pub git_commit: String,
    /// Debug or release build of the load generator (and of the in-process server).
    pub profile: &'static str,
}

const UNKNOWN: &str = "unknown";

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split(':').nth(1)))
            .map_or_else(|| UNKNOWN.to_owned(), |model| model.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(|| UNKNOWN.to_owned(), |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| UNKNOWN.to_owned(), |release| format!("Linux {}", release.trim()));
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory,
            kernel,
            redis: first_line("redis-server", &["--version"]),
            ferretdb: first_line("ferretdb", &["--version"]),
            rustc: first_line("rustc", &["--version"]),
            loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: first_line("git", &["rev-parse", "--short=12", "HEAD"]),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    let bin = flashsale_stack::tools_dir().join(program);
    let program = if bin.exists() { bin.into_os_string() } else { program.into() };
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| UNKNOWN.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_described_from_proc() {
        let machine = Machine::describe();
        assert!(machine.cpus >= 1);
        assert_ne!(machine.cpu_model, UNKNOWN, "/proc/cpuinfo names the CPU on Linux");
        assert!(machine.memory.ends_with("GiB"), "{}", machine.memory);
    }
}
