//! What the JVM engines ([`crate::KafkaBroker`], [`crate::CassandraNode`]) share: where
//! `scripts/install-deps.sh` put their jars, and a child JVM killed by pid when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_platform::process::die_with_parent;

/// Apache Kafka (`org.apache.kafka:kafka_2.13`) as pinned in `scripts/install-deps.sh`.
pub const KAFKA_VERSION: &str = "4.4.0";
/// Apache Cassandra (`org.apache.cassandra:cassandra-all`) as pinned in `scripts/install-deps.sh`.
pub const CASSANDRA_VERSION: &str = "5.0.4";

/// `$HOLDFAST_CACHE`, else `$HOME/.cache/holdfast`: the cache outside the clone.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOLDFAST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("holdfast")
}

/// The classpath (`<cache>/<engine>-<version>/libs/*`) of an engine that install-deps
/// fetched completely (it writes `.complete` last).
pub(crate) fn classpath(engine: &str, version: &str) -> anyhow::Result<String> {
    let home = cache_dir().join(format!("{engine}-{version}"));
    anyhow::ensure!(
        home.join(".complete").is_file(),
        "{engine} {version} is not installed under {}: run `make deps` (scripts/install-deps.sh)",
        home.display()
    );
    Ok(format!("{}/*", home.join("libs").display()))
}

/// JVM flags for a short-lived test engine: a small heap, the serial collector (one core is
/// plenty and it starts no GC threads), C1 only (startup matters more than peak speed on
/// two shared cores) and the JDK's class-data archive.
pub(crate) fn quick_start_flags(heap: &str, full_jit: bool) -> Vec<String> {
    let mut flags = vec![
        format!("-Xmx{heap}"),
        "-Xss512k".into(),
        "-XX:+UseSerialGC".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
        "-Xshare:auto".into(),
        "-Djava.awt.headless=true".into(),
    ];
    if !full_jit {
        flags.push("-XX:TieredStopAtLevel=1".into());
    }
    flags
}

/// A JVM child process: stdout and stderr go to `<dir>/<name>.out`; killed (SIGKILL, by
/// its pid) when dropped, and by the kernel (SIGTERM) if the thread that started it exits,
/// so start engines on the test's own thread, never inside `spawn_blocking` (whose threads
/// exit when idle).
#[derive(Debug)]
pub(crate) struct Jvm {
    child: Child,
    name: &'static str,
    out: PathBuf,
}

impl Jvm {
    /// Runs `java <args>` in `dir` with its output in `<dir>/<name>.out`.
    pub(crate) fn spawn(name: &'static str, dir: &Path, args: &[String]) -> anyhow::Result<Self> {
        let out = dir.join(format!("{name}.out"));
        let log = std::fs::File::create(&out)?;
        let mut command = Command::new("java");
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start java for {name} ({e}); run `make deps`"))?;
        Ok(Self { child, name, out })
    }

    /// Runs `java <args>` to completion (a tool such as Kafka's storage formatter).
    pub(crate) fn run(name: &'static str, dir: &Path, args: &[String]) -> anyhow::Result<()> {
        let mut jvm = Self::spawn(name, dir, args)?;
        let status = jvm.child.wait()?;
        anyhow::ensure!(
            status.success(),
            "{name} failed ({status}): {}",
            jvm.output_tail()
        );
        Ok(())
    }

    /// The directory it runs in (where its output file is).
    pub(crate) fn dir(&self) -> &Path {
        self.out.parent().unwrap_or(Path::new("."))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until `127.0.0.1:port` accepts connections, failing early if the JVM exits.
    pub(crate) fn wait_listening(&mut self, port: u16, limit: Duration) -> anyhow::Result<()> {
        self.wait_answering(port, limit, |port| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Polls `answers(port)` until it says the JVM serves on `port`, failing early if the
    /// JVM exits.
    pub(crate) fn wait_answering(
        &mut self,
        port: u16,
        limit: Duration,
        mut answers: impl FnMut(u16) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited at start ({status}): {}", self.name, self.output_tail());
            }
            if answers(port) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not answer on port {port} within {limit:?}: {}",
                self.name,
                self.output_tail()
            );
            // Polling an external process's listener; there is nothing to wait on.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines the JVM printed, for error messages.
    pub(crate) fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("(last lines of {})\n{tail}", self.out.display())
    }

    /// SIGKILL by pid and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        self.kill();
    }
}
