//! Pinning processes to CPUs with `taskset` (util-linux), for the benchmark phase that runs
//! the servers and the load generator on separate cores: the servers (Redis, holdfast) on the
//! first half of the cores, the load generator (this process and `redis-benchmark`) on the
//! rest. Only processes this harness started, and this process, are ever pinned.

use std::process::Command;

use anyhow::{Context, bail};

/// Which cores the servers get and which the load generator gets.
#[derive(Debug, Clone)]
pub struct Split {
    /// `taskset -c` list of the servers' cores.
    pub servers: String,
    /// `taskset -c` list of the load generator's cores.
    pub load: String,
    all: String,
}

/// The split of this machine's cores (numbered 0..n), or `None` with fewer than 2 cores or
/// without `taskset`.
pub fn split() -> Option<Split> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 || Command::new("taskset").arg("-V").output().is_err() {
        return None;
    }
    let half = cores / 2;
    let list = |from: usize, to: usize| {
        if from == to {
            from.to_string()
        } else {
            format!("{from}-{to}")
        }
    };
    Some(Split {
        servers: list(0, half - 1),
        load: list(half, cores - 1),
        all: list(0, cores - 1),
    })
}

/// Moves every thread of process `pid` onto `cpus`.
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} {pid}: {status}");
    }
    Ok(())
}

/// A `Command` for `program` that runs on the load generator's cores.
pub fn on_load_cores(split: &Split, program: &str) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", &split.load, program]);
    command
}

/// This process pinned to the load generator's cores; back on every core when dropped.
pub struct SelfPinned {
    all: String,
}

impl SelfPinned {
    /// Pins this process (every thread of it, the async runtime's workers included).
    pub fn new(split: &Split) -> anyhow::Result<Self> {
        pin(std::process::id(), &split.load)?;
        Ok(Self {
            all: split.all.clone(),
        })
    }
}

impl Drop for SelfPinned {
    fn drop(&mut self) {
        let _ = pin(std::process::id(), &self.all);
    }
}
