//! Sending: the [`Notifier`] trait, the embedded [`FileNotifier`] (JSON lines, idempotent
//! by notification id) and [`SmtpNotifier`] (lettre, plain SMTP).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::model::{Channel, Notification};

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (connection refused, a 4xx reply, a full disk...).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (a bad address, a 5xx reply): dead-lettered at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Delivers rendered notifications. A send may be repeated with the same
/// [`Notification::id`] after a crash; implementations should let the receiving end drop
/// the repeat (the file notifier does it itself; SMTP sets `Message-ID` from the id).
pub trait Notifier: Send + Sync + 'static {
    /// Sends `notification` on its channel. It may be durable only after [`sync`](Self::sync).
    fn send(&self, notification: &Notification) -> BoxFuture<'_, Result<(), SendError>>;
    /// Makes every send accepted so far durable (the engine calls it once per event, before
    /// it records those sends). Nothing to do where a send is durable when it returns (SMTP:
    /// the relay took the message).
    fn sync(&self) -> BoxFuture<'_, Result<(), SendError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// One notifier per channel.
#[derive(Clone)]
pub struct ByChannel {
    /// For [`Channel::Email`].
    pub email: Arc<dyn Notifier>,
    /// For [`Channel::Push`].
    pub push: Arc<dyn Notifier>,
}

impl Notifier for ByChannel {
    fn send(&self, notification: &Notification) -> BoxFuture<'_, Result<(), SendError>> {
        match notification.channel {
            Channel::Email => self.email.send(notification),
            Channel::Push => self.push.send(notification),
        }
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), SendError>> {
        // When both channels share one notifier the second sync finds nothing to do.
        async move {
            self.email.sync().await?;
            self.push.sync().await
        }
        .boxed()
    }
}

/// Appends each notification as one JSON line to a file (the embedded default, and what
/// tests read). Idempotent by id: the ids already in the file are loaded on open, and a
/// notification whose id is there is not written again, so a resend after a crash between
/// the write and the "sent" record leaves exactly one line.
///
/// A send writes its line on the caller's thread: one `write` into the page cache, which
/// does not wait for the disk and survives the process. [`Notifier::sync`] makes every line
/// written so far durable with an `fdatasync` on the blocking pool. Syncs take turns, and a
/// sync that finds its lines already covered by the one it waited for returns without one
/// of its own, so events handled side by side share their `fdatasync`s.
#[derive(Clone)]
pub struct FileNotifier {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
    /// The file, for `fdatasync`, behind the lock the syncs take turns on.
    syncer: Arc<tokio::sync::Mutex<Arc<std::fs::File>>>,
}

struct FileState {
    file: std::fs::File,
    /// Ids of the lines in the file.
    seen: HashSet<String>,
    /// Lines written, counting one whose write failed part-way.
    written: u64,
    /// Of those, how many an `fdatasync` has made durable.
    synced: u64,
    /// `fdatasync`s done.
    syncs: u64,
}

impl std::fmt::Debug for FileNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileNotifier").field("path", &self.path).finish()
    }
}

impl FileNotifier {
    /// Opens (creating) the file at `path` and loads the ids it holds.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut seen = HashSet::new();
        if path.exists() {
            for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
                let line = line?;
                // A torn last line (a crash mid-write) has no id: it is written again.
                if let Ok(written) = serde_json::from_str::<Notification>(&line) {
                    seen.insert(written.id);
                }
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let for_sync = Arc::new(file.try_clone()?);
        Ok(Self {
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(FileState {
                file,
                seen,
                written: 0,
                synced: 0,
                syncs: 0,
            })),
            syncer: Arc::new(tokio::sync::Mutex::new(for_sync)),
        })
    }

    /// Every notification in a JSON-lines file (tests read the outbox with this).
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Notification>> {
        if !path.exists() {
            return Ok(Vec::new());
        }
        std::io::BufReader::new(std::fs::File::open(path)?)
            .lines()
            .filter_map(|line| match line {
                Ok(line) => serde_json::from_str(&line).ok().map(Ok),
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    /// How many `fdatasync`s this notifier has done.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// The state, held only while a line is written or a count read (never across an
    /// `fdatasync`).
    fn state(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `notification`'s line unless its id is in the file.
    fn write_line(&self, notification: &Notification) -> Result<(), SendError> {
        let mut line =
            serde_json::to_string(notification).map_err(|e| SendError::Permanent(e.to_string()))?;
        line.push('\n');
        let mut state = self.state();
        if state.seen.contains(&notification.id) {
            return Ok(());
        }
        // To be synced from here on, even if the write fails part-way.
        state.written += 1;
        state
            .file
            .write_all(line.as_bytes())
            .map_err(|e| SendError::Transient(format!("outbox file: {e}")))?;
        state.seen.insert(notification.id.clone());
        Ok(())
    }

    /// Makes every line written before the call durable.
    async fn sync_written(&self) -> Result<(), SendError> {
        let target = {
            let state = self.state();
            if state.synced >= state.written {
                return Ok(());
            }
            state.written
        };
        let file = self.syncer.lock().await;
        // The sync this one waited for may have covered its lines.
        let covers = {
            let state = self.state();
            if state.synced >= target {
                return Ok(());
            }
            state.written
        };
        let handle = Arc::clone(&file);
        tokio::task::spawn_blocking(move || handle.sync_data())
            .await
            .map_err(|e| SendError::Transient(format!("outbox file sync task: {e}")))?
            .map_err(|e| SendError::Transient(format!("outbox file sync: {e}")))?;
        let mut state = self.state();
        state.synced = state.synced.max(covers);
        state.syncs += 1;
        Ok(())
    }
}

impl Notifier for FileNotifier {
    fn send(&self, notification: &Notification) -> BoxFuture<'_, Result<(), SendError>> {
        futures::future::ready(self.write_line(notification)).boxed()
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), SendError>> {
        self.sync_written().boxed()
    }
}

/// Email over plain SMTP (no TLS: a loopback relay or an in-cluster MTA).
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpNotifier {
    /// A notifier relaying through `host:port`, sending as `from`.
    pub fn new(host: &str, port: u16, from: &str) -> Result<Self, String> {
        let from = from.parse().map_err(|e| format!("from address {from:?}: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        Ok(Self { transport, from })
    }

    /// A notifier for `options`: its relay, sender and, when set, its credentials (sent
    /// with AUTH PLAIN or LOGIN, whichever the relay offers).
    pub fn from_options(options: &crate::SmtpOptions) -> Result<Self, String> {
        let from = options
            .from
            .parse()
            .map_err(|e| format!("from address {:?}: {e}", options.from))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&options.host)
            .port(options.port)
            .timeout(Some(std::time::Duration::from_secs(10)));
        if let Some((user, password)) = &options.credentials {
            builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

impl Notifier for SmtpNotifier {
    fn send(&self, notification: &Notification) -> BoxFuture<'_, Result<(), SendError>> {
        let built = (|| {
            let to = notification
                .recipient
                .parse()
                .map_err(|e| SendError::Permanent(format!("recipient {:?}: {e}", notification.recipient)))?;
            Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(notification.subject.clone())
                .message_id(Some(format!("<{}@holdfast>", notification.id)))
                .header(ContentType::TEXT_PLAIN)
                .body(notification.body.clone())
                .map_err(|e| SendError::Permanent(format!("building the message: {e}")))
        })();
        async move {
            let message = built?;
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                Err(e) => Err(SendError::Transient(e.to_string())),
            }
        }
        .boxed()
    }
}
