//! The processes `chaos` starts on loopback (redis-server, optionally an Apache Kafka broker,
//! `holdfast dev` pointed at both) and the seeded schedule of SIGKILLs and restarts it
//! inflicts on them.
//!
//! Everything runs on one dedicated thread that outlives the processes: children are started
//! with a parent-death signal bound to the thread that forked them, and a restart must not
//! block the async runtime. Only processes this thread started are ever killed, by their own
//! pid, and every address is 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use holdfast_platform::process::{die_with_parent, free_port, ping};
use holdfast_testkit::KafkaBroker;
use serde::Serialize;

use crate::mesh::{Server, spawn_server};
use crate::scenario::splitmix;

/// What a fault kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the holdfast process (every service at once), restart it on the same port.
    Holdfast,
    /// SIGKILL redis-server (append-only file, `appendfsync always`), restart it on its file.
    Redis,
    /// SIGKILL redis-server and restart it empty: what a Redis without AOF (or a failover to
    /// a replica that missed everything) does. Inventory rebuilds from its durable truth,
    /// but stock reads and grants just after the restart still see the empty Redis, so it is
    /// off unless asked for.
    RedisNoAof,
    /// SIGKILL the Kafka broker (`--kafka`), restart it on the same ports and log dirs.
    Kafka,
}

impl FaultKind {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Holdfast => "holdfast",
            Self::Redis => "redis",
            Self::RedisNoAof => "redis-no-aof",
            Self::Kafka => "kafka",
        }
    }
}

/// One planned fault: when (from the start of the load), what, and how long the process
/// stays dead before its restart begins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Planned {
    /// Offset from the start of the load, seconds.
    pub at_s: f64,
    /// What is killed.
    pub kind: FaultKind,
    /// Dead time before the restart, seconds.
    pub down_s: f64,
}

/// `count` faults of `kinds` at seeded moments in `[from, until)`, ordered by time. Kinds go
/// round a seeded shuffle, so every kind is hit once before any is hit twice.
pub fn plan(seed: u64, kinds: &[FaultKind], count: usize, from: Duration, until: Duration) -> Vec<Planned> {
    if kinds.is_empty() || until <= from {
        return Vec::new();
    }
    let mut state = seed ^ 0xC4A0_5EED;
    let mut next = move || {
        state = splitmix(state);
        state
    };
    let mut order: Vec<FaultKind> = kinds.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let span = (until - from).as_secs_f64();
    let mut faults: Vec<Planned> = (0..count)
        .map(|i| Planned {
            at_s: from.as_secs_f64() + span * (next() % 1_000_000) as f64 / 1_000_000.0,
            kind: order[i % order.len()],
            down_s: 0.1 + 1.9 * (next() % 1_000) as f64 / 1_000.0,
        })
        .collect();
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    faults
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// What was planned.
    #[serde(flatten)]
    pub planned: Planned,
    /// The pid killed.
    pub pid: u32,
    /// When the kill happened, seconds from the start of the load.
    pub killed_at_s: f64,
    /// How long the restart took until the process served again, seconds.
    pub restart_s: f64,
}

/// What the infrastructure thread reports back.
pub struct Infra {
    /// The mesh's gRPC endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The Kafka bootstrap address, when `--kafka`.
    pub kafka: Option<String>,
    /// Answers the faults once the whole plan ran (or the first restart that failed).
    pub done: tokio::sync::oneshot::Receiver<anyhow::Result<Vec<Injected>>>,
    /// Dropping (or sending on) it stops every process and the thread.
    pub stop: mpsc::Sender<()>,
    /// The thread, to wait for after `stop`.
    pub thread: std::thread::JoinHandle<()>,
}

/// How to start the processes.
#[derive(Debug, Clone)]
pub struct InfraConfig {
    /// The holdfast binary.
    pub holdfast_bin: PathBuf,
    /// Start a Kafka broker and point holdfast at it.
    pub kafka: bool,
    /// Where data and logs go (kept after the run when it failed).
    pub dir: PathBuf,
}

/// Starts the processes on a thread of their own, then, once `go` fires (the load began),
/// runs `faults` against them.
pub async fn start(
    config: InfraConfig,
    faults: Vec<Planned>,
    go: mpsc::Receiver<Instant>,
) -> anyhow::Result<Infra> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("chaos-infra".into())
        .spawn(move || {
            let mut procs = match Procs::start(&config) {
                Ok(procs) => procs,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok((
                procs.endpoint(),
                procs.kafka.as_ref().map(KafkaBroker::bootstrap),
            )));
            let Ok(t0) = go.recv() else { return };
            let _ = done_tx.send(procs.inflict(&faults, t0, &stop_rx));
            // Keep serving until told (the end-state checks read the mesh).
            let _ = stop_rx.recv();
        })?;
    let (endpoint, kafka) = ready_rx.await.context("the chaos infrastructure thread died")??;
    Ok(Infra {
        endpoint,
        kafka,
        done,
        stop,
        thread,
    })
}

/// The running processes.
struct Procs {
    // Taken first when dropped: holdfast stops before its redis-server and broker.
    holdfast: Option<Server>,
    holdfast_port: u16,
    incarnation: u32,
    redis: Child,
    redis_port: u16,
    kafka: Option<KafkaBroker>,
    config: InfraConfig,
}

