//! Where the load goes: a running mesh (`--target URL`) or a `holdfast dev` this process
//! starts on free ports with its own redis-server in a temporary data directory (`--local`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use holdfast_proto::cart::v1::cart_service_client::CartServiceClient;
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use holdfast_proto::notifications::v1::notification_service_client::NotificationServiceClient;
use holdfast_proto::orders::v1::order_service_client::OrderServiceClient;
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_testkit::{BearerChannel as Channel, DevTokens, TokenPicker};

/// Which mesh to load.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// A running mesh, e.g. http://127.0.0.1:50051 (every service on one address, as
    /// `holdfast dev` or the mesh's gateway serves them); with `flash-sale --regions`, one
    /// per region: na=http://...,eu=http://...
    #[arg(long, value_name = "URL", required_unless_present = "local")]
    pub target: Option<String>,
    /// Start `holdfast dev` on free loopback ports, with its own redis-server and SQLite in a
    /// temporary directory, and stop it at the end.
    #[arg(long, conflicts_with = "target")]
    pub local: bool,
    /// The holdfast binary `--local` runs (default: the one next to this executable).
    #[arg(long, value_name = "PATH")]
    pub holdfast_bin: Option<PathBuf>,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Bearer token every call to --target carries (a `service` token: it acts for every
    /// simulated customer). `--local` mints its own from the dev key in its data dir.
    #[arg(long, env = "HOLDFAST_LOAD_TOKEN", value_name = "JWT", requires = "target")]
    pub token: Option<String>,
    /// Bearer token for admin RPCs (stock, products) on --target; default --token.
    #[arg(
        long,
        env = "HOLDFAST_LOAD_ADMIN_TOKEN",
        value_name = "JWT",
        requires = "target"
    )]
    pub admin_token: Option<String>,
    /// An extra flag for the `holdfast dev` that `--local` starts (repeat it), e.g.
    /// `--dev-arg=--checkout-capacity=4`.
    #[arg(
        long = "dev-arg",
        value_name = "FLAG",
        allow_hyphen_values = true,
        requires = "local"
    )]
    pub dev_args: Vec<String>,
}

/// The token each RPC carries: `--local` mints service and admin tokens from the dev key;
/// `--target` uses --token, and --admin-token for admin RPCs.
fn picker(args: &TargetArgs, dev: Option<&Dev>) -> anyhow::Result<TokenPicker> {
    let tables = holdfast::authz_tables();
    if let Some(dev) = dev {
        return Ok(DevTokens::new(&dev.data_dir)?.operator(&tables));
    }
    let token = args.token.clone();
    let admin = args.admin_token.clone().or_else(|| token.clone());
    let rules: std::collections::HashMap<String, holdfast_platform::auth::Rule> =
        tables.iter().flat_map(|t| t.paths()).collect();
    Ok(std::sync::Arc::new(move |path: &str| match rules.get(path) {
        Some(holdfast_platform::auth::Rule::Admin) => admin.clone(),
        _ => token.clone(),
    }))
}

/// A connected mesh; stops the `holdfast dev` it started, if any, when dropped.
pub struct Mesh {
    /// The gRPC endpoint, `http://host:port`.
    pub endpoint: String,
    channels: Vec<Channel>,
    // Dropped last: the channels close before the server goes.
    _dev: Option<Dev>,
}

impl Mesh {
    /// Connects to `--target`, or starts `holdfast dev` for `--local`.
    pub async fn connect(args: &TargetArgs) -> anyhow::Result<Self> {
        let (endpoint, dev) = match &args.target {
            Some(url) => (url.trim_end_matches('/').to_string(), None),
            None => {
                let extra: Vec<&str> = args.dev_args.iter().map(String::as_str).collect();
                let dev = start_dev_with(&holdfast_bin(args.holdfast_bin.as_ref())?, &extra)?;
                (format!("http://{}", dev.addr), Some(dev))
            }
        };
        let pick = picker(args, dev.as_ref())?;
        Self::open(endpoint, pick, args.connections, dev).await
    }

    /// Connects to a `holdfast dev` this process started (tokens minted from its dev key);
    /// the mesh stops it when dropped.
    pub async fn over_dev(dev: Dev, connections: usize) -> anyhow::Result<Self> {
        let pick = DevTokens::new(&dev.data_dir)?.operator(&holdfast::authz_tables());
        Self::open(format!("http://{}", dev.addr), pick, connections, Some(dev)).await
    }

