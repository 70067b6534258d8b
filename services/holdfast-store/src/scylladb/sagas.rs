//! Sagas on ScyllaDB.
//!
//! A saga is the static columns of its `sagas` partition; the events its transitions
//! announced are clustering rows of the same partition. A transition is therefore one
//! conditional batch in one partition (`IF version = ? AND finished = false` plus the event
//! rows): the move and its events apply together or not at all.
//!
//! `sagas_by_lease` indexes unfinished sagas by lease end, over bucket partitions, for
//! [`list_stalled_sagas`](SagaStore::list_stalled_sagas). Its rows are keyed by (lease end,
//! id, version) and written *before* the LWT that sets that lease at that version, so the
//! saga's current lease always has a row; a row that does not match the saga (the LWT lost,
//! or the saga moved on) is skipped when listing, and deleted once the saga's version has
//! reached the row's: no transition can produce that row's state any more.

use scylla::client::session::Session;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;

use super::buckets::{BUCKETS, BucketMerge, Step, bucket_of, chunk_for};
use super::outbox::{Home, home_event_row};
use super::{BatchRow, READ_FAN_OUT, ScyllaStore, Statements, lwt_outcome, prepare_statement, serial};
use crate::outbox::{OutboxMessage, distinct_messages};
use crate::sagas::{MAX_STALLED_BATCH, SagaRecord, SagaStore, SagaTransition, is_stalled, validate_saga_id};
use crate::{StoreError, now_ms};
use futures::{StreamExt, TryStreamExt};

const SAGA_COLUMNS: &str =
    "kind, step, state, version, lease_owner, lease_until_ms, finished, created_at_ms, updated_at_ms";

/// A saga's static columns in `SAGA_COLUMNS` order; all null when there is no saga.
type SagaRow = (
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
);

/// A `sagas_by_lease` row: lease end, saga id, the saga version that set that lease.
type LeaseEntry = (i64, String, i64);

/// The saga statements, prepared.
pub(super) struct SagaStatements {
    get: PreparedStatement,
    get_serial: PreparedStatement,
    insert_if_absent: PreparedStatement,
    transition_if_version: PreparedStatement,
    index_lease: PreparedStatement,
    unindex_lease: PreparedStatement,
    lease_page: PreparedStatement,
}

