//! The outbox on ScyllaDB.
//!
//! An event lives in its *home*: for an event announcing a saga transition or an order
//! update, a clustering row in that saga's or order's partition, written by the same
//! single-partition conditional batch as the change; for an event appended on its own, the
//! index row itself. `outbox_pending` indexes every unsent event by id over
//! [`BUCKETS`](super::buckets::BUCKETS) partitions. A home's index row is written *before*
//! its batch, so a crash can leave an index row whose batch never applied, never an
//! applied event without an index row. Listing checks each such row against its home:
//! rows whose event is not there are skipped, and deleted once the home has moved past the
//! version their batch would have produced (that batch can never apply any more). Marking
//! an event sent deletes its index row; the home row stays as the aggregate's history.
//!
//! A product upsert cannot share a batch with its events (no conditional batch spans
//! tables), so its announcements are written twice: first marked as announcing a write
//! under way ([`Home::ProductWrite`], skipped by listings), then, once the product row is
//! written, rewritten plain. A consumer that re-reads the SKU on the event therefore finds
//! the write it announces, and a crash between the two writes still publishes the event
//! (late, after [`PRODUCT_WRITE_GRACE_MS`]).

use std::collections::{BTreeMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::buckets::{BucketMerge, Step, bucket_of, chunk_for};
use super::{BatchRow, READ_FAN_OUT, ScyllaStore, Statements, prepare_statement};
use crate::StoreError;
use crate::outbox::{MAX_OUTBOX_BATCH, OutboxMessage, OutboxStore, distinct_messages, validate_ids};

/// The aggregate whose partition holds an event (next to the change it announces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Home {
    /// A `sagas` partition.
    Saga,
    /// An `orders` partition.
    Order,
    /// A product write under way: the events announce a `products` row not written yet.
    /// The writer rewrites them without a home once the row is written (or deletes them if
    /// the write is refused); until then listing skips them, so no consumer re-reads the
    /// SKU before the write. One whose writer died is listed after
    /// [`PRODUCT_WRITE_GRACE_MS`]: announcements only say "re-read this SKU", so a late or
    /// needless one is harmless.
    ProductWrite,
}

impl Home {
    fn as_str(self) -> &'static str {
        match self {
            Self::Saga => "saga",
            Self::Order => "order",
            Self::ProductWrite => "product",
        }
    }
}

/// How long an announcement of a product write under way waits for its writer before it
/// is listed anyway (the writer crashed between its two outbox writes). Far longer than a
/// write takes: every request of one has a driver timeout well under it.
pub(super) const PRODUCT_WRITE_GRACE_MS: i64 = 5 * 60 * 1000;

/// Columns of the home-row insert, shared by `sagas` and `orders`.
const HOME_EVENT_COLUMNS: &str =
    "id, outbox_id, topic, event_key, event_type, event_payload, headers, event_created_at_ms";

/// An `outbox_pending` row: id, home, home_id, home_version, topic, event_key, event_type,
/// payload, headers, created_at_ms, and the write time of the row.
type PendingRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<Vec<u8>>,
    Option<BTreeMap<String, String>>,
    i64,
    i64,
);

/// An index row, decoded.
struct PendingEntry {
    home: String,
    home_id: String,
    /// The home's version once the announcing batch applied.
    home_version: i64,
    /// The row's write time (µs), so a cleanup never deletes a newer rewrite of it.
    written_at: i64,
    message: OutboxMessage,
}

impl PendingEntry {
    fn from_row(row: PendingRow) -> Self {
        let (
            id,
            home,
            home_id,
            home_version,
            topic,
            key,
            event_type,
            payload,
            headers,
            created_at_ms,
            written_at,
        ) = row;
        Self {
            home,
            home_id,
            home_version,
            written_at,
            message: OutboxMessage {
                id,
                topic,
                key,
                event_type,
                payload: payload.unwrap_or_default(),
                headers: headers.unwrap_or_default(),
                created_at_ms,
            },
        }
    }
}

