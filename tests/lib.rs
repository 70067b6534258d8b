//! Helpers for end-to-end tests: the whole mesh on a real redis-server, and a minimal
//! grpc-web client speaking HTTP/1.1 exactly as a browser or mobile backend does.

use clap::Parser;
use holdfast::{Cli, Mesh, build_server, context};
use holdfast_platform::redis;
use holdfast_testkit::{BearerChannel, DevTokens, RedisServer, SpawnedServer, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every service in one server, as `holdfast dev` runs them, on its own redis-server.
pub struct DevMesh {
    /// The running server.
    pub server: SpawnedServer,
    // The services' consumers, relays and background work run while this is held.
    _running: holdfast_platform::service::Running,
    _redis: RedisServer,
    _store_dir: TempDir,
    tokens: DevTokens,
}

impl DevMesh {
    /// The mesh's `--data-dir` (the search index and the notifications outbox live there).
    pub fn data_dir(&self) -> &std::path::Path {
        self._store_dir.path()
    }

    /// Tokens signed by the mesh's dev key (auth is on, as under `holdfast dev`).
    pub fn tokens(&self) -> &DevTokens {
        &self.tokens
    }

    /// A channel for an operator: every RPC carries a token of a role its authorization
    /// row lets through (admin for admin RPCs, service otherwise).
    pub async fn channel(&self) -> anyhow::Result<BearerChannel> {
        Ok(BearerChannel::new(
            self.server.channel().await?,
            self.tokens.operator(&holdfast::authz_tables()),
        ))
    }

    /// A channel whose every call carries `token`.
    pub async fn channel_as(&self, token: &str) -> anyhow::Result<BearerChannel> {
        Ok(BearerChannel::fixed(self.server.channel().await?, token))
    }

    /// The operator's token for the RPC at `path` (grpc-web calls).
    pub fn operator_token(&self, path: &str) -> String {
        (self.tokens.operator(&holdfast::authz_tables()))(path).unwrap_or_default()
    }

    /// Starts redis-server and the mesh on 127.0.0.1:0, on the in-process bus.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts redis-server and the mesh as `holdfast dev --kafka-brokers <brokers>` runs
    /// it: one Kafka bus configuration shared by every producer and consumer.
    pub async fn start_on_kafka(brokers: &str, region: &str) -> anyhow::Result<Self> {
        Self::start_with(&["--kafka-brokers", brokers, "--region", region]).await
    }

    /// Starts redis-server and the mesh on the in-process bus, serving `region`.
    pub async fn start_in_region(region: &str) -> anyhow::Result<Self> {
        Self::start_with(&["--region", region]).await
    }

    /// Starts redis-server and the mesh with extra `holdfast dev` flags.
    pub async fn start_with(flags: &[&str]) -> anyhow::Result<Self> {
        let redis_server = RedisServer::start()?;
        let dir = TempDir::new("mesh-store")?;
        // Every embedded file (the PSP's books among them) under the temp dir, not ./data.
        let mut args = vec![
            "holdfast".into(),
            "dev".into(),
            "--data-dir".into(),
            dir.path().as_os_str().to_owned(),
        ];
        args.extend(flags.iter().map(std::ffi::OsString::from));
        let mut cli = Cli::try_parse_from(args)?;
        let (services, args, _) = cli.command.split().expect("dev runs services");
        let pool = redis::connect(&redis_server.url(), 2).await?;
        let store =
            holdfast_store::open(&holdfast_store::StoreUrl::Sqlite(dir.path().join("holdfast.db"))).await?;
        let bus =
            holdfast_platform::events::BusConfig::from_kafka_brokers(args.common.kafka_brokers.as_deref());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut ctx = context(args, Some(pool), Some(store), bus, listener.local_addr()?)?;
        // Auth as `holdfast dev` has it: the dev key in the data dir, enforced.
        let auth = args.auth.resolve(true, dir.path(), "dev").await?;
        ctx.credentials = auth.credentials;
        let Mesh { mut server, running } = build_server(&services, &args.common, &ctx).await?;
        server.set_auth(auth.verifier);
        let tokens = DevTokens::new(dir.path())?;
        let server = SpawnedServer::start_on(listener, server, true).await?;
        Ok(Self {
            server,
            _running: running,
            _redis: redis_server,
            _store_dir: dir,
            tokens,
        })
    }
}

/// A grpc-web answer: the message bytes (if any) and the trailers.
#[derive(Debug)]
pub struct WebReply {
    /// Decoded message frame, empty when the call failed.
    pub message: Vec<u8>,
    /// `grpc-status`, `grpc-message`, ... from the trailer frame.
    pub trailers: Vec<(String, String)>,
}

impl WebReply {
    /// A trailer by name.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs one grpc-web (binary) call over HTTP/1.1, with `authorization: Bearer <bearer>`
/// when given, and splits the framed body.
pub async fn grpc_web_call(
    addr: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    bearer: Option<&str>,
) -> anyhow::Result<WebReply> {
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    body.extend_from_slice(message);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
content-length: {}\r\nconnection: close\r\n{}\r\n",
        body.len(),
        bearer
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    anyhow::ensure!(headers.starts_with("http/1.1 200"), "{headers}");
    let payload = if headers.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])?
    } else {
        raw[split + 4..].to_vec()
    };
    let mut reply = WebReply {
        message: Vec::new(),
        trailers: Vec::new(),
    };
    // A trailers-only answer (every error) carries grpc-status in the HTTP headers.
    for line in String::from_utf8_lossy(&raw[..split]).split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().to_lowercase().starts_with("grpc-")
        {
            reply
                .trailers
                .push((k.trim().to_lowercase(), v.trim().to_string()));
        }
    }
    let mut rest = payload.as_slice();
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        anyhow::ensure!(rest.len() >= 5 + len, "truncated grpc-web frame");
        let frame = &rest[5..5 + len];
        if flag & 0x80 == 0 {
            reply.message = frame.to_vec();
        } else {
            for line in String::from_utf8_lossy(frame)
                .split("\r\n")
                .filter(|l| !l.is_empty())
            {
                if let Some((k, v)) = line.split_once(':') {
                    reply
                        .trailers
                        .push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
        }
        rest = &rest[5 + len..];
    }
    Ok(reply)
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end])?.trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
