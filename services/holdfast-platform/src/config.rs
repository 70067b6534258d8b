//! Configuration every holdfast service understands (12-factor: each flag is also the env
//! var `HOLDFAST_<FLAG>`), validated at start-up so a bad value exits 64 with one line
//! naming the flag, before anything is bound or connected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::cors::CorsArgs;
pub use crate::duration::parse_duration;
use crate::redact::{redact_text, redact_url};
use crate::tls::TlsArgs;

/// `EX_USAGE` from sysexits.h: the process was started with bad configuration.
pub const EXIT_CONFIG: i32 = 64;
/// `EX_UNAVAILABLE` from sysexits.h: a dependency (Redis, the store) cannot be reached.
pub const EXIT_UNAVAILABLE: i32 = 69;

/// Flags shared by `holdfast dev` and `holdfast serve <service>`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address for gRPC and grpc-web (HTTP/2 and HTTP/1.1 on the same port).
    #[arg(
        long,
        env = "HOLDFAST_LISTEN",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Address for the admin HTTP endpoint (`/metrics`, `/healthz`).
    #[arg(
        long,
        env = "HOLDFAST_ADMIN_LISTEN",
        default_value = "127.0.0.1:9464",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,

    /// Redis: `redis://host:port[/db]` or `redis-cluster://host:port,host:port,...`.
    /// Unset under `holdfast dev` means "start a redis-server of our own".
    #[arg(long, env = "HOLDFAST_REDIS_URL", value_name = "URL", value_parser = RedisUrl::parse)]
    pub redis_url: Option<RedisUrl>,

    /// Kafka bootstrap brokers, `host:port,...`. Unset means the in-process event bus.
    #[arg(long, env = "HOLDFAST_KAFKA_BROKERS", value_name = "HOSTS", value_parser = parse_brokers)]
    pub kafka_brokers: Option<String>,

    /// Where the other services are (for the services that call them).
    #[command(flatten)]
    pub peers: PeerArgs,

    /// TLS on the listener and to peers (`--tls-*`).
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Browser origins allowed over grpc-web (`--cors-origin`).
    #[command(flatten)]
    pub cors: CorsArgs,

    /// Region this process serves; stamped on every event.
    #[arg(long, env = "HOLDFAST_REGION", default_value = "local", value_parser = parse_region)]
    pub region: String,

    /// Log format on stderr.
    #[arg(long, env = "HOLDFAST_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,

    /// Longest any one RPC may run before it is answered DEADLINE_EXCEEDED.
    #[arg(long, env = "HOLDFAST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// RPCs served at once by this process; beyond it new calls are shed with UNAVAILABLE.
    #[arg(long, env = "HOLDFAST_CONCURRENCY_LIMIT", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency_limit: u32,

    /// After SIGTERM: how long to keep serving while health says NOT_SERVING, so load
    /// balancers stop routing here before the listener closes.
    #[arg(long, env = "HOLDFAST_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// After the listener closes: how long in-flight calls get to finish.
    #[arg(long, env = "HOLDFAST_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Directory for embedded engines' data (`holdfast dev`): redis-server files, SQLite.
    #[arg(long, env = "HOLDFAST_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Where the services a service calls are. Default for each: this process, called
/// in-process (no socket), which is right when that service runs here too (`holdfast dev`).
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// CatalogService for services that call it (cart, orders). Default: this process,
    /// called in-process, which is right when catalog runs here too (`holdfast dev`).
    #[arg(long, env = "HOLDFAST_CATALOG_URL", value_name = "URL", value_parser = parse_http_url)]
    pub catalog_url: Option<String>,

    /// InventoryService for services that call it (cart, orders). Default: this process (in-process).
    #[arg(long, env = "HOLDFAST_INVENTORY_URL", value_name = "URL", value_parser = parse_http_url)]
    pub inventory_url: Option<String>,

    /// CartService for services that call it (orders). Default: this process (in-process).
    #[arg(long, env = "HOLDFAST_CART_URL", value_name = "URL", value_parser = parse_http_url)]
    pub cart_url: Option<String>,

    /// PaymentsService for services that call it (orders). Default: this process (in-process).
    #[arg(long, env = "HOLDFAST_PAYMENTS_URL", value_name = "URL", value_parser = parse_http_url)]
    pub payments_url: Option<String>,

    /// WarehouseService for services that call it (orders, to cancel). Default: this process (in-process).
    #[arg(long, env = "HOLDFAST_WAREHOUSE_URL", value_name = "URL", value_parser = parse_http_url)]
    pub warehouse_url: Option<String>,

    /// Call the services of this process (peers without a URL) over loopback gRPC on
    /// --listen instead of in-process (for comparison and tests).
    #[arg(long, env = "HOLDFAST_PEERS_OVER_GRPC")]
    pub peers_over_grpc: bool,

    /// In-process calls in flight to one upstream service (inventory, catalog, ...) at once;
    /// more wait for a slot within their deadline (never shed: they were admitted already).
    #[arg(long, env = "HOLDFAST_PEER_CONCURRENCY", default_value_t = DEFAULT_PEER_CONCURRENCY,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub peer_concurrency: u32,
}

/// `--peer-concurrency`'s default.
pub const DEFAULT_PEER_CONCURRENCY: u32 = 512;

impl Default for PeerArgs {
    fn default() -> Self {
        Self {
            catalog_url: None,
            inventory_url: None,
            cart_url: None,
            payments_url: None,
            warehouse_url: None,
            peers_over_grpc: false,
            peer_concurrency: DEFAULT_PEER_CONCURRENCY,
        }
    }
}

