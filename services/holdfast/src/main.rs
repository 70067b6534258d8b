//! `holdfast`: parse config, start telemetry, build clients, bind, serve.

use holdfast::{Cli, Command, build_server, context, needs};
use holdfast_platform::config::{EXIT_CONFIG, exit_unavailable, parse_or_exit};
use holdfast_platform::process::RedisProcess;
use holdfast_platform::{RedisUrl, redis, server, telemetry};
use holdfast_store::StoreUrl;

// Many small, short-lived allocations per RPC across tokio's worker threads: glibc malloc
// took 18% of the server's CPU under load (perf, `make bench`); mimalloc handles this shape.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // SQLite allocates through glibc, not ALLOCATOR: keep the writer's per-job statement
    // journal pages mapped instead of trimming and faulting them in again every job.
    holdfast_sqlite::heap::keep_freed_memory();
    let mut cli: Cli = parse_or_exit();
    cli.apply_dev_defaults();
    let runtime = match holdfast_platform::runtime::multi_thread() {
        Ok(runtime) => runtime,
        Err(e) => exit_unavailable(format!("cannot start the async runtime: {e}")),
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    if let Command::Migrate { store } = &cli.command {
        return migrate(store).await;
    }
    if let Command::Token(token) = &cli.command {
        let token = token.mint().unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(EXIT_CONFIG);
        });
        #[allow(clippy::print_stdout)] // the token is the output
        {
            println!("{token}");
        }
        return Ok(());
    }
    if let Command::Reconcile(reconcile) = &cli.command {
        if !reconcile.run().await? {
            std::process::exit(holdfast::reconcile::EXIT_DRIFT);
        }
        return Ok(());
    }
    if let Command::Regions(regions) = &cli.command {
        return regions.run().await;
    }
    let Some((services, args, dev)) = cli.command.split() else {
        return Ok(());
    };
    let common = &args.common;
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    let needs = needs(&services);
    let _telemetry = telemetry::init(&names.join("+"), &common.log_format)?;

    // Every configuration check before any connection, so bad config always exits 64.
    let store_url = match (&args.store.store, needs.store) {
        (Some(url), true) => Some(url.clone()),
        (None, true) if dev => Some(StoreUrl::Sqlite(common.data_dir.join("holdfast.db"))),
        (None, true) => {
            eprintln!(
                "error: --store (HOLDFAST_STORE) is required to serve {}",
                names.join(", ")
            );
            std::process::exit(EXIT_CONFIG);
        }
        (_, false) => None,
    };
    let tls = common.tls.server().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(EXIT_CONFIG);
    });
    let peer_tls = common.tls.peers(tls.is_some()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(EXIT_CONFIG);
    });
    // Clients. Under `dev` with no Redis configured we run our own; it dies with us.
    let mut _redis_process = None;
    let redis_url = match (&common.redis_url, dev && needs.redis) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => {
            let dir = common.data_dir.join("redis");
            let process = RedisProcess::start(&dir, &[]).unwrap_or_else(|e| {
                exit_unavailable(format!("cannot start redis-server in {}: {e}", dir.display()))
            });
            tracing::info!(port = process.port(), dir = %dir.display(), "started embedded redis-server");
            let url = RedisUrl::Standalone(process.url());
            _redis_process = Some(process);
            Some(url)
        }
        (None, false) if needs.redis => {
            eprintln!(
                "error: --redis-url (HOLDFAST_REDIS_URL) is required to serve {}",
                names.join(", ")
            );
            std::process::exit(EXIT_CONFIG);
        }
        (None, false) => None,
    };
    // Who may call: the last configuration check, still before any connection.
    let auth = args
        .auth
        .resolve(dev, &common.data_dir, &names.join("+"))
        .await
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(EXIT_CONFIG);
        });
    let redis = match &redis_url {
        Some(url) => Some(
            redis::connect(url, 4)
                .await
                .unwrap_or_else(|e| exit_unavailable(format!("cannot reach redis at {url}: {e}"))),
        ),
        None => None,
    };
    let store = match &store_url {
        Some(url) => {
            let store = holdfast_store::open(url)
                .await
                .unwrap_or_else(|e| exit_unavailable(format!("cannot open store {url:?}: {e}")));
            // Before the listener: the first requests must not wait for the preparation, and
            // a store without its schema is refused here rather than on every call.
            store
                .prepare()
                .await
                .unwrap_or_else(|e| exit_unavailable(format!("cannot use store {url:?}: {e}")));
            Some(store)
        }
        None => None,
    };
    let bus = holdfast_platform::events::BusConfig::from_kafka_brokers(common.kafka_brokers.as_deref());

    // Bind.
    let listener = tokio::net::TcpListener::bind(common.listen)
        .await
        .unwrap_or_else(|e| exit_unavailable(format!("cannot listen on --listen {}: {e}", common.listen)));
    let admin = tokio::net::TcpListener::bind(common.admin_listen)
        .await
        .unwrap_or_else(|e| {
            exit_unavailable(format!(
                "cannot listen on --admin-listen {}: {e}",
                common.admin_listen
            ))
        });
    let (listen, admin_listen) = (listener.local_addr()?, admin.local_addr()?);
    let mut ctx = context(args, redis, store, bus, listen)
        .unwrap_or_else(|e| exit_unavailable(format!("cannot set up the event bus: {e}")));
    ctx.peer_tls = peer_tls;
    ctx.credentials = auth.credentials;
    let mesh = build_server(&services, common, &ctx).await?;
    let (mut grpc, mut running) = (mesh.server, mesh.running);
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    grpc.set_tls(tls);
    grpc.set_auth(auth.verifier);
    let health = grpc.health();

    // Serve.
    let admin_task = tokio::spawn(server::serve_admin(
        admin,
        health.clone(),
        server::shutdown_signal(),
    ));
    health.ready().await;
    tracing::info!(services = ?names, %listen, admin = %admin_listen, scheme, "serving");
    #[allow(clippy::print_stdout)] // the one line a script or test waits for
    {
        println!(
            "holdfast serving {} on {} (gRPC + grpc-web), admin on {}",
            names.join(","),
            listen,
            admin_listen
        );
    }
    grpc.serve(listener, server::shutdown_signal()).await?;
    admin_task.abort();
    // Drained: no new change can arrive, so the last ones (the cart's) become durable now.
    running.drain().await;
    // Close Redis connections before our embedded redis-server (if any) stops under them.
    if let Some(pool) = &ctx.redis {
        let _ = fred::interfaces::ClientLike::quit(pool).await;
    }
    tracing::info!("drained; bye");
    Ok(())
}

/// `holdfast migrate`: apply the store's schema, print one line, exit.
async fn migrate(url: &StoreUrl) -> anyhow::Result<()> {
    holdfast_store::migrate(url)
        .await
        .unwrap_or_else(|e| exit_unavailable(format!("cannot open store {url:?} or apply its schema: {e}")));
    #[allow(clippy::print_stdout)]
    {
        println!("holdfast migrate: schema of {url:?} is current");
    }
    Ok(())
}