impl Procs {
    fn start(config: &InfraConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let redis_port = free_port()?;
        let redis = start_redis(&config.dir.join("redis"), redis_port)?;
        let kafka = if config.kafka {
            Some(KafkaBroker::start().context("starting Apache Kafka (run `make deps`)")?)
        } else {
            None
        };
        let holdfast_port = free_port()?;
        let holdfast = start_holdfast(
            config,
            holdfast_port,
            redis_port,
            kafka.as_ref().map(KafkaBroker::bootstrap),
            0,
        )?;
        Ok(Self {
            holdfast: Some(holdfast),
            holdfast_port,
            incarnation: 0,
            redis,
            redis_port,
            kafka,
            config: config.clone(),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.holdfast_port)
    }

    /// Runs the plan; answers what happened, or the first restart that failed.
    fn inflict(
        &mut self,
        faults: &[Planned],
        t0: Instant,
        stop: &mpsc::Receiver<()>,
    ) -> anyhow::Result<Vec<Injected>> {
        let mut injected = Vec::new();
        for fault in faults {
            let at = t0 + Duration::from_secs_f64(fault.at_s);
            // The schedule's clock: wait for the fault's moment unless told to stop.
            if stop.recv_timeout(at.saturating_duration_since(Instant::now()))
                != Err(mpsc::RecvTimeoutError::Timeout)
            {
                break;
            }
            let killed_at_s = t0.elapsed().as_secs_f64();
            let pid = self.kill(fault.kind)?;
            std::thread::sleep(Duration::from_secs_f64(fault.down_s));
            let restarting = Instant::now();
            self.restart(fault.kind).with_context(|| {
                format!(
                    "restarting {} after the fault at {killed_at_s:.1} s",
                    fault.kind.name()
                )
            })?;
            injected.push(Injected {
                planned: *fault,
                pid,
                killed_at_s,
                restart_s: restarting.elapsed().as_secs_f64(),
            });
        }
        Ok(injected)
    }

    fn kill(&mut self, kind: FaultKind) -> anyhow::Result<u32> {
        Ok(match kind {
            FaultKind::Holdfast => {
                let holdfast = self.holdfast.as_mut().context("holdfast is not running")?;
                let pid = holdfast.pid();
                holdfast.kill();
                pid
            }
            FaultKind::Redis | FaultKind::RedisNoAof => {
                let pid = self.redis.id();
                let _ = self.redis.kill();
                let _ = self.redis.wait();
                pid
            }
            FaultKind::Kafka => {
                let kafka = self.kafka.as_mut().context("a kafka fault without --kafka")?;
                let pid = kafka.pid();
                kafka.kill();
                pid
            }
        })
    }

    fn restart(&mut self, kind: FaultKind) -> anyhow::Result<()> {
        match kind {
            FaultKind::Holdfast => {
                self.incarnation += 1;
                self.holdfast = Some(start_holdfast(
                    &self.config,
                    self.holdfast_port,
                    self.redis_port,
                    self.kafka.as_ref().map(KafkaBroker::bootstrap),
                    self.incarnation,
                )?);
            }
            FaultKind::Redis | FaultKind::RedisNoAof => {
                let dir = self.config.dir.join("redis");
                if kind == FaultKind::RedisNoAof {
                    std::fs::remove_dir_all(&dir)?;
                }
                self.redis = start_redis(&dir, self.redis_port)?;
            }
            FaultKind::Kafka => self.kafka.as_mut().context("no broker")?.restart()?,
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        drop(self.holdfast.take());
        // Reaped already (killed mid-fault): its pid may belong to another process by now.
        if let Ok(None) = self.redis.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.redis.id().to_string()])
                .status();
            let _ = self.redis.wait();
        }
    }
}

/// redis-server on `port` with its append-only file fsynced on every write, in `dir`.
fn start_redis(dir: &Path, port: u16) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args([
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("redis.log"))?);
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .context("starting redis-server (run `make deps`)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("redis-server on port {port} exited at start: {status}");
        }
        if ping(port).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("redis-server on port {port} did not answer PING within 30 s");
        }
        // Polling another process's listener: nothing to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `holdfast dev` on `port`, on the given redis-server (and broker), data in the run's dir.
fn start_holdfast(
    config: &InfraConfig,
    port: u16,
    redis_port: u16,
    kafka: Option<String>,
    incarnation: u32,
) -> anyhow::Result<Server> {
    let mut command = Command::new(&config.holdfast_bin);
    command
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0", "--concurrency-limit", "100000"])
        .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
        .arg("--data-dir")
        .arg(config.dir.join("holdfast"));
    if let Some(brokers) = kafka {
        command.args(["--kafka-brokers", &brokers]);
    }
    die_with_parent(&mut command);
    spawn_server(
        command,
        Some(&config.dir.join(format!("holdfast-{incarnation}.log"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_seeded_ordered_in_the_window_and_hits_every_kind() {
        let kinds = [FaultKind::Holdfast, FaultKind::Redis, FaultKind::Kafka];
        let (from, until) = (Duration::from_secs(5), Duration::from_secs(60));
        let faults = plan(7, &kinds, 6, from, until);
        assert_eq!(faults.len(), 6);
        assert!(faults.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        assert!(faults.iter().all(|f| (5.0..60.0).contains(&f.at_s)));
        assert!(faults.iter().all(|f| (0.1..=2.0).contains(&f.down_s)));
        for kind in kinds {
            assert_eq!(faults.iter().filter(|f| f.kind == kind).count(), 2, "{kind:?}");
        }
        assert_eq!(faults, plan(7, &kinds, 6, from, until));
        assert_ne!(faults, plan(8, &kinds, 6, from, until));
        assert!(plan(7, &[], 6, from, until).is_empty());
    }
}
