//! Durable notification records: the [`NotificationStore`] trait and its SQLite
//! implementation ([`SqliteNotifications`] on a [`holdfast_sqlite::Db`]: writes go to its
//! writer thread and commit in groups, lookups by key run on the caller's thread, listings
//! on the blocking pool).
//!
//! `(event_id, channel)` is unique: recording the intent of a notification twice keeps
//! the first, which is what makes a redelivered event produce nothing new.

use std::path::Path;

use futures::FutureExt;
use futures::future::BoxFuture;
use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{Channel, Notification, Status};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("notification store: {0}")]
    Sqlite(String),
    /// A stored row could not be read back.
    #[error("notification store: corrupt row: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(error.to_string())
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        StoreError::Sqlite(failure.message)
    }
}

/// Result of the store's futures.
pub type StoreResult<T> = Result<T, StoreError>;

/// Who an event is for: the order's customer and the channels they opted out of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// The customer who placed the order.
    pub customer_id: String,
    /// The channels they opted out of.
    pub opted_out: Vec<Channel>,
}

/// Where notifications, order owners and opt-outs are kept.
///
/// The engine's calls per event are few on purpose (each is a hop to another thread and
/// most are a write): [`audience`](Self::audience), [`record`](Self::record), then
/// [`mark_sent`](Self::mark_sent) once for everything the event sent.
pub trait NotificationStore: Send + Sync + 'static {
    /// Who an event about `order_id` is for: `customer_id` when the event names one (it is
    /// remembered as the order's owner, since shipment events carry no customer), else the
    /// owner remembered earlier; `None` when neither is known.
    fn audience(
        &self,
        order_id: &str,
        customer_id: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Option<Audience>>>;
    /// Records notifications not recorded yet (by `(event_id, channel)`) and returns every
    /// notification of their events still pending afterwards, oldest first (a redelivered
    /// event records nothing new and gets back what a crash left unsent).
    fn record(&self, notifications: Vec<Notification>) -> BoxFuture<'_, StoreResult<Vec<Notification>>>;
    /// Every pending notification, oldest first.
    fn pending(&self) -> BoxFuture<'_, StoreResult<Vec<Notification>>>;
    /// Sets a notification's state after a send attempt that did not send it.
    fn update(
        &self,
        id: &str,
        status: Status,
        attempts: u32,
        last_error: &str,
        sent_at_ms: i64,
    ) -> BoxFuture<'_, StoreResult<()>>;
    /// Marks notifications sent, `(id, attempts)` each, in one transaction.
    fn mark_sent(&self, sent: Vec<(String, u32)>, sent_at_ms: i64) -> BoxFuture<'_, StoreResult<()>>;
    /// A customer's notifications, newest first, after the cursor `(created_at_ms, id)`.
    fn list(
        &self,
        customer_id: &str,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<Notification>>>;
    /// Opts `customer_id` in or out of `channel`; returns the channels now opted out.
    fn set_opt_out(
        &self,
        customer_id: &str,
        channel: Channel,
        opted_out: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<Channel>>>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    UNIQUE (event_id, channel)
);
CREATE INDEX IF NOT EXISTS notifications_by_customer
    ON notifications (customer_id, created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS notifications_pending
    ON notifications (status, created_at_ms) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS order_customers (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS opt_outs (
    customer_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    PRIMARY KEY (customer_id, channel)
);
";

const COLUMNS: &str = "id, customer_id, order_id, event_id, event_type, channel, status, recipient, subject, body, \
                       attempts, last_error, created_at_ms, sent_at_ms";

fn read(row: &Row<'_>) -> rusqlite::Result<Result<Notification, StoreError>> {
    let channel: String = row.get(5)?;
    let status: String = row.get(6)?;
    let (Some(channel), Some(status)) = (Channel::parse(&channel), Status::parse(&status)) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "channel {channel:?}, status {status:?}"
        ))));
    };
    Ok(Ok(Notification {
        id: row.get(0)?,
        customer_id: row.get(1)?,
        order_id: row.get(2)?,
        event_id: row.get(3)?,
        event_type: row.get(4)?,
        channel,
        status,
        recipient: row.get(7)?,
        subject: row.get(8)?,
        body: row.get(9)?,
        attempts: row.get(10)?,
        last_error: row.get(11)?,
        created_at_ms: row.get(12)?,
        sent_at_ms: row.get(13)?,
    }))
}

fn collect(rows: Vec<Result<Notification, StoreError>>) -> StoreResult<Vec<Notification>> {
    rows.into_iter().collect()
}

/// The SQLite notification store.
#[derive(Clone)]
pub struct SqliteNotifications {
    db: Db,
}

impl std::fmt::Debug for SqliteNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteNotifications").finish_non_exhaustive()
    }
}

impl SqliteNotifications {
    /// Opens (creating and migrating) the database at `path`: WAL, `synchronous = NORMAL`,
    /// one writer thread with group commit (holdfast-sqlite). Blocking.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = Db::open(Some(path), Options::default(), |conn: &mut Connection| {
            conn.execute_batch(SCHEMA).map_err(StoreError::from)
        })?;
        Ok(Self { db })
    }

    /// Queues `f` to the writer; answered once its batch committed (`f` runs in a savepoint
    /// of the batch: an `Err` undoes its writes only).
    fn write<T, F>(&self, f: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.db.write(f).boxed()
    }

    /// A read of a few rows by key, on the caller's thread.
    fn lookup<T, F>(&self, f: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.db.lookup(f).boxed()
    }

    /// A read that may return many rows, on the blocking pool.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.db.read(f).boxed()
    }
}

