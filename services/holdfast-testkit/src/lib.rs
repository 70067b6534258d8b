//! Real engines and real servers for tests.
//!
//! Every guard starts the real thing on free loopback ports and stops it when dropped:
//! [`RedisServer`] (one `redis-server`), [`RedisCluster`] (three primaries joined by
//! `redis-cli --cluster create`), [`KafkaBroker`] (Apache Kafka in KRaft mode),
//! [`CassandraNode`] (Apache Cassandra 5, the CQL database behind the ScyllaDB backend's
//! tests; see [`CqlNodes`]) and [`SpawnedServer`] (a holdfast [`GrpcServer`] on
//! `127.0.0.1:0`). The JVM engines run from the jars `make deps` fetched from Maven Central
//! into `~/.cache/holdfast` (outside the clone).

mod bearer;
mod cassandra;
mod jvm;
mod kafka;

pub use bearer::{BearerChannel, DevTokens, TokenPicker};
pub use cassandra::{CassandraNode, CqlNodes};
pub use jvm::{CASSANDRA_VERSION, KAFKA_VERSION};
pub use kafka::KafkaBroker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use holdfast_platform::process::RedisProcess;
use holdfast_platform::{GrpcServer, RedisUrl};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A scratch directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `holdfast-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "holdfast-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One real `redis-server` with append-only persistence, on a free port.
#[derive(Debug)]
pub struct RedisServer {
    process: Option<RedisProcess>,
    port: u16,
    // Declared last: dropped after the process stopped writing into it.
    dir: TempDir,
}

impl RedisServer {
    /// Starts it and waits until it answers PING.
    pub fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("redis")?;
        let process = RedisProcess::start(dir.path(), &[])?;
        Ok(Self {
            port: process.port(),
            process: Some(process),
            dir,
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> RedisUrl {
        RedisUrl::Standalone(format!("redis://127.0.0.1:{}", self.port))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM, so the append-only file is complete) and starts it again on
    /// the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
        self.process = Some(RedisProcess::start_on(self.dir.path(), self.port, &[])?);
        Ok(())
    }

    /// Runs `redis-cli` against it and returns stdout (for assertions on raw state).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        redis_cli(self.port, args)
    }
}

/// Runs `redis-cli -p port args...`, returning stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Three real `redis-server` primaries joined into one Redis Cluster (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
    _dirs: Vec<TempDir>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node reports `cluster_state:ok`.
    pub fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let dir = TempDir::new("redis-cluster")?;
            nodes.push(RedisProcess::start(
                dir.path(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?);
            dirs.push(dir);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes, _dirs: dirs };
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn wait_ok(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut all_ok = true;
            for node in &self.nodes {
                let info = redis_cli(node.port(), &["cluster", "info"])?;
                all_ok &= info.contains("cluster_state:ok");
            }
            if all_ok {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "cluster did not reach cluster_state:ok in {limit:?}"
            );
            // Gossip converges on its own schedule; there is no event to wait on from outside.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cluster://` URL naming every node.
    pub fn url(&self) -> RedisUrl {
        RedisUrl::Cluster(
            self.nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port()))
                .collect(),
        )
    }

    /// Ports of the three primaries.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisProcess::port).collect()
    }
}

/// A holdfast gRPC server running in this process on `127.0.0.1:<free port>`.
pub struct SpawnedServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl SpawnedServer {
    /// Binds `127.0.0.1:0`, marks health SERVING and serves until [`SpawnedServer::shutdown`] or drop.
    pub async fn start(server: GrpcServer) -> anyhow::Result<Self> {
        Self::start_with(server, true).await
    }

    /// Like [`SpawnedServer::start`]; with `ready = false` health stays NOT_SERVING.
    pub async fn start_with(server: GrpcServer, ready: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, server, ready).await
    }

    /// Serves on a listener the caller bound (when services must know their own address first).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        server: GrpcServer,
        ready: bool,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        if ready {
            server.health().ready().await;
        }
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected channel.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.endpoint())?
            .connect()
            .await?)
    }

    /// Sends the shutdown signal (the server drains) without waiting for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits until the server has drained.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.await??;
        }
        Ok(())
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}
