//! Sagas on SQLite: one table, with a partial index over the unfinished ones by lease end.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::outbox::insert_messages;
use super::{SqliteStore, sqlite_error};
use crate::outbox::{OutboxMessage, distinct_messages};
use crate::sagas::{MAX_STALLED_BATCH, SagaRecord, SagaStore, SagaTransition, validate_saga_id};
use crate::{StoreError, now_ms};

const SAGA_COLUMNS: &str = "id, kind, step, state, version, lease_owner, lease_until_ms, finished, \
     created_at_ms, updated_at_ms";

fn read_saga(row: &Row<'_>) -> rusqlite::Result<SagaRecord> {
    let version: i64 = row.get(4)?;
    Ok(SagaRecord {
        id: row.get(0)?,
        kind: row.get(1)?,
        step: row.get(2)?,
        state: row.get(3)?,
        version: u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(4, version))?,
        lease_owner: row.get(5)?,
        lease_until_ms: row.get(6)?,
        finished: row.get(7)?,
        created_at_ms: row.get(8)?,
        updated_at_ms: row.get(9)?,
    })
}

fn select_saga(conn: &Connection, id: &str) -> Result<Option<SagaRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?1"))
        .and_then(|mut statement| statement.query_row([id], read_saga).optional())
        .map_err(sqlite_error)
}

/// Moves saga `id` from `expected_version` by `transition`, with `outbox` (checked
/// distinct by the caller); the saga as stored.
pub(super) fn transition_on(
    conn: &Connection,
    id: String,
    expected_version: u64,
    transition: SagaTransition,
    outbox: &[OutboxMessage],
) -> Result<SagaRecord, StoreError> {
    validate_saga_id(&id)?;
    let expected = StoreError::version_to_i64(expected_version)?;
    let next = StoreError::version_to_i64(expected_version.saturating_add(1))?;
    // The condition and the move are one statement; the events join them in this
    // savepoint, so a refused transition writes no events either. RETURNING gives
    // the two columns the transition does not set, instead of reading the row back.
    let updated_at_ms = now_ms();
    let moved = conn
        .prepare_cached(
            "UPDATE sagas SET step = ?1, state = ?2, version = ?3, lease_owner = ?4,
                 lease_until_ms = ?5, finished = ?6, updated_at_ms = ?7
             WHERE id = ?8 AND version = ?9 AND finished = 0
             RETURNING kind, created_at_ms",
        )
        .and_then(|mut statement| {
            statement
                .query_row(
                    params![
                        transition.step,
                        transition.state,
                        next,
                        transition.lease_owner,
                        transition.lease_until_ms,
                        transition.finished,
                        updated_at_ms,
                        id,
                        expected,
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
        })
        .map_err(sqlite_error)?;
    let Some((kind, created_at_ms)) = moved else {
        return Err(match select_saga(conn, &id)? {
            None => StoreError::NotFound(format!("saga {id:?} (expected version {expected_version})")),
            // A finished saga at the expected version is refused the same way: it
            // moved on, to its end.
            Some(current) => StoreError::VersionConflict {
                expected: expected_version,
                actual: current.version,
            },
        });
    };
    insert_messages(conn, outbox)?;
    Ok(SagaRecord {
        id,
        kind,
        step: transition.step,
        state: transition.state,
        version: expected_version.saturating_add(1),
        lease_owner: transition.lease_owner,
        lease_until_ms: transition.lease_until_ms,
        finished: transition.finished,
        created_at_ms,
        updated_at_ms,
    })
}

impl SagaStore for SqliteStore {
    async fn create_saga(&self, saga: SagaRecord) -> Result<SagaRecord, StoreError> {
        validate_saga_id(&saga.id)?;
        self.write(move |conn| {
            let tx = conn;
            if let Some(existing) = select_saga(tx, &saga.id)? {
                return Ok(existing);
            }
            let stored = SagaRecord {
                version: 1,
                updated_at_ms: now_ms(),
                ..saga
            };
            tx.prepare_cached(&format!(
                "INSERT INTO sagas ({SAGA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    stored.id,
                    stored.kind,
                    stored.step,
                    stored.state,
                    stored.lease_owner,
                    stored.lease_until_ms,
                    stored.finished,
                    stored.created_at_ms,
                    stored.updated_at_ms,
                ])
            })
            .map_err(sqlite_error)?;
            Ok(stored)
        })
        .await
    }

    async fn get_saga(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        validate_saga_id(id)?;
        let id = id.to_string();
        self.lookup(move |conn| select_saga(conn, &id)).await
    }

    async fn transition_saga(
        &self,
        id: &str,
        expected_version: u64,
        transition: SagaTransition,
        outbox: Vec<OutboxMessage>,
    ) -> Result<SagaRecord, StoreError> {
        validate_saga_id(id)?;
        let outbox = distinct_messages(outbox)?;
        let id = id.to_string();
        self.write(move |conn| transition_on(conn, id, expected_version, transition, &outbox))
            .await
    }

    async fn list_stalled_sagas(&self, now_ms: i64, limit: u32) -> Result<Vec<SagaRecord>, StoreError> {
        let limit = i64::from(limit.min(MAX_STALLED_BATCH));
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            // Oldest stall first: the lease that ended longest ago, ties by id.
            conn.prepare_cached(&format!(
                "SELECT {SAGA_COLUMNS} FROM sagas
                 WHERE finished = 0 AND lease_until_ms < ?1
                 ORDER BY lease_until_ms, id LIMIT ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map(params![now_ms, limit], read_saga)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }
}