fn opted(conn: &Connection, customer_id: &str) -> StoreResult<Vec<Channel>> {
    let mut statement =
        conn.prepare_cached("SELECT channel FROM opt_outs WHERE customer_id = ?1 ORDER BY channel")?;
    let names = statement
        .query_map([customer_id], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().filter_map(|n| Channel::parse(n)).collect())
}

/// `customer_id` with the channels they opted out of.
fn audience_of(conn: &Connection, customer_id: String) -> StoreResult<Audience> {
    let opted_out = opted(conn, &customer_id)?;
    Ok(Audience {
        customer_id,
        opted_out,
    })
}

impl NotificationStore for SqliteNotifications {
    fn audience(
        &self,
        order_id: &str,
        customer_id: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Option<Audience>>> {
        let order_id = order_id.to_string();
        match customer_id.map(str::to_string) {
            // The event names the customer: remembered as the order's owner.
            Some(customer_id) => self.write(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO order_customers (order_id, customer_id) VALUES (?1, ?2)",
                )?
                .execute(params![order_id, customer_id])?;
                audience_of(conn, customer_id).map(Some)
            }),
            None => self.lookup(move |conn| {
                let Some(customer_id) = conn
                    .prepare_cached("SELECT customer_id FROM order_customers WHERE order_id = ?1")?
                    .query_row([&order_id], |row| row.get::<_, String>(0))
                    .optional()?
                else {
                    return Ok(None);
                };
                audience_of(conn, customer_id).map(Some)
            }),
        }
    }

    fn record(&self, notifications: Vec<Notification>) -> BoxFuture<'_, StoreResult<Vec<Notification>>> {
        // One writer job: its savepoint makes the inserts and the read-back one unit.
        self.write(move |conn| {
            let mut events: Vec<&str> = Vec::new();
            {
                let mut statement = conn.prepare_cached(&format!(
                    "INSERT OR IGNORE INTO notifications ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ))?;
                for n in &notifications {
                    statement.execute(params![
                        n.id,
                        n.customer_id,
                        n.order_id,
                        n.event_id,
                        n.event_type,
                        n.channel.as_str(),
                        n.status.as_str(),
                        n.recipient,
                        n.subject,
                        n.body,
                        n.attempts,
                        n.last_error,
                        n.created_at_ms,
                        n.sent_at_ms,
                    ])?;
                    if !events.contains(&n.event_id.as_str()) {
                        events.push(&n.event_id);
                    }
                }
            }
            let mut pending = Vec::new();
            {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications WHERE event_id = ?1 AND status = 'pending' ORDER BY channel"
                ))?;
                for event_id in events {
                    pending.extend(statement.query_map([event_id], read)?.collect::<Result<Vec<_>, _>>()?);
                }
            }
            collect(pending)
        })
    }

    fn pending(&self) -> BoxFuture<'_, StoreResult<Vec<Notification>>> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications WHERE status = 'pending' ORDER BY created_at_ms, id"
                ))?
                .query_map([], read)?
                .collect::<Result<Vec<_>, _>>()?;
            collect(rows)
        })
    }

    fn update(
        &self,
        id: &str,
        status: Status,
        attempts: u32,
        last_error: &str,
        sent_at_ms: i64,
    ) -> BoxFuture<'_, StoreResult<()>> {
        let (id, last_error) = (id.to_string(), last_error.to_string());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE notifications SET status = ?2, attempts = ?3, last_error = ?4, sent_at_ms = ?5 WHERE id = ?1",
            )?
            .execute(params![id, status.as_str(), attempts, last_error, sent_at_ms])?;
            Ok(())
        })
    }

    fn mark_sent(&self, sent: Vec<(String, u32)>, sent_at_ms: i64) -> BoxFuture<'_, StoreResult<()>> {
        self.write(move |conn| {
            {
                let mut statement = conn.prepare_cached(
                    "UPDATE notifications SET status = 'sent', attempts = ?2, last_error = '', sent_at_ms = ?3 WHERE id = ?1",
                )?;
                for (id, attempts) in &sent {
                    statement.execute(params![id, attempts, sent_at_ms])?;
                }
            }
            Ok(())
        })
    }

    fn list(
        &self,
        customer_id: &str,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<Notification>>> {
        let customer_id = customer_id.to_string();
        let (at, id) = after.unwrap_or((i64::MAX, String::new()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications WHERE customer_id = ?1 \
                     AND (created_at_ms < ?2 OR (created_at_ms = ?2 AND (?3 = '' OR id < ?3))) \
                     ORDER BY created_at_ms DESC, id DESC LIMIT ?4"
                ))?
                .query_map(params![customer_id, at, id, limit], read)?
                .collect::<Result<Vec<_>, _>>()?;
            collect(rows)
        })
    }

    fn set_opt_out(
        &self,
        customer_id: &str,
        channel: Channel,
        opted_out: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<Channel>>> {
        let customer_id = customer_id.to_string();
        self.write(move |conn| {
            if opted_out {
                conn.prepare_cached("INSERT OR IGNORE INTO opt_outs (customer_id, channel) VALUES (?1, ?2)")?
                    .execute(params![customer_id, channel.as_str()])?;
            } else {
                conn.prepare_cached("DELETE FROM opt_outs WHERE customer_id = ?1 AND channel = ?2")?
                    .execute(params![customer_id, channel.as_str()])?;
            }
            opted(conn, &customer_id)
        })
    }
}
