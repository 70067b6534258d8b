//! Customer notifications: a consumer of order and shipment events that renders a message
//! per channel (email, push) from templates, records every notification durably before
//! sending it, sends through a [`Notifier`], and answers `ListNotifications` and
//! `SetPreference` over gRPC. See [`engine`] for the exactly-once argument and
//! docs/notifications.md for the whole story.

pub mod authz;
pub mod engine;
pub mod model;
pub mod notifier;
pub mod service;
pub mod smtp_url;
pub mod store;
pub mod templates;

use std::path::PathBuf;
use std::sync::Arc;

use holdfast_platform::events::{BusConfig, ConsumerHandle, Event, handler_fn, spawn_consumer};
use holdfast_proto::notifications::v1::notification_service_server::NotificationServiceServer;

pub use engine::{CrashHook, Engine, EngineOptions, ORDERS_TOPIC, SHIPMENTS_TOPIC};
pub use model::{Channel, Notification, Status};
pub use notifier::{ByChannel, FileNotifier, Notifier, SendError, SmtpNotifier};
pub use service::Notifications;
pub use smtp_url::SmtpUrl;
pub use store::{Audience, NotificationStore, SqliteNotifications};

/// The consumer group of the notifications consumer.
pub const CONSUMER_GROUP: &str = "holdfast-notifications";

/// Where email goes when not to the outbox file. Debug hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpOptions {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Sender address.
    pub from: String,
    /// User name and password for the relay's AUTH, if it wants them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, holdfast_platform::redact::REDACTED)),
            )
            .finish()
    }
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct NotificationsOptions {
    /// SQLite database of notifications, order owners and opt-outs.
    pub database: PathBuf,
    /// JSON-lines outbox file the embedded notifier writes (push always; email too unless
    /// `smtp` is set).
    pub outbox_file: PathBuf,
    /// Send email over SMTP instead of to the outbox file.
    pub smtp: Option<SmtpOptions>,
    /// Retries, rendering and fault injection.
    pub engine: EngineOptions,
}

impl NotificationsOptions {
    /// The defaults under `data_dir`, with the crash hook from
    /// `HOLDFAST_NOTIFICATIONS_ABORT_AFTER_SENDS` (end-to-end tests only).
    pub fn under(data_dir: &std::path::Path) -> Self {
        let mut engine = EngineOptions::default();
        if let Some(n) = std::env::var("HOLDFAST_NOTIFICATIONS_ABORT_AFTER_SENDS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            engine.crash = CrashHook::AbortAfter(n);
        }
        Self {
            database: data_dir.join("notifications.db"),
            outbox_file: data_dir.join("notifications-outbox.jsonl"),
            smtp: None,
            engine,
        }
    }
}

/// The running service: the gRPC server, the engine and its consumer.
pub struct RunningNotifications {
    /// Register this.
    pub service: NotificationServiceServer<Notifications>,
    /// The engine (tests and recovery).
    pub engine: Arc<Engine>,
    /// The consumer of order and shipment events; stops when dropped.
    pub consumer: Option<ConsumerHandle>,
    recovery: tokio::task::JoinHandle<()>,
}

impl Drop for RunningNotifications {
    fn drop(&mut self) {
        self.recovery.abort();
    }
}

/// Opens the store and the notifier, re-sends what a previous run left pending, and
/// starts consuming order and shipment events from `bus`.
pub async fn start(options: NotificationsOptions, bus: &BusConfig) -> anyhow::Result<RunningNotifications> {
    if let Some(dir) = options.database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let store: Arc<dyn NotificationStore> = Arc::new(SqliteNotifications::open(&options.database)?);
    let file: Arc<dyn Notifier> = Arc::new(FileNotifier::open(&options.outbox_file)?);
    let email: Arc<dyn Notifier> = match &options.smtp {
        Some(smtp) => {
            tracing::info!(host = %smtp.host, port = smtp.port, from = %smtp.from, "email goes out over SMTP");
            Arc::new(SmtpNotifier::from_options(smtp).map_err(anyhow::Error::msg)?)
        }
        None => Arc::clone(&file),
    };
    let notifier = Arc::new(ByChannel { email, push: file });
    let engine = Arc::new(Engine::new(Arc::clone(&store), notifier, options.engine));
    let recovery = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move {
            match engine.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "re-sent notifications a previous run left pending"),
                Err(error) => tracing::warn!(%error, "re-sending pending notifications failed"),
            }
        }
    });
    let consumer = spawn_consumer(
        bus,
        CONSUMER_GROUP,
        &[ORDERS_TOPIC, SHIPMENTS_TOPIC],
        handler_fn({
            let engine = Arc::clone(&engine);
            move |event: Event| {
                let engine = Arc::clone(&engine);
                async move { engine.handle(&event).await }
            }
        }),
    )
    .await?;
    Ok(RunningNotifications {
        service: NotificationServiceServer::new(Notifications::new(store)),
        engine,
        consumer: Some(consumer),
        recovery,
    })
}

/// The notifications service's section of the command line (its files live under
/// `--data-dir`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NotificationsArgs {
    /// Send email through this SMTP relay: `smtp://[user:password@]host[:port][?from=address]`
    /// (port 25 and `holdfast@localhost` unless given; `%XX` escapes in user and password).
    /// Plain SMTP, no TLS: a loopback relay or an in-cluster MTA. Unset, email goes to the
    /// outbox file next to push. Printed with credentials redacted (and `--help` does not
    /// show the env value).
    #[arg(
        long,
        env = "HOLDFAST_SMTP_URL",
        hide_env_values = true,
        value_name = "URL",
        value_parser = smtp_url::SmtpUrlParser
    )]
    pub smtp_url: Option<SmtpUrl>,
}

impl NotificationsArgs {
    /// The service's options under `data_dir`, with email over SMTP when `--smtp-url` is set.
    pub fn options(&self, data_dir: &std::path::Path) -> NotificationsOptions {
        NotificationsOptions {
            smtp: self.smtp_url.as_ref().map(|url| url.options().clone()),
            ..NotificationsOptions::under(data_dir)
        }
    }
}

impl<S: Send + Sync + 'static> holdfast_platform::Service<S> for NotificationsArgs {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn needs(&self) -> holdfast_platform::Needs {
        holdfast_platform::Needs {
            redis: false,
            store: false,
        }
    }

    /// Its own SQLite record and outbox file under `--data-dir`; consumes order and
    /// shipment events (subscribed here, before any relay of the process starts).
    fn build<'a>(
        &'a self,
        ctx: &'a holdfast_platform::Context<S>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<holdfast_platform::ServiceParts>> {
        Box::pin(async move {
            let running = start(self.options(&ctx.data_dir), &ctx.bus_config).await?;
            Ok(
                holdfast_platform::ServiceParts::new("notifications", running.service.clone())
                    .authz(&authz::TABLE)
                    .keep(running),
            )
        })
    }
}
