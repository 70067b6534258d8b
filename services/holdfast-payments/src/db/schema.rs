//! The database's schema: migrations applied in order at open, counted by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::PaymentsError;

/// Schema migrations, applied in order at open; `PRAGMA user_version` counts those
/// applied. Append only: never edit a migration that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE payments (
        payment_id                TEXT    NOT NULL PRIMARY KEY,
        customer_id               TEXT    NOT NULL,
        order_reference           TEXT    NOT NULL,
        payment_method            TEXT    NOT NULL,
        status                    INTEGER NOT NULL, -- PaymentStatus
        decline_code              TEXT    NOT NULL,
        currency                  TEXT    NOT NULL,
        authorized_minor          INTEGER NOT NULL CHECK (authorized_minor > 0),
        captured_minor            INTEGER NOT NULL CHECK (captured_minor BETWEEN 0 AND authorized_minor),
        refunded_minor            INTEGER NOT NULL CHECK (refunded_minor BETWEEN 0 AND captured_minor),
        authorize_idempotency_key TEXT    NOT NULL,
        created_at_unix_ms        INTEGER NOT NULL,
        updated_at_unix_ms        INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    -- Not unique: once a key's 24 hours are over it may authorize a new payment.
    CREATE INDEX payments_by_authorize_key ON payments (authorize_idempotency_key, created_at_unix_ms);

    CREATE TABLE ledger_entries (
        entry_id           TEXT    NOT NULL PRIMARY KEY, -- UUID v7, ascending = posting order
        payment_id         TEXT    NOT NULL REFERENCES payments (payment_id),
        order_reference    TEXT    NOT NULL,
        kind               INTEGER NOT NULL, -- LedgerEntryKind
        debit_account      TEXT    NOT NULL,
        credit_account     TEXT    NOT NULL,
        amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
        currency           TEXT    NOT NULL,
        idempotency_key    TEXT    NOT NULL,
        refund_id          TEXT    NOT NULL DEFAULT '', -- REFUND entries only
        reason             TEXT    NOT NULL DEFAULT '', -- REFUND entries only
        created_at_unix_ms INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX ledger_by_payment ON ledger_entries (payment_id, entry_id);
    CREATE INDEX ledger_by_order ON ledger_entries (order_reference, entry_id);

    -- One row per (RPC, key): the request it was first used with (the encoded request
    -- with the key cleared) and the answer given, so a repeat gets the same answer.
    CREATE TABLE idempotency_records (
        scope              TEXT    NOT NULL, -- authorize, capture, void, refund
        idempotency_key    TEXT    NOT NULL,
        fingerprint        BLOB    NOT NULL,
        response           BLOB    NOT NULL, -- the encoded <Rpc>Response
        created_at_unix_ms INTEGER NOT NULL,
        expires_at_unix_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, idempotency_key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX idempotency_by_expiry ON idempotency_records (expires_at_unix_ms);

    -- Authorize keys whose first pm_card_flaky attempt already failed.
    CREATE TABLE flaky_attempts (
        idempotency_key    TEXT    NOT NULL PRIMARY KEY,
        created_at_unix_ms INTEGER NOT NULL,
        expires_at_unix_ms INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX flaky_by_expiry ON flaky_attempts (expires_at_unix_ms);
    "#,
];

/// Applies the migrations this database lacks, each in its own transaction. The version
/// is re-read under the write lock, so two processes opening one file migrate it once.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), PaymentsError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let applied = usize::try_from(applied)
            .map_err(|_| PaymentsError::Corrupt(format!("negative schema version {applied}")))?;
        let Some(next) = MIGRATIONS.get(applied) else {
            if applied > MIGRATIONS.len() {
                return Err(PaymentsError::Corrupt(format!(
                    "database schema version {applied} is newer than this build knows ({})",
                    MIGRATIONS.len()
                )));
            }
            return Ok(());
        };
        tx.execute_batch(next)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(applied + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
}
