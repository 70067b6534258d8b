//! [`KafkaBroker`]: Apache Kafka in KRaft mode (no ZooKeeper), one node that is both
//! broker and controller, on free loopback ports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_platform::events::{BusConfig, DEFAULT_PARTITIONS, ensure_topics};
use holdfast_platform::process::free_port;

use crate::TempDir;
use crate::jvm::{Jvm, KAFKA_VERSION, classpath, quick_start_flags};

/// How long a broker may take to listen: generous, since two cores are shared with builds.
const START_LIMIT: Duration = Duration::from_secs(120);

/// A real Apache Kafka broker ([`KAFKA_VERSION`](crate::KAFKA_VERSION), from Maven Central via
/// `make deps`): storage formatted with Kafka's own `StorageTool`, then `kafka.Kafka` with a
/// generated `server.properties`, single node, logs in a temp dir. Killed by pid when
/// dropped, and by the kernel if the test process dies first.
///
/// Like a production cluster it does not create topics on first use
/// (`auto.create.topics.enable=false`): the bus creates the topics it uses.
#[derive(Debug)]
pub struct KafkaBroker {
    jvm: Jvm,
    port: u16,
    // The broker's command line, for a restart on the same ports and data.
    args: Vec<String>,
    // Declared last: removed after the broker stopped writing into it.
    _dir: TempDir,
}

impl KafkaBroker {
    /// Starts a broker tuned to start fast (C1 JIT only) and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Like [`KafkaBroker::start`] with the full JIT: slower to start, faster once warm
    /// (for benchmarks).
    pub fn start_full_jit() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(full_jit: bool) -> anyhow::Result<Self> {
        let classpath = classpath("kafka", KAFKA_VERSION)?;
        let dir = TempDir::new("kafka")?;
        let port = free_port()?;
        let controller = free_port()?;
        let properties = dir.path().join("server.properties");
        std::fs::write(&properties, server_properties(port, controller, &dir))?;

        let mut args = quick_start_flags("512m", full_jit);
        args.extend(["-Xms64m".into(), "-cp".into(), classpath]);
        let props = properties.display().to_string();

        let mut format = args.clone();
        format.extend(
            [
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                &format!("--cluster-id={}", cluster_id(port)),
                "--config",
                &props,
            ]
            .map(String::from),
        );
        Jvm::run("kafka-storage-format", dir.path(), &format)?;

        args.extend(["kafka.Kafka".into(), props]);
        let mut jvm = Jvm::spawn("kafka", dir.path(), &args)?;
        jvm.wait_listening(port, START_LIMIT)?;
        Ok(Self {
            jvm,
            port,
            args,
            _dir: dir,
        })
    }

    /// SIGKILL (by pid) and reap: a crash, for chaos tests. [`KafkaBroker::restart`] brings
    /// it back.
    pub fn kill(&mut self) {
        self.jvm.kill();
    }

    /// Starts the broker again on the same ports with the same data (after
    /// [`KafkaBroker::kill`]; kills a running one first) and waits until it listens. Call it
    /// on a thread that outlives the broker (see the kill-with-parent note on the JVM).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.jvm.kill();
        let dir = self.jvm.dir().to_path_buf();
        self.jvm = Jvm::spawn("kafka", &dir, &self.args)?;
        self.jvm.wait_listening(self.port, START_LIMIT)
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers` / `--kafka-brokers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.jvm.pid()
    }

    /// A bus configuration pointing at this broker.
    pub fn bus(&self) -> BusConfig {
        BusConfig::Kafka {
            brokers: self.bootstrap(),
        }
    }

    /// Creates `topics` (those missing) with the bus's default partition count, for tests
    /// that produce with a client of their own before any holdfast code touched the topic.
    pub async fn create_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        ensure_topics(&self.bootstrap(), topics, DEFAULT_PARTITIONS).await?;
        Ok(())
    }
}

/// One node that is broker and controller, sized for a test: one partition for Kafka's
/// internal topics, no rebalance delay, a replication factor of 1 everywhere.
fn server_properties(port: u16, controller: u16, dir: &TempDir) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={logs}
num.partitions={DEFAULT_PARTITIONS}
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.enable=false
",
        logs = dir.path().join("data").display()
    )
}

/// A Kafka cluster id: 16 bytes, base64url without padding, unique per start. Its first
/// character is a letter: an id starting with `-` reads as an option to the storage tool.
fn cluster_id(port: u16) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
    bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    bytes[12..14].copy_from_slice(&port.to_le_bytes());
    // Top bit clear: the first character is one of `A`-`Z`, `a`-`f`.
    bytes[0] &= 0x7f;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut bits = 0u32;
    let mut held = 0u32;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            out.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_base64url_characters_starting_with_a_letter() {
        for port in 0..2000 {
            let id = super::cluster_id(port);
            assert_eq!(id.len(), 22, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{id}"
            );
            assert!(id.starts_with(|c: char| c.is_ascii_alphabetic()), "{id}");
        }
    }
}