impl SagaStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let get = prepare(
            format!("SELECT {SAGA_COLUMNS} FROM {ks}.sagas WHERE id = ? LIMIT 1"),
            true,
        )
        .await?;
        Ok(Self {
            get_serial: serial(&get),
            get,
            // Static columns only: the partition's saga, not an event row.
            insert_if_absent: prepare(
                format!(
                    "INSERT INTO {ks}.sagas (id, {SAGA_COLUMNS}) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?) \
                     IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            transition_if_version: prepare(
                format!(
                    "UPDATE {ks}.sagas SET step = ?, state = ?, version = ?, lease_owner = ?, \
                     lease_until_ms = ?, finished = ?, updated_at_ms = ? \
                     WHERE id = ? IF version = ? AND finished = false"
                ),
                false,
            )
            .await?,
            index_lease: prepare(
                format!(
                    "INSERT INTO {ks}.sagas_by_lease (bucket, lease_until_ms, id, version) VALUES (?, ?, ?, ?)"
                ),
                true,
            )
            .await?,
            unindex_lease: prepare(
                format!(
                    "DELETE FROM {ks}.sagas_by_lease \
                     WHERE bucket = ? AND lease_until_ms = ? AND id = ? AND version = ?"
                ),
                true,
            )
            .await?,
            lease_page: prepare(
                format!(
                    "SELECT lease_until_ms, id, version FROM {ks}.sagas_by_lease \
                     WHERE bucket = ? AND (lease_until_ms, id, version) > (?, ?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,
        })
    }
}

fn saga_from_row(id: &str, row: SagaRow) -> Result<Option<SagaRecord>, StoreError> {
    let (kind, step, state, version, lease_owner, lease_until_ms, finished, created_at_ms, updated_at_ms) =
        row;
    let Some(version) = version else {
        return Ok(None);
    };
    Ok(Some(SagaRecord {
        id: id.to_string(),
        kind: kind.unwrap_or_default(),
        step: step.unwrap_or_default(),
        state: state.unwrap_or_default(),
        version: StoreError::version_from_i64(version)?,
        lease_owner: lease_owner.unwrap_or_default(),
        lease_until_ms: lease_until_ms.unwrap_or_default(),
        finished: finished.unwrap_or_default(),
        created_at_ms: created_at_ms.unwrap_or_default(),
        updated_at_ms: updated_at_ms.unwrap_or_default(),
    }))
}

impl ScyllaStore {
    async fn read_saga(
        &self,
        statement: &PreparedStatement,
        id: &str,
    ) -> Result<Option<SagaRecord>, StoreError> {
        match self.rows::<SagaRow>(statement, (id,)).await?.into_iter().next() {
            Some(row) => saga_from_row(id, row),
            None => Ok(None),
        }
    }

    /// Indexes the saga `id` as leased until `lease_until_ms` at `version`.
    async fn index_lease(
        &self,
        statements: &Statements,
        id: &str,
        lease_until_ms: i64,
        version: u64,
    ) -> Result<(), StoreError> {
        self.run(
            &statements.sagas.index_lease,
            (
                bucket_of(id),
                lease_until_ms,
                id,
                StoreError::version_to_i64(version)?,
            ),
        )
        .await?;
        Ok(())
    }

    /// The saga behind a stalled-index row if the row is its current state and it is
    /// stalled; deletes rows no transition can make current any more.
    async fn check_lease_entry(
        &self,
        statements: &Statements,
        entry: LeaseEntry,
        now: i64,
    ) -> Result<Option<SagaRecord>, StoreError> {
        let (lease_until_ms, id, version) = entry;
        let Some(saga) = self.read_saga(&statements.sagas.get, &id).await? else {
            // A create that has not applied (yet, or ever): nothing to say about it.
            return Ok(None);
        };
        let saga_version = StoreError::version_to_i64(saga.version)?;
        let current = saga_version == version && saga.lease_until_ms == lease_until_ms;
        if current && is_stalled(&saga, now) {
            return Ok(Some(saga));
        }
        if saga.finished || saga_version > version || (saga_version == version && !current) {
            self.run(
                &statements.sagas.unindex_lease,
                (bucket_of(&id), lease_until_ms, &id, version),
            )
            .await?;
        }
        Ok(None)
    }
}

impl SagaStore for ScyllaStore {
    async fn create_saga(&self, saga: SagaRecord) -> Result<SagaRecord, StoreError> {
        validate_saga_id(&saga.id)?;
        let statements = self.statements().await?;
        let stored = SagaRecord {
            version: 1,
            updated_at_ms: now_ms(),
            ..saga
        };
        if !stored.finished {
            self.index_lease(statements, &stored.id, stored.lease_until_ms, 1)
                .await?;
        }
        let result = self
            .run(
                &statements.sagas.insert_if_absent,
                (
                    &stored.id,
                    &stored.kind,
                    &stored.step,
                    &stored.state,
                    &stored.lease_owner,
                    stored.lease_until_ms,
                    stored.finished,
                    stored.created_at_ms,
                    stored.updated_at_ms,
                ),
            )
            .await?;
        if lwt_outcome(result)?.0 {
            return Ok(stored);
        }
        self.read_saga(&statements.sagas.get_serial, &stored.id)
            .await?
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "saga {:?} refused a create but cannot be read",
                    stored.id
                ))
            })
    }

    async fn get_saga(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        validate_saga_id(id)?;
        let statements = self.statements().await?;
        self.read_saga(&statements.sagas.get, id).await
    }

    async fn transition_saga(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
    ) -> Result<SagaRecord, StoreError> {
        validate_saga_id(id)?;
        let expected = StoreError::version_to_i64(expected_version)?;
        let next_version = expected_version.saturating_add(1);
        let next = StoreError::version_to_i64(next_version)?;
        let outbox = distinct_messages(outbox)?;
        let statements = self.statements().await?;

        // A quorum read sees every committed transition, and versions only grow: a saga
        // that is not at `expected_version` now never will be, so refuse without an LWT
        // (and without index rows that would only be cleaned up later).
        let current = self.read_saga(&statements.sagas.get, id).await?.ok_or_else(|| {
            StoreError::NotFound(format!("saga {id:?} (expected version {expected_version})"))
        })?;
        if current.version != expected_version || current.finished {
            return Err(StoreError::VersionConflict {
                expected: expected_version,
                actual: current.version,
            });
        }

        // Index rows first, so that whatever the LWT's fate, nothing it wrote is unindexed.
        if !transition.finished {
            self.index_lease(statements, id, transition.lease_until_ms, next_version)
                .await?;
        }
        self.index_pending(Some(Home::Saga), id, next, &outbox).await?;

        let now = now_ms();
        let values = (
            transition.step.clone(),
            transition.state.clone(),
            next,
            transition.lease_owner.clone(),
            transition.lease_until_ms,
            transition.finished,
            now,
            id.to_string(),
            expected,
        );
        let result = if outbox.is_empty() {
            self.run(&statements.sagas.transition_if_version, values).await?
        } else {
            // One partition of one table: the only kind of conditional batch ScyllaDB
            // runs, and exactly what makes the move and its events atomic.
            let mut batch = Batch::default();
            batch.append_statement(statements.sagas.transition_if_version.clone());
            let mut rows: Vec<BatchRow> = vec![Box::new(values)];
            for message in &outbox {
                batch.append_statement(statements.outbox.insert_saga_event.clone());
                rows.push(home_event_row(id, message));
            }
            self.run_batch(&batch, rows).await?
        };
        match lwt_outcome(result)? {
            (true, _) => {}
            (false, None) => {
                return Err(StoreError::NotFound(format!(
                    "saga {id:?} (expected version {expected_version})"
                )));
            }
            (false, Some(actual)) => {
                return Err(StoreError::VersionConflict {
                    expected: expected_version,
                    actual: StoreError::version_from_i64(actual)?,
                });
            }
        }
        // The previous lease's index row can never be current again. Best effort: the
        // transition is committed whatever happens here, and a leftover row is dropped by
        // the next listing that reaches it.
        let _ = self
            .run(
                &statements.sagas.unindex_lease,
                (bucket_of(id), current.lease_until_ms, id, expected),
            )
            .await;
        Ok(SagaRecord {
            id: id.to_string(),
            kind: current.kind,
            step: transition.step,
            state: transition.state,
            version: next_version,
            lease_owner: transition.lease_owner,
            lease_until_ms: transition.lease_until_ms,
            finished: transition.finished,
            created_at_ms: current.created_at_ms,
            updated_at_ms: now,
        })
    }

    async fn list_stalled_sagas(&self, now_ms: i64, limit: u32) -> Result<Vec<SagaRecord>, StoreError> {
        let limit = limit.min(MAX_STALLED_BATCH) as usize;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let statements = self.statements().await?;
        let chunk = chunk_for(limit);
        let chunk_i32 = i32::try_from(chunk).unwrap_or(i32::MAX);
        let mut merge = BucketMerge::new(
            BUCKETS,
            (i64::MIN, String::new(), i64::MIN),
            |entry: &LeaseEntry| entry.clone(),
        );
        let mut found = Vec::with_capacity(limit);
        let mut candidates = Vec::new();
        loop {
            let done = match merge.next() {
                Step::Read(reads) => {
                    let pages = futures::future::try_join_all(reads.iter().map(|(bucket, after)| {
                        let bucket = i32::try_from(*bucket).unwrap_or(i32::MAX);
                        self.rows::<LeaseEntry>(
                            &statements.sagas.lease_page,
                            (bucket, after.0, &after.1, after.2, chunk_i32),
                        )
                    }))
                    .await?;
                    for ((bucket, _), rows) in reads.into_iter().zip(pages) {
                        merge.refill(bucket, rows, chunk);
                    }
                    continue;
                }
                // In lease order: the first lease not yet ended ends the listing.
                Step::Row(entry) if entry.0 < now_ms => {
                    candidates.push(entry);
                    false
                }
                Step::Row(_) | Step::Done => true,
            };
            if done || candidates.len() >= limit - found.len() {
                let checked: Vec<Option<SagaRecord>> = futures::stream::iter(candidates.drain(..))
                    .map(|entry| self.check_lease_entry(statements, entry, now_ms))
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
}
