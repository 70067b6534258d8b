//! [`CassandraNode`]: Apache Cassandra 5 as the CQL database behind the ScyllaDB backend's
//! tests, and [`CqlNodes`]: `SCYLLA_NODES` when set, else such a node.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use holdfast_platform::process::free_port;

use crate::TempDir;
use crate::jvm::{CASSANDRA_VERSION, Jvm, classpath, quick_start_flags};

/// How long a node may take to open its native port: Cassandra needs several seconds on an
/// idle machine and much longer on two cores shared with builds.
const START_LIMIT: Duration = Duration::from_secs(240);

/// How many times [`CassandraNode::start`] tries fresh ports when a picked one was taken.
const PORT_ATTEMPTS: u32 = 3;

/// What Cassandra says before it exits when its storage port (the first) or its native port
/// (the JVM's own words) is taken.
const PORT_TAKEN: [&str; 2] = ["is in use by another process", "Address already in use"];

/// The module exports and opens Cassandra's own `jvm17-server.options` asks for on Java 17.
const JAVA17_MODULE_FLAGS: &[&str] = &[
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
];

/// A real Apache Cassandra node ([`CASSANDRA_VERSION`](crate::CASSANDRA_VERSION), from Maven
/// Central via `make deps`), run as `org.apache.cassandra.service.CassandraDaemon` with a
/// generated `cassandra.yaml`: loopback only, free native and storage ports, one token, no
/// peers, no authentication, storage and logs (`system.log`) under a temp dir. It speaks the
/// CQL native protocol the `scylla` driver uses, with LWTs, `USING TTL` and
/// `USING TIMESTAMP`. Killed by pid when dropped.
#[derive(Debug)]
pub struct CassandraNode {
    jvm: Jvm,
    port: u16,
    // Declared last: removed after the node stopped writing into it.
    _dir: TempDir,
}

