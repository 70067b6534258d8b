//! The waiting room on ScyllaDB: `waiting_room_keys` (one partition per (queue, key),
//! claimed with an LWT) makes a key wait once; `waiting_room` (one partition per queue,
//! clustered by `seq`) keeps arrival order. `seq` is the enqueuing clock in microseconds.
//!
//! Enqueue writes the key row first, then the ordered row; a crash between the two leaves
//! a key without its place, which the key's next enqueue (the client's retry) puts back.
//! Dequeue deletes the key row first, then every ordered row of the key (found by a
//! filtered read of the one partition): a crash between, or an enqueue repair racing a
//! dequeue, leaves an ordered row the worker lists again, and its idempotent processing
//! (the key claim) dequeues it.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, lwt_outcome, prepare_statement};
use crate::waiting_room::{Enqueued, QueuedEntry, WaitingRoomStore, validate, validate_head};
use crate::{StoreError, now_ms};

/// The waiting room statements, prepared.
pub(super) struct WaitingRoomStatements {
    get_key: PreparedStatement,
    claim_key: PreparedStatement,
    place: PreparedStatement,
    ahead: PreparedStatement,
    depth: PreparedStatement,
    head: PreparedStatement,
    forget_key: PreparedStatement,
    unplace: PreparedStatement,
    find_placed: PreparedStatement,
}

impl WaitingRoomStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        Ok(Self {
            get_key: prepare(
                format!(
                    "SELECT seq, payload, enqueued_at_ms FROM {ks}.waiting_room_keys WHERE queue = ? AND key = ?"
                ),
                true,
            )
            .await?,
            claim_key: prepare(
                format!(
                    "INSERT INTO {ks}.waiting_room_keys (queue, key, seq, payload, enqueued_at_ms) \
                     VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            place: prepare(
                format!(
                    "INSERT INTO {ks}.waiting_room (queue, seq, key, payload, enqueued_at_ms) VALUES (?, ?, ?, ?, ?)"
                ),
                true,
            )
            .await?,
            ahead: prepare(
                format!("SELECT COUNT(*) FROM {ks}.waiting_room WHERE queue = ? AND (seq, key) <= (?, ?)"),
                true,
            )
            .await?,
            depth: prepare(
                format!("SELECT COUNT(*) FROM {ks}.waiting_room WHERE queue = ?"),
                true,
            )
            .await?,
            head: prepare(
                format!(
                    "SELECT key, payload, enqueued_at_ms, seq FROM {ks}.waiting_room WHERE queue = ? LIMIT ?"
                ),
                true,
            )
            .await?,
            forget_key: prepare(
                format!("DELETE FROM {ks}.waiting_room_keys WHERE queue = ? AND key = ?"),
                true,
            )
            .await?,
            unplace: prepare(
                format!("DELETE FROM {ks}.waiting_room WHERE queue = ? AND seq = ? AND key = ?"),
                true,
            )
            .await?,
            // Within one (bounded) partition: finds an ordered row whose key row is gone.
            find_placed: prepare(
                format!("SELECT seq FROM {ks}.waiting_room WHERE queue = ? AND key = ? ALLOW FILTERING"),
                true,
            )
            .await?,
        })
    }
}

/// Wall-clock time in Unix microseconds: arrival order across enqueuers.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

type KeyRow = (Option<i64>, Option<Vec<u8>>, Option<i64>);

impl ScyllaStore {
    async fn waiting_entry(&self, queue: &str, key: &str) -> Result<Option<QueuedEntry>, StoreError> {
        let statements = &self.statements().await?.waiting_room;
        let row = self
            .rows::<KeyRow>(&statements.get_key, (queue, key))
            .await?
            .into_iter()
            .next();
        Ok(row.and_then(|(seq, payload, enqueued_at_ms)| {
            Some(QueuedEntry {
                queue: queue.to_string(),
                key: key.to_string(),
                payload: payload.unwrap_or_default(),
                enqueued_at_ms: enqueued_at_ms.unwrap_or_default(),
                seq: seq?,
            })
        }))
    }

