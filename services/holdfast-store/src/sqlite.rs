//! The embedded backend: one SQLite file (rusqlite, bundled), the default for `holdfast dev`.
//!
//! The file is a [`holdfast_sqlite::Db`]: every write is a job for one writer thread that
//! commits what is queued together (a savepoint per job, answered after the COMMIT), reads
//! run on read-only connections, and checkpoints run on a thread of their own. So a write
//! here is a function over a `&Connection` that is already inside a transaction: it never
//! begins or commits one itself, and an `Err` from it rolls back its writes (and only its).
//! WAL lets other processes (a `sqlite3` shell, a backup) read while the service writes,
//! and `busy_timeout` makes such a reader's lock a short wait instead of an error.

use std::path::Path;

use holdfast_sqlite::{Db, Failure, Options};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::StoreError;

mod cart_purge;
mod carts;
mod idempotency;
mod joined;
mod orders;
mod outbox;
mod products;
mod sagas;
mod standing;
mod stock_truth;
mod waiting_room;
mod warehouse;

/// Schema migrations, applied in order at open; `PRAGMA user_version` counts those applied.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: products and carts (issue 4).
    r#"
    CREATE TABLE products (
        sku           TEXT    NOT NULL PRIMARY KEY,
        title         TEXT    NOT NULL,
        description   TEXT    NOT NULL,
        price_minor   INTEGER NOT NULL,
        currency      TEXT    NOT NULL,
        category      TEXT    NOT NULL,
        brand         TEXT    NOT NULL,
        attributes    TEXT    NOT NULL, -- JSON object of strings
        active        INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX products_by_category ON products (category, sku);

    CREATE TABLE carts (
        owner         TEXT    NOT NULL PRIMARY KEY,
        lines         TEXT    NOT NULL, -- JSON array of line records
        version       INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        -- A deleted cart keeps its row and version, so late older saves stay ignored.
        deleted       INTEGER NOT NULL DEFAULT 0
    ) STRICT, WITHOUT ROWID;
    "#,
    // 2: orders, sagas, idempotency keys and the outbox. Plain rowid tables: their rows
    // carry payloads of kilobytes, which WITHOUT ROWID tables store poorly.
    r#"
    CREATE TABLE orders (
        id            TEXT    NOT NULL PRIMARY KEY,
        customer_id   TEXT    NOT NULL,
        status        INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        payload       BLOB    NOT NULL
    ) STRICT;
    -- A customer's listing, newest first. `status` rides along so the status filter is
    -- decided in the index, before a row (and its payload) is read.
    CREATE INDEX orders_by_customer ON orders (customer_id, created_at_ms DESC, id DESC, status);

    CREATE TABLE sagas (
        id             TEXT    NOT NULL PRIMARY KEY,
        kind           TEXT    NOT NULL,
        step           TEXT    NOT NULL,
        state          BLOB    NOT NULL,
        version        INTEGER NOT NULL,
        lease_owner    TEXT    NOT NULL,
        lease_until_ms INTEGER NOT NULL,
        finished       INTEGER NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) STRICT;
    -- Only unfinished sagas can stall, so the index holds the work in flight, not history.
    CREATE INDEX sagas_stalled ON sagas (lease_until_ms, id) WHERE finished = 0;

    CREATE TABLE idempotency_keys (
        scope         TEXT    NOT NULL,
        key           TEXT    NOT NULL,
        fingerprint   TEXT    NOT NULL,
        resource_id   TEXT    NOT NULL,
        response      BLOB,   -- NULL until the work is done
        created_at_ms INTEGER NOT NULL,
        -- An expired row counts as absent; a new claim replaces it, a purge deletes it.
        expires_at_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at_ms);

    -- Unsent events only: marking one sent deletes its row, so the table stays the size of
    -- the relay's backlog and `ORDER BY id` walks the primary key index.
    CREATE TABLE outbox (
        id            TEXT    NOT NULL PRIMARY KEY,
        topic         TEXT    NOT NULL,
        event_key     TEXT    NOT NULL,
        event_type    TEXT    NOT NULL,
        payload       BLOB    NOT NULL,
        headers       TEXT    NOT NULL, -- JSON object of strings
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: warehouses, their stock and shipments, and the claims that make warehouse
    // changes happen once (issue 6). Warehouse events use the outbox of migration 2.
    r#"
    CREATE TABLE warehouses (
        id               TEXT    NOT NULL PRIMARY KEY,
        name             TEXT    NOT NULL,
        region           TEXT    NOT NULL,
        latitude         REAL    NOT NULL,
        longitude        REAL    NOT NULL,
        shipping_options TEXT    NOT NULL, -- JSON array of option records
        active           INTEGER NOT NULL,
        created_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX warehouses_by_region ON warehouses (region, id);

    -- The invariant lives in the table too: a change that would break it fails, whatever
    -- code path wrote it.
    CREATE TABLE warehouse_stock (
        sku           TEXT    NOT NULL,
        warehouse_id  TEXT    NOT NULL,
        physical      INTEGER NOT NULL,
        allocatable   INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (sku, warehouse_id),
        CHECK (0 <= allocatable AND allocatable <= physical)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX warehouse_stock_by_warehouse ON warehouse_stock (warehouse_id, sku);

    CREATE TABLE shipments (
        id              TEXT    NOT NULL PRIMARY KEY,
        order_id        TEXT    NOT NULL,
        warehouse_id    TEXT    NOT NULL,
        status          INTEGER NOT NULL,
        lines           TEXT    NOT NULL, -- JSON array of line records
        carrier         TEXT    NOT NULL,
        tracking_number TEXT    NOT NULL,
        ship_to         BLOB    NOT NULL,
        shipping_speed  INTEGER NOT NULL,
        promised_by_ms  INTEGER NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        shipped_at_ms   INTEGER NOT NULL,
        delivered_at_ms INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL,
        version         INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX shipments_by_order ON shipments (order_id, created_at_ms, id);
    -- `status` rides along so the status filter is decided in the index.
    CREATE INDEX shipments_by_warehouse ON shipments (warehouse_id, created_at_ms, id, status);

    -- Processed event ids per consumer, routed orders, receipts, shrinkages, returns:
    -- each written in the transaction of the change it guards. Kept forever.
    CREATE TABLE warehouse_claims (
        scope         TEXT    NOT NULL,
        key           TEXT    NOT NULL,
        fingerprint   TEXT    NOT NULL,
        stock         TEXT    NOT NULL, -- JSON array of the stock rows the change left
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT;
    "#,
    // 4: inventory's durable truth (issue 18): the stock per SKU, absolute and versioned,
    // and every committed sale once per (SKU, reservation).
    r#"
    CREATE TABLE stock_truth (
        sku           TEXT    NOT NULL PRIMARY KEY,
        stocked       INTEGER NOT NULL, -- on_hand + sold over the SKU's buckets
        version       INTEGER NOT NULL, -- inventory's bucket-0 sequence number
        updated_at_ms INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE stock_sales (
        sku            TEXT    NOT NULL,
        reservation_id TEXT    NOT NULL,
        qty            INTEGER NOT NULL,
        at_ms          INTEGER NOT NULL,
        PRIMARY KEY (sku, reservation_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 5: the waiting room (issue 14): admitted work not started yet, in arrival order.
    r#"
    CREATE TABLE waiting_room (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        queue          TEXT    NOT NULL,
        key            TEXT    NOT NULL,
        payload        BLOB    NOT NULL,
        enqueued_at_ms INTEGER NOT NULL,
        UNIQUE (queue, key)
    ) STRICT;
    CREATE INDEX waiting_room_by_arrival ON waiting_room (queue, seq);
    "#,
    // 6: each waiting room's depth as a row, kept by triggers on every insert, delete and
    // move of an entry, whatever statement made it: admission reads it by key on every
    // checkout, where a `COUNT(*)` walked every waiting entry.
    r#"
    CREATE TABLE waiting_room_depth (
        queue TEXT    NOT NULL PRIMARY KEY,
        depth INTEGER NOT NULL CHECK (depth >= 0)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO waiting_room_depth (queue, depth)
        SELECT queue, COUNT(*) FROM waiting_room GROUP BY queue;

    CREATE TRIGGER waiting_room_enters AFTER INSERT ON waiting_room BEGIN
        INSERT OR IGNORE INTO waiting_room_depth (queue, depth) VALUES (NEW.queue, 0);
        UPDATE waiting_room_depth SET depth = depth + 1 WHERE queue = NEW.queue;
    END;
    CREATE TRIGGER waiting_room_leaves AFTER DELETE ON waiting_room BEGIN
        UPDATE waiting_room_depth SET depth = depth - 1 WHERE queue = OLD.queue;
    END;
    CREATE TRIGGER waiting_room_moves AFTER UPDATE OF queue ON waiting_room
        WHEN NEW.queue IS NOT OLD.queue BEGIN
        UPDATE waiting_room_depth SET depth = depth - 1 WHERE queue = OLD.queue;
        INSERT OR IGNORE INTO waiting_room_depth (queue, depth) VALUES (NEW.queue, 0);
        UPDATE waiting_room_depth SET depth = depth + 1 WHERE queue = NEW.queue;
    END;
    "#,
];

/// The SQLite store. Cheap to clone; clones share the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        if failure.is_corrupt() {
            StoreError::Corrupt(failure.to_string())
        } else {
            StoreError::Unavailable(failure.to_string())
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to
    /// date. Refuses a file whose schema is newer than this build.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_at(Some(path.as_ref().to_path_buf())).await
    }

    /// A private in-memory database with the full schema: real SQLite, gone on drop.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        Self::open_at(None).await
    }

    async fn open_at(path: Option<std::path::PathBuf>) -> Result<Self, StoreError> {
        let db = tokio::task::spawn_blocking(move || {
            Db::open(path.as_deref(), Options::default(), |conn: &mut Connection| {
                migrate(conn)
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite open task failed: {e}")))??;
        Ok(Self { db })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.db.path()
    }

    /// Runs `work` on the writer, in its own savepoint of the next group commit; answers
    /// once that committed. `work` must not begin or commit a transaction.
    fn write<T, F>(&self, work: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.write(work)
    }

    /// Runs `work` in one read transaction on a reader connection. `work` must not write.
    fn read<T, F>(&self, work: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.read(work)
    }

    /// Like [`Self::read`], on the calling thread: for a read of a few rows by key
    /// ([`holdfast_sqlite::Db::lookup`]).
    fn lookup<T, F>(&self, work: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.lookup(work)
    }
}

/// Applies the migrations this database lacks, each in its own transaction. The version
/// is re-read under the write lock, so two processes opening one file migrate it once.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let applied: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite_error)?;
        let applied = usize::try_from(applied)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {applied}")))?;
        let Some(next) = MIGRATIONS.get(applied) else {
            if applied > MIGRATIONS.len() {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {applied} is newer than this build knows ({})",
                    MIGRATIONS.len()
                )));
            }
            return Ok(());
        };
        tx.execute_batch(next).map_err(sqlite_error)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(applied + 1).unwrap_or(i64::MAX),
        )
        .map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
    }
}

fn sqlite_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("sqlite: {error}"))
        }
        Some(_) => StoreError::Unavailable(format!("sqlite: {error}")),
        // Not a failure of the engine: a row this code could not read.
        None => StoreError::Corrupt(format!("sqlite: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::carts::CartStore;
    use crate::now_ms;
    use crate::products::{Product, ProductStore};

    fn product(sku: &str) -> Product {
        Product {
            sku: sku.into(),
            title: "t".into(),
            category: "c".into(),
            currency: "EUR".into(),
            ..Product::default()
        }
    }

    #[tokio::test]
    async fn sqlite_file_is_in_wal_mode_with_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("store.db")).await.unwrap();
        let (mode, version) = store
            .read(|conn| {
                let mode: String = conn
                    .pragma_query_value(None, "journal_mode", |r| r.get(0))
                    .unwrap();
                let version: i64 = conn
                    .pragma_query_value(None, "user_version", |r| r.get(0))
                    .unwrap();
                Ok((mode, version))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn sqlite_reopen_keeps_data_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let first = SqliteStore::open(&path).await.unwrap();
        first.upsert_product(product("kept"), Some(0)).await.unwrap();
        drop(first);

        let again = SqliteStore::open(&path).await.unwrap();
        let kept = again
            .get_product("kept")
            .await
            .unwrap()
            .expect("product survives reopen");
        assert_eq!(kept.version, 1);
    }

    #[tokio::test]
    async fn sqlite_open_refuses_schema_newer_than_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt(ref m) if m.contains("newer")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn sqlite_open_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::write(&path, vec![0x42_u8; 8192]).unwrap();
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    }

    #[tokio::test]
    async fn sqlite_purge_counts_every_expired_key_across_chunks_and_keeps_live_ones() {
        use crate::{IdempotencyRecord, IdempotencyStore};
        let store = SqliteStore::open_in_memory().await.unwrap();
        let now = now_ms();
        let expired = i64::from(u16::MAX) % 5000 + 5000 + 3; // more than one chunk
        store
            .write(move |conn| {
                for i in 0..expired {
                    conn.execute(
                        "INSERT INTO idempotency_keys VALUES ('s', ?1, 'fp', 'r', NULL, 0, ?2)",
                        params![format!("k{i}"), now - 1 - i],
                    )
                    .map_err(sqlite_error)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let live = IdempotencyRecord {
            scope: "s".into(),
            key: "live".into(),
            expires_at_ms: now + 60_000,
            ..IdempotencyRecord::default()
        };
        store.claim_key(live.clone()).await.unwrap();

        assert_eq!(
            store.purge_expired_keys(now).await.unwrap(),
            u64::try_from(expired).unwrap()
        );
        assert_eq!(
            store.purge_expired_keys(now).await.unwrap(),
            0,
            "nothing left to purge"
        );
        assert_eq!(store.get_key("s", "live").await.unwrap(), Some(live));
        let remaining: i64 = store
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM idempotency_keys", [], |row| row.get(0))
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        assert_eq!(remaining, 1);
    }

    /// A file at schema 5 with entries waiting: the migration counts them, and the
    /// triggers keep each queue's count equal to its entries through the store's enqueue
    /// and dequeue and through statements of any other code.
    #[tokio::test]
    async fn sqlite_migration_6_counts_the_waiting_entries_and_its_triggers_keep_the_count() {
        use crate::{Enqueued, WaitingRoomStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for migration in &MIGRATIONS[..5] {
                tx.execute_batch(migration).unwrap();
            }
            tx.pragma_update(None, "user_version", 5).unwrap();
            for (queue, key) in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")] {
                tx.execute(
                    "INSERT INTO waiting_room (queue, key, payload, enqueued_at_ms) VALUES (?1, ?2, x'00', 0)",
                    params![queue, key],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let depths = || async {
            (
                store.queue_depth("a").await.unwrap(),
                store.queue_depth("b").await.unwrap(),
                store.queue_depth("never used").await.unwrap(),
            )
        };
        assert_eq!(depths().await, (3, 1, 0));

        let added = store.enqueue("a", "4", vec![4], 10).await.unwrap();
        assert!(matches!(added, Enqueued::Added { position: 4, .. }), "{added:?}");
        let full = store.enqueue("a", "5", vec![5], 4).await.unwrap();
        assert_eq!(full, Enqueued::Full { depth: 4 });
        assert!(store.dequeue("a", "2").await.unwrap());
        assert!(!store.dequeue("a", "2").await.unwrap(), "already gone");
        assert_eq!(depths().await, (3, 1, 0));
        let third = store
            .queue_position("a", "4")
            .await
            .unwrap()
            .map(|(_, position)| position);
        assert_eq!(third, Some(3), "1 and 3 are ahead of 4");

        for statement in [
            "UPDATE waiting_room SET queue = 'b' WHERE queue = 'a' AND key = '3'",
            "UPDATE waiting_room SET payload = x'01' WHERE queue = 'b'",
        ] {
            store
                .write(move |conn| conn.execute(statement, []).map_err(sqlite_error))
                .await
                .unwrap();
        }
        assert_eq!(depths().await, (2, 2, 0));
        store
            .write(|conn| conn.execute("DELETE FROM waiting_room", []).map_err(sqlite_error))
            .await
            .unwrap();
        assert_eq!(depths().await, (0, 0, 0));
    }

    #[tokio::test]
    async fn sqlite_unreadable_cart_lines_are_corrupt_not_empty() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store
            .write(|conn| {
                conn.execute(
                    "INSERT INTO carts (owner, lines, version, updated_at_ms) VALUES ('o', 'not json', 1, 0)",
                    [],
                )
                .map_err(sqlite_error)
            })
            .await
            .unwrap();
        assert!(matches!(store.load_cart("o").await, Err(StoreError::Corrupt(_))));
    }
}