impl CassandraNode {
    /// Starts a node and waits until its native (CQL) port answers a CQL `OPTIONS` request
    /// (the driver's own first request) with `SUPPORTED`: an accepted TCP connection alone
    /// can come before the native transport serves requests.
    ///
    /// Its ports are picked free and bound by the JVM seconds later, so another process (a
    /// test running beside this one) may take one in between; Cassandra then exits at start
    /// saying the port is in use, and the node is started again on fresh ports (up to
    /// [`PORT_ATTEMPTS`] times).
    pub fn start() -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_on_free_ports() {
                Err(error)
                    if attempt < PORT_ATTEMPTS
                        && PORT_TAKEN.iter().any(|says| error.to_string().contains(says)) =>
                {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_on_free_ports() -> anyhow::Result<Self> {
        let classpath = classpath("cassandra", CASSANDRA_VERSION)?;
        let dir = TempDir::new("cassandra")?;
        let port = free_port()?;
        let storage = free_port()?;
        let yaml = dir.path().join("cassandra.yaml");
        std::fs::write(&yaml, cassandra_yaml(&dir, port, storage))?;
        let logback = dir.path().join("logback.xml");
        std::fs::write(&logback, logback_xml(&dir))?;

        let mut args = quick_start_flags("768m", false);
        args.push("-Xms256m".into());
        args.extend(JAVA17_MODULE_FLAGS.iter().map(|f| (*f).to_string()));
        args.extend([
            format!("-Dcassandra.config=file://{}", yaml.display()),
            format!("-Dlogback.configurationFile={}", logback.display()),
            format!("-Dcassandra.logdir={}", dir.path().display()),
            format!("-Dcassandra.storagedir={}", dir.path().display()),
            "-Dcassandra-foreground=yes".into(),
            // One node, no peers: nothing to wait for.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0".into(),
            "-Dcassandra.ring_delay_ms=100".into(),
            "-Dcassandra.superuser_setup_delay_ms=0".into(),
            "-cp".into(),
            classpath,
            "org.apache.cassandra.service.CassandraDaemon".into(),
        ]);
        let mut jvm = Jvm::spawn("cassandra", dir.path(), &args)?;
        jvm.wait_answering(port, START_LIMIT, answers_cql)
            .map_err(|e| anyhow::anyhow!("{e}\n(see {}/system.log)", dir.path().display()))?;
        Ok(Self { jvm, port, _dir: dir })
    }

    /// `127.0.0.1:<native port>`, a contact point for the `scylla` driver.
    pub fn contact_point(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The native (CQL) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.jvm.pid()
    }
}

/// CQL native protocol v4: a request frame's version byte, and the `OPTIONS` and
/// `SUPPORTED` opcodes.
const CQL_V4_REQUEST: u8 = 0x04;
const CQL_OPTIONS: u8 = 0x05;
const CQL_SUPPORTED: u8 = 0x06;

/// Whether `127.0.0.1:port` answers an `OPTIONS` frame with a `SUPPORTED` one (a 9-byte
/// header: version, flags, stream, opcode, body length).
fn answers_cql(port: u16) -> bool {
    let exchange = || -> std::io::Result<[u8; 9]> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(&[CQL_V4_REQUEST, 0, 0, 1, CQL_OPTIONS, 0, 0, 0, 0])?;
        let mut header = [0u8; 9];
        stream.read_exact(&mut header)?;
        Ok(header)
    };
    exchange().is_ok_and(|header| header[0] == (0x80 | CQL_V4_REQUEST) && header[4] == CQL_SUPPORTED)
}

/// One node, sized for two shared cores: one token, few threads, small caches and
/// memtables, periodic commit-log sync, generous request timeouts (a loaded machine must
/// not turn into timeouts the code under test never sees in production).
fn cassandra_yaml(dir: &TempDir, port: u16, storage: u16) -> String {
    let d = dir.path().display();
    format!(
        "cluster_name: holdfast-test
num_tokens: 1
initial_token: 0
allocate_tokens_for_local_replication_factor: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
data_file_directories: [{d}/data]
commitlog_directory: {d}/commitlog
saved_caches_directory: {d}/saved_caches
hints_directory: {d}/hints
cdc_raw_directory: {d}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: \"127.0.0.1:{storage}\"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage}
native_transport_port: {port}
start_native_transport: true
endpoint_snitch: SimpleSnitch
dynamic_snitch: false
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 2
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
counter_cache_size: 0MiB
prepared_statements_cache_size: 8MiB
auto_snapshot: false
snapshot_before_compaction: false
hinted_handoff_enabled: false
disk_access_mode: mmap_index_only
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 10000ms
counter_write_request_timeout: 10000ms
cas_contention_timeout: 10000ms
truncate_request_timeout: 60000ms
request_timeout: 20000ms
"
    )
}

/// Cassandra's log at INFO in `<dir>/system.log`; nothing on the test's output.
fn logback_xml(dir: &TempDir) -> String {
    format!(
        r#"<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{}/system.log</file>
    <encoder><pattern>%d %-5level [%thread] %logger{{20}} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"#,
        dir.path().display()
    )
}

/// The CQL contact points the ScyllaDB backend's tests use: `SCYLLA_NODES`
/// (`host:port,...`, e.g. a real ScyllaDB cluster) when set, else a [`CassandraNode`]
/// started here.
#[derive(Debug)]
pub enum CqlNodes {
    /// Contact points from `SCYLLA_NODES`.
    External(Vec<String>),
    /// A node this test started (stopped when dropped).
    Local(CassandraNode),
}

impl CqlNodes {
    /// `SCYLLA_NODES` if set and not empty, else a new [`CassandraNode`].
    pub fn from_env_or_start() -> anyhow::Result<Self> {
        if let Some(nodes) = std::env::var("SCYLLA_NODES")
            .ok()
            .filter(|n| !n.trim().is_empty())
        {
            return Ok(Self::External(
                nodes.split(',').map(|n| n.trim().to_string()).collect(),
            ));
        }
        Ok(Self::Local(CassandraNode::start()?))
    }

    /// The contact points, `host:port` each.
    pub fn contact_points(&self) -> Vec<String> {
        match self {
            Self::External(nodes) => nodes.clone(),
            Self::Local(node) => vec![node.contact_point()],
        }
    }

    /// `scylla://host:port,...`, for `--store` / `HOLDFAST_STORE`.
    pub fn store_url(&self) -> String {
        format!("scylla://{}", self.contact_points().join(","))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_port_that_accepts_but_does_not_speak_cql_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut frame = [0u8; 9];
            stream.read_exact(&mut frame).unwrap();
            // Answers with a frame that is not SUPPORTED (an ERROR, opcode 0x00).
            stream.write_all(&[0x84, 0, 0, 1, 0x00, 0, 0, 0, 0]).unwrap();
            frame
        });
        assert!(!answers_cql(port));
        let asked = peer.join().unwrap();
        assert_eq!(asked, [0x04, 0, 0, 1, 0x05, 0, 0, 0, 0], "an OPTIONS frame");
    }
}