    /// Puts `entry` in its place in arrival order (idempotent) and answers its position.
    async fn place(&self, entry: &QueuedEntry) -> Result<u64, StoreError> {
        let statements = &self.statements().await?.waiting_room;
        self.run(
            &statements.place,
            (
                &entry.queue,
                entry.seq,
                &entry.key,
                &entry.payload,
                entry.enqueued_at_ms,
            ),
        )
        .await?;
        let ahead = self
            .rows::<(i64,)>(&statements.ahead, (&entry.queue, entry.seq, &entry.key))
            .await?;
        Ok(ahead.first().map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0)))
    }
}

impl WaitingRoomStore for ScyllaStore {
    async fn enqueue(
        &self,
        queue: &str,
        key: &str,
        payload: Vec<u8>,
        max_depth: u64,
    ) -> Result<Enqueued, StoreError> {
        validate(queue, key)?;
        if let Some(entry) = self.waiting_entry(queue, key).await? {
            let position = self.place(&entry).await?;
            return Ok(Enqueued::Existing { position, entry });
        }
        let depth = self.queue_depth(queue).await?;
        if depth >= max_depth {
            return Ok(Enqueued::Full { depth });
        }
        let now = now_ms();
        let entry = QueuedEntry {
            queue: queue.to_string(),
            key: key.to_string(),
            payload,
            enqueued_at_ms: now,
            seq: now_us(),
        };
        let statements = &self.statements().await?.waiting_room;
        let claimed = self
            .run(
                &statements.claim_key,
                (queue, key, entry.seq, &entry.payload, entry.enqueued_at_ms),
            )
            .await?;
        if !lwt_outcome(claimed)?.0 {
            // Another enqueue of the key won: answer its entry.
            let entry = self
                .waiting_entry(queue, key)
                .await?
                .ok_or_else(|| StoreError::Unavailable("waiting room key changed during enqueue".into()))?;
            let position = self.place(&entry).await?;
            return Ok(Enqueued::Existing { position, entry });
        }
        let position = self.place(&entry).await?;
        Ok(Enqueued::Added { position, entry })
    }

    async fn queue_position(&self, queue: &str, key: &str) -> Result<Option<(QueuedEntry, u64)>, StoreError> {
        validate(queue, key)?;
        let Some(entry) = self.waiting_entry(queue, key).await? else {
            return Ok(None);
        };
        let statements = &self.statements().await?.waiting_room;
        let ahead = self
            .rows::<(i64,)>(&statements.ahead, (queue, entry.seq, key))
            .await?;
        let position = ahead.first().map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0));
        // A key whose ordered row a crash lost still waits: first in line among equals.
        Ok(Some((entry, position.max(1))))
    }

    async fn queue_head(&self, queue: &str, limit: u32) -> Result<Vec<QueuedEntry>, StoreError> {
        validate_head(queue, limit)?;
        let statements = &self.statements().await?.waiting_room;
        let rows = self
            .rows::<(String, Option<Vec<u8>>, Option<i64>, i64)>(
                &statements.head,
                (queue, i32::try_from(limit).unwrap_or(1000)),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(key, payload, enqueued_at_ms, seq)| QueuedEntry {
                queue: queue.to_string(),
                key,
                payload: payload.unwrap_or_default(),
                enqueued_at_ms: enqueued_at_ms.unwrap_or_default(),
                seq,
            })
            .collect())
    }

    async fn dequeue(&self, queue: &str, key: &str) -> Result<bool, StoreError> {
        validate(queue, key)?;
        let statements = &self.statements().await?.waiting_room;
        let keyed = self.waiting_entry(queue, key).await?;
        // Every ordered row of the key, also one a race or a crash left without its key row.
        let mut seqs: Vec<i64> = self
            .rows::<(i64,)>(&statements.find_placed, (queue, key))
            .await?
            .into_iter()
            .map(|(seq,)| seq)
            .collect();
        if let Some(entry) = &keyed {
            self.run(&statements.forget_key, (queue, key)).await?;
            seqs.push(entry.seq);
        }
        seqs.sort_unstable();
        seqs.dedup();
        for seq in &seqs {
            self.run(&statements.unplace, (queue, *seq, key)).await?;
        }
        Ok(keyed.is_some() || !seqs.is_empty())
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        validate(queue, "-")?;
        let statements = &self.statements().await?.waiting_room;
        let depth = self.rows::<(i64,)>(&statements.depth, (queue,)).await?;
        Ok(depth.first().map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0)))
    }
}