/// The outbox's prepared statements.
pub(super) struct OutboxStatements {
    insert_pending: PreparedStatement,
    pending_page: PreparedStatement,
    delete_pending: PreparedStatement,
    delete_pending_written_at: PreparedStatement,
    saga_event: PreparedStatement,
    saga_version: PreparedStatement,
    order_event: PreparedStatement,
    order_version: PreparedStatement,
    /// An event row in a saga's partition (a statement of the transition's batch).
    pub(super) insert_saga_event: PreparedStatement,
    /// An event row in an order's partition (a statement of the update's batch).
    pub(super) insert_order_event: PreparedStatement,
}

impl OutboxStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        Ok(Self {
            insert_pending: prepare(
                format!(
                    "INSERT INTO {ks}.outbox_pending (bucket, id, home, home_id, home_version, topic, \
                     event_key, event_type, payload, headers, created_at_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                true,
            )
            .await?,
            pending_page: prepare(
                format!(
                    "SELECT id, home, home_id, home_version, topic, event_key, event_type, payload, \
                     headers, created_at_ms, WRITETIME(topic) FROM {ks}.outbox_pending \
                     WHERE bucket = ? AND id > ? LIMIT ?"
                ),
                true,
            )
            .await?,
            delete_pending: prepare(
                format!("DELETE FROM {ks}.outbox_pending WHERE bucket = ? AND id = ?"),
                true,
            )
            .await?,
            delete_pending_written_at: prepare(
                format!("DELETE FROM {ks}.outbox_pending USING TIMESTAMP ? WHERE bucket = ? AND id = ?"),
                true,
            )
            .await?,
            saga_event: prepare(
                format!("SELECT outbox_id FROM {ks}.sagas WHERE id = ? AND outbox_id = ?"),
                true,
            )
            .await?,
            saga_version: prepare(
                format!("SELECT version FROM {ks}.sagas WHERE id = ? LIMIT 1"),
                true,
            )
            .await?,
            order_event: prepare(
                format!("SELECT outbox_id FROM {ks}.orders WHERE id = ? AND outbox_id = ?"),
                true,
            )
            .await?,
            order_version: prepare(
                format!("SELECT version FROM {ks}.orders WHERE id = ? LIMIT 1"),
                true,
            )
            .await?,
            insert_saga_event: prepare(
                format!("INSERT INTO {ks}.sagas ({HOME_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                false,
            )
            .await?,
            insert_order_event: prepare(
                format!("INSERT INTO {ks}.orders ({HOME_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                false,
            )
            .await?,
        })
    }
}

/// The bound values of `insert_saga_event` / `insert_order_event` for `message` in the
/// partition of `home_id`.
pub(super) fn home_event_row(home_id: &str, message: &OutboxMessage) -> BatchRow {
    Box::new((
        home_id.to_string(),
        message.id.clone(),
        message.topic.clone(),
        message.key.clone(),
        message.event_type.clone(),
        message.payload.clone(),
        message.headers.clone(),
        message.created_at_ms,
    ))
}

impl ScyllaStore {
    /// Writes the index rows of `messages`, which the batch about to run writes into
    /// `home_id`'s partition as it moves it to `home_version`.
    pub(super) async fn index_pending(
        &self,
        home: Option<Home>,
        home_id: &str,
        home_version: i64,
        messages: &[OutboxMessage],
    ) -> Result<(), StoreError> {
        let statements = self.statements().await?;
        let home = home.map_or("", Home::as_str);
        // Owned messages: closures over borrowed ones trip the compiler's higher-ranked
        // `Send` inference, as in `read_products`.
        futures::stream::iter(messages.iter().cloned())
            .map(|message| async move {
                self.run(
                    &statements.outbox.insert_pending,
                    (
                        bucket_of(&message.id),
                        &message.id,
                        home,
                        home_id,
                        home_version,
                        &message.topic,
                        &message.key,
                        &message.event_type,
                        &message.payload,
                        &message.headers,
                        message.created_at_ms,
                    ),
                )
                .await
            })
            .buffer_unordered(READ_FAN_OUT)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// The entry's event if it is really pending; cleans up an entry whose batch can no
    /// longer apply.
    async fn check_pending(
        &self,
        statements: &Statements,
        entry: PendingEntry,
    ) -> Result<Option<OutboxMessage>, StoreError> {
        let (event, version) = match entry.home.as_str() {
            "" => return Ok(Some(entry.message)),
            "product" => {
                // WRITETIME is in microseconds on the server's clock.
                let age_ms = crate::now_ms().saturating_sub(entry.written_at / 1000);
                return Ok((age_ms >= PRODUCT_WRITE_GRACE_MS).then_some(entry.message));
            }
            "saga" => (&statements.outbox.saga_event, &statements.outbox.saga_version),
            "order" => (&statements.outbox.order_event, &statements.outbox.order_version),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "outbox event {:?} has an unknown home {other:?}",
                    entry.message.id
                )));
            }
        };
        let found: Vec<(String,)> = self.rows(event, (&entry.home_id, &entry.message.id)).await?;
        if !found.is_empty() {
            return Ok(Some(entry.message));
        }
        let home_version: Vec<(Option<i64>,)> = self.rows(version, (&entry.home_id,)).await?;
        let moved_past = home_version
            .first()
            .and_then(|(version,)| *version)
            .is_some_and(|version| version >= entry.home_version);
        if moved_past {
            // At the row's own write time: a rewrite since (a retry with this event id)
            // carries a later timestamp and survives.
            self.run(
                &statements.outbox.delete_pending_written_at,
                (entry.written_at, bucket_of(&entry.message.id), &entry.message.id),
            )
            .await?;
        }
        Ok(None)
    }
}