/// Where Redis lives. Display and Debug hide credentials ([`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// One server (or a primary), as a `redis://` URL.
    Standalone(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl RedisUrl {
    /// Parses `redis://host:port[/db]` or `redis-cluster://host:port,host:port`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix("redis-cluster://") {
            let nodes: Vec<String> = rest.split(',').map(str::trim).map(String::from).collect();
            if nodes.is_empty() || nodes.iter().any(|n| parse_host_port(n).is_err()) {
                return Err(format!(
                    "expected redis-cluster://host:port,host:port, got {:?}",
                    redact_url(raw)
                ));
            }
            Ok(Self::Cluster(nodes))
        } else if let Some(rest) = raw.strip_prefix("redis://") {
            let authority = rest.split('/').next().unwrap_or_default();
            let host_port = authority.rsplit('@').next().unwrap_or_default();
            parse_host_port(host_port).map_err(|e| format!("{e} in {:?}", redact_url(raw)))?;
            Ok(Self::Standalone(raw.to_string()))
        } else {
            Err(format!(
                "expected redis:// or redis-cluster://, got {:?}",
                redact_url(raw)
            ))
        }
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(url) => f.write_str(&redact_url(url)),
            Self::Cluster(nodes) => write!(
                f,
                "{}",
                redact_url(&format!("redis-cluster://{}", nodes.join(",")))
            ),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

fn parse_host_port(raw: &str) -> Result<(), String> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("missing :port in {:?}", redact_url(raw)))?;
    if host.is_empty() {
        return Err(format!("missing host in {:?}", redact_url(raw)));
    }
    if host.contains('@') {
        // Only redis:// URLs carry credentials; anywhere else they would reach a resolver
        // (and its error messages) as part of a host name.
        return Err(format!("credentials are not accepted in {:?}", redact_url(raw)));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .map(|_| ())
        .ok_or_else(|| format!("bad port {port:?}"))
}

fn parse_brokers(raw: &str) -> Result<String, String> {
    for broker in raw.split(',') {
        parse_host_port(broker.trim())?;
    }
    Ok(raw.to_string())
}

fn parse_http_url(raw: &str) -> Result<String, String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(|| format!("expected http://host:port, got {raw:?}"))?;
    parse_host_port(rest.trim_end_matches('/'))?;
    Ok(raw.trim_end_matches('/').to_string())
}

fn parse_region(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err("a region is 1..32 of a-z, 0-9 and '-'".into())
    }
}

/// Parses the command line (and env), exiting the way operators expect: help and version
/// go to stdout with exit 0; any bad value prints one line naming the flag and exits 64.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(err) => exit_on_clap_error(err),
    }
}

fn exit_on_clap_error(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // clap's own printer knows how to page help to stdout.
            let _ = err.print();
            std::process::exit(0)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            std::process::exit(EXIT_CONFIG)
        }
        _ => {
            let rendered = err.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: bad configuration");
            // clap quotes the bad value: a URL with a password would be printed as given.
            eprintln!("{}", redact_text(line));
            std::process::exit(EXIT_CONFIG)
        }
    }
}

/// Prints one line and exits 69: a dependency the configuration names is not reachable.
pub fn exit_unavailable(what: impl std::fmt::Display) -> ! {
    // Drivers echo the address they failed on; keep any credentials in it off stderr.
    eprintln!("error: {}", redact_text(&what.to_string()));
    std::process::exit(EXIT_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_accepts_standalone_and_cluster() {
        assert_eq!(
            RedisUrl::parse("redis://127.0.0.1:6379/0"),
            Ok(RedisUrl::Standalone("redis://127.0.0.1:6379/0".into()))
        );
        assert_eq!(
            RedisUrl::parse("redis-cluster://a:7000,b:7001"),
            Ok(RedisUrl::Cluster(vec!["a:7000".into(), "b:7001".into()]))
        );
    }

    #[test]
    fn urls_print_without_credentials() {
        let redis = RedisUrl::parse("redis://app:hunter2@cache:6379/0").expect("valid");
        assert_eq!(redis.to_string(), "redis://***@cache:6379/0");
        assert!(!format!("{redis:?}").contains("hunter2"), "{redis:?}");
        let error =
            RedisUrl::parse("redis-cluster://app:hunter2@n1:7000,n2:7001").expect_err("no credentials");
        assert!(!error.contains("hunter2"), "{error}");
        let cluster = RedisUrl::Cluster(vec!["app:hunter2@n1:7000".into()]);
        assert!(
            !format!("{cluster} {cluster:?}").contains("hunter2"),
            "{cluster:?}"
        );
        let error = RedisUrl::parse("redis://app:hunter2@cache:nope").expect_err("bad port");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn redis_url_rejects_missing_port_and_scheme() {
        assert!(RedisUrl::parse("redis://localhost").is_err());
        assert!(RedisUrl::parse("localhost:6379").is_err());
        assert!(RedisUrl::parse("redis-cluster://a:7000,b").is_err());
        assert!(RedisUrl::parse("redis://h:0").is_err());
    }

    #[test]
    fn http_url_needs_scheme_host_and_port() {
        assert_eq!(
            parse_http_url("http://catalog:50051/"),
            Ok("http://catalog:50051".into())
        );
        assert!(parse_http_url("catalog:50051").is_err());
        assert!(parse_http_url("http://catalog").is_err());
    }

    #[test]
    fn region_rejects_uppercase_and_empty() {
        assert!(parse_region("eu-west-1").is_ok());
        assert!(parse_region("EU").is_err());
        assert!(parse_region("").is_err());
    }
}