    async fn open(
        endpoint: String,
        pick: TokenPicker,
        connections: usize,
        dev: Option<Dev>,
    ) -> anyhow::Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
                .tcp_nodelay(true)
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            channels.push(Channel::new(channel, pick.clone()));
        }
        Ok(Self {
            endpoint,
            channels,
            _dev: dev,
        })
    }

    /// The `i`-th caller's connection (round robin).
    pub fn channel(&self, i: u64) -> Channel {
        self.channels[(i % self.channels.len() as u64) as usize].clone()
    }

    /// An inventory client on connection `i`.
    pub fn inventory(&self, i: u64) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel(i))
    }

    /// A catalog client on connection `i`.
    pub fn catalog(&self, i: u64) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel(i))
    }

    /// A cart client on connection `i`.
    pub fn cart(&self, i: u64) -> CartServiceClient<Channel> {
        CartServiceClient::new(self.channel(i))
    }

    /// An orders client on connection `i`.
    pub fn orders(&self, i: u64) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel(i))
    }

    /// A notifications client on connection `i`.
    pub fn notifications(&self, i: u64) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel(i))
    }

    /// A payments client on connection `i`.
    pub fn payments(&self, i: u64) -> PaymentsServiceClient<Channel> {
        PaymentsServiceClient::new(self.channel(i))
    }
}

/// The holdfast binary: `explicit`, else the one next to this executable.
pub fn holdfast_bin(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = explicit {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("holdfast");
    if !bin.exists() {
        bail!(
            "no holdfast binary at {}; build it (cargo build -p holdfast) or pass --holdfast-bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// A holdfast process started by this one: SIGTERM and wait when dropped.
pub struct Server {
    child: Child,
    /// Where it serves gRPC, `host:port`.
    pub addr: String,
    /// Where its admin listener (`/metrics`, `/healthz`) is, when its ready line says.
    pub admin: Option<String>,
    // Held open so a later line on its stdout never meets a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL by pid and reap: a crash, for `chaos`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Reaped already (killed): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Spawns `command` and waits for its one ready line ("holdfast serving ... on ADDR ...").
/// Its warnings go to `log` when set, else to this process's stderr.
pub fn spawn_server(mut command: Command, log: Option<&Path>) -> anyhow::Result<Server> {
    if let Some(log) = log {
        command.stderr(std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?);
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let addr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .map(str::to_string);
    let admin = line
        .split(" admin on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string);
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        let logged = log
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        bail!("{program} did not become ready (first line {line:?}){logged}");
    };
    Ok(Server {
        child,
        addr,
        admin,
        _stdout: stdout,
    })
}

/// `holdfast dev` with its data (redis-server, SQLite) and its log in a temporary directory.
/// Dropping it stops the server and prints how many lines it logged, with the last few.
pub struct Dev {
    server: Option<Server>,
    /// Where it serves gRPC, `host:port`.
    pub addr: String,
    /// Where its admin listener (`/metrics`) is, `host:port`.
    pub admin: String,
    /// Its --data-dir (the dev signing key is there).
    pub data_dir: PathBuf,
    log: PathBuf,
    // Declared last: removed once the process (and its redis-server) stopped.
    _data: TempData,
}

impl Drop for Dev {
    fn drop(&mut self) {
        drop(self.server.take());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        if !lines.is_empty() {
            eprintln!(
                "holdfast dev (--local) logged {} lines (warnings and errors); the last ones:",
                lines.len()
            );
            for line in &lines[lines.len().saturating_sub(3)..] {
                eprintln!("  {line}");
            }
        }
    }
}

struct TempData(PathBuf);

impl Drop for TempData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `holdfast dev` on free loopback ports in a fresh temporary data directory, with
/// extra flags (e.g. `--payments-latency 50ms`).
pub fn start_dev_with(bin: &Path, extra: &[&str]) -> anyhow::Result<Dev> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let data = TempData(std::env::temp_dir().join(format!(
        "holdfast-load-dev-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let _ = std::fs::remove_dir_all(&data.0);
    std::fs::create_dir_all(&data.0)?;
    let log = data.0.join("holdfast.log");
    let mut command = Command::new(bin);
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // The harness measures the server, not its admission limit.
        .args(["--concurrency-limit", "100000"])
        .arg("--data-dir")
        .arg(&data.0)
        .args(extra);
    let server = spawn_server(command, Some(&log))?;
    let admin = server
        .admin
        .clone()
        .context("holdfast dev's ready line names no admin listener")?;
    Ok(Dev {
        addr: server.addr.clone(),
        admin,
        data_dir: data.0.clone(),
        server: Some(server),
        log,
        _data: data,
    })
}