impl OutboxStore for ScyllaStore {
    async fn append_outbox(&self, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
        let messages = distinct_messages(messages)?;
        // No home to wait for: the index row is the event.
        self.index_pending(None, "", 0, &messages).await
    }

    /// Leaves `skip` out as the buckets are merged, before any event's home is checked.
    async fn pending_outbox_except(
        &self,
        limit: u32,
        skip: &[&str],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let skip: HashSet<&str> = skip.iter().copied().collect();
        let limit = limit.min(MAX_OUTBOX_BATCH) as usize;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let statements = self.statements().await?;
        let chunk = chunk_for(limit);
        let chunk_i32 = i32::try_from(chunk).unwrap_or(i32::MAX);
        // Ids are never empty, so every id sorts after "".
        let mut merge = BucketMerge::new(super::buckets::BUCKETS, String::new(), |entry: &PendingEntry| {
            entry.message.id.clone()
        });
        let mut found = Vec::with_capacity(limit);
        let mut candidates = Vec::new();
        loop {
            let done = match merge.next() {
                Step::Read(reads) => {
                    let pages = futures::future::try_join_all(reads.iter().map(|(bucket, after)| {
                        let bucket = i32::try_from(*bucket).unwrap_or(i32::MAX);
                        self.rows::<PendingRow>(&statements.outbox.pending_page, (bucket, after, chunk_i32))
                    }))
                    .await?;
                    for ((bucket, _), rows) in reads.into_iter().zip(pages) {
                        merge.refill(
                            bucket,
                            rows.into_iter().map(PendingEntry::from_row).collect(),
                            chunk,
                        );
                    }
                    continue;
                }
                Step::Row(entry) => {
                    if !skip.contains(entry.message.id.as_str()) {
                        candidates.push(entry);
                    }
                    false
                }
                Step::Done => true,
            };
            if done || candidates.len() >= limit - found.len() {
                let checked: Vec<Option<OutboxMessage>> = futures::stream::iter(candidates.drain(..))
                    .map(|entry| self.check_pending(statements, entry))
                    .buffered(READ_FAN_OUT)
                    .try_collect()
                    .await?;
                found.extend(checked.into_iter().flatten());
                if done || found.len() >= limit {
                    break;
                }
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn mark_outbox_sent(&self, ids: &[String]) -> Result<(), StoreError> {
        validate_ids(ids)?;
        if ids.is_empty() {
            return Ok(());
        }
        let statements = self.statements().await?;
        futures::stream::iter(ids.to_vec())
            .map(|id| async move {
                self.run(&statements.outbox.delete_pending, (bucket_of(&id), &id))
                    .await
            })
            .buffer_unordered(READ_FAN_OUT)
            .try_for_each(|_| async { Ok(()) })
            .await
    }
}
