//! The PSP's own SQLite database: payments, the double-entry ledger, idempotency records
//! and flaky-first-attempt markers.
//!
//! One connection behind a mutex, every call on tokio's blocking pool (as
//! `holdfast-store`'s SQLite backend does). Every money call is one `IMMEDIATE`
//! transaction that reads the idempotency record, checks the payment, writes the payment,
//! its ledger entries and the new idempotency record, and commits: a crash leaves either
//! all of it or none of it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, LedgerEntry, LedgerEntryKind,
    Payment, PaymentStatus, RefundRequest, RefundResponse, VoidRequest, VoidResponse,
};
use prost::Message;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use uuid::Uuid;

use crate::error::PaymentsError;
use crate::validate::{LedgerQuery, PAYMENT_ID_PREFIX, REFUND_ID_PREFIX, TestMethod};

/// How long an idempotency record (and a flaky marker) is kept.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a call waits for another process's lock on the file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The account holding authorized, uncaptured funds.
pub const HOLDS_ACCOUNT: &str = "holds";
/// The account captured funds land in.
pub const MERCHANT_ACCOUNT: &str = "merchant";

/// Schema migrations, applied in order at open; `PRAGMA user_version` counts those
/// applied. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
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

const PAYMENT_COLUMNS: &str = "payment_id, customer_id, order_reference, payment_method, status, \
     decline_code, currency, authorized_minor, captured_minor, refunded_minor, \
     authorize_idempotency_key, created_at_unix_ms, updated_at_unix_ms";

const ENTRY_COLUMNS: &str = "entry_id, payment_id, order_reference, kind, debit_account, credit_account, \
     amount_minor, currency, idempotency_key, created_at_unix_ms";

/// Which RPC an idempotency key belongs to: keys are scoped per RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `Authorize`.
    Authorize,
    /// `Capture`.
    Capture,
    /// `Void`.
    Void,
    /// `Refund`.
    Refund,
}

impl Scope {
    /// The name stored in `idempotency_records.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
        }
    }
}

/// The answer of a money call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<R> {
    /// First use of the key. `moved` is whether ledger entries were posted (false for a
    /// decline, or a capture/void that found the payment already there).
    Fresh {
        /// The answer, now stored under the key.
        response: R,
        /// Whether money moved.
        moved: bool,
    },
    /// A repeat of the key with the same payload: the stored answer, nothing moved.
    Replayed(R),
}

impl<R> Answer<R> {
    /// The response, fresh or replayed.
    pub fn into_response(self) -> R {
        match self {
            Self::Fresh { response, .. } | Self::Replayed(response) => response,
        }
    }
}

/// One page of ledger entries.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerPage {
    /// Entries by entry id ascending.
    pub entries: Vec<LedgerEntry>,
    /// The token of the next page, `None` on the last.
    pub next_page_token: Option<String>,
}

struct Inner {
    conn: Connection,
    /// The largest entry id handed out, so ids keep ascending even if the clock steps back
    /// across a restart.
    last_entry_id: u128,
}

/// The PSP's database. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct PspDatabase {
    inner: Arc<Mutex<Inner>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for PspDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PspDatabase")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ttl_ms() -> i64 {
    i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(i64::MAX)
}

impl PspDatabase {
    /// Opens (creating if needed) the database file at `path`, or a private in-memory
    /// database for `None`, and brings its schema up to date.
    pub async fn open(path: Option<PathBuf>) -> Result<Self, PaymentsError> {
        let opened = path.clone();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, PaymentsError> {
            let mut conn = match &opened {
                Some(path) => Connection::open(path)?,
                None => Connection::open_in_memory()?,
            };
            conn.busy_timeout(BUSY_TIMEOUT)?;
            if opened.is_some() {
                let mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(PaymentsError::Database(format!(
                        "sqlite refused WAL mode (journal_mode is {mode})"
                    )));
                }
            }
            // WAL + NORMAL: survives a crash of the process; an OS crash may roll back the
            // last commits. This is a simulator standing in for an external PSP, and its
            // latency is a knob (--payments-latency), not an fsync per call.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate(&mut conn)?;
            let last: Option<String> =
                conn.query_row("SELECT MAX(entry_id) FROM ledger_entries", [], |row| row.get(0))?;
            let last_entry_id = match last {
                None => 0,
                Some(id) => Uuid::try_parse(&id)
                    .map_err(|e| PaymentsError::Corrupt(format!("entry id {id:?}: {e}")))?
                    .as_u128(),
            };
            Ok(Inner { conn, last_entry_id })
        })
        .await
        .map_err(|e| PaymentsError::Database(format!("sqlite open task failed: {e}")))??;
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            path,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn call<T, F>(&self, work: F) -> Result<T, PaymentsError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> Result<T, PaymentsError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call leaves no open transaction behind (rusqlite rolls back on
            // drop), so a poisoned lock still guards a usable connection.
            let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut inner)
        })
        .await
        .map_err(|e| PaymentsError::Database(format!("sqlite task failed: {e}")))?
    }

    /// Authorizes (or declines) `request`, paid with `method`.
    pub async fn authorize(
        &self,
        mut request: AuthorizeRequest,
        method: TestMethod,
    ) -> Result<Answer<AuthorizeResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.call(move |inner| authorize_tx(inner, &key, &request, &fingerprint, method, now_ms()))
            .await
    }

    /// Captures `request.payment_id`.
    pub async fn capture(
        &self,
        mut request: CaptureRequest,
    ) -> Result<Answer<CaptureResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.call(move |inner| capture_tx(inner, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// Voids `request.payment_id`.
    pub async fn void(&self, mut request: VoidRequest) -> Result<Answer<VoidResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.call(move |inner| void_tx(inner, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// Refunds (part of) `request.payment_id`.
    pub async fn refund(&self, mut request: RefundRequest) -> Result<Answer<RefundResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.call(move |inner| refund_tx(inner, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// The payment with `payment_id`.
    pub async fn payment(&self, payment_id: String) -> Result<Option<Payment>, PaymentsError> {
        self.call(move |inner| Ok(load_payment(&inner.conn, &payment_id)?.map(|p| p.to_wire())))
            .await
    }

    /// The latest payment its Authorize created under `key`.
    pub async fn payment_by_authorize_key(&self, key: String) -> Result<Option<Payment>, PaymentsError> {
        self.call(move |inner| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE authorize_idempotency_key = ?1 \
                 ORDER BY created_at_unix_ms DESC, payment_id DESC LIMIT 1"
            );
            let row = inner.conn.query_row(&sql, [&key], PaymentRow::read).optional()?;
            row.map(|r| r.map(|p| p.to_wire())).transpose()
        })
        .await
    }

    /// One page of ledger entries matching every filter of `query`.
    pub async fn list_ledger_entries(&self, query: LedgerQuery) -> Result<LedgerPage, PaymentsError> {
        self.call(move |inner| list_entries(&inner.conn, &query)).await
    }
}

/// Applies the migrations this database lacks, each in its own transaction. The version
/// is re-read under the write lock, so two processes opening one file migrate it once.
fn migrate(conn: &mut Connection) -> Result<(), PaymentsError> {
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

/// A payment as stored.
#[derive(Debug, Clone)]
struct PaymentRow {
    payment_id: String,
    customer_id: String,
    order_reference: String,
    payment_method: String,
    status: PaymentStatus,
    decline_code: String,
    currency: String,
    authorized: i64,
    captured: i64,
    refunded: i64,
    authorize_key: String,
    created_at: i64,
    updated_at: i64,
}

impl PaymentRow {
    /// Reads a row of [`PAYMENT_COLUMNS`]; an unknown status is a corrupt row.
    fn read(row: &Row<'_>) -> rusqlite::Result<Result<Self, PaymentsError>> {
        let payment_id: String = row.get(0)?;
        let status: i32 = row.get(4)?;
        let Ok(status) = PaymentStatus::try_from(status) else {
            return Ok(Err(PaymentsError::Corrupt(format!(
                "payment {payment_id} has unknown status {status}"
            ))));
        };
        Ok(Ok(Self {
            payment_id,
            customer_id: row.get(1)?,
            order_reference: row.get(2)?,
            payment_method: row.get(3)?,
            status,
            decline_code: row.get(5)?,
            currency: row.get(6)?,
            authorized: row.get(7)?,
            captured: row.get(8)?,
            refunded: row.get(9)?,
            authorize_key: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        }))
    }

    fn money(&self, amount_minor: i64) -> Option<Money> {
        Some(Money {
            amount_minor,
            currency: self.currency.clone(),
        })
    }

    fn customer_account(&self) -> String {
        format!("customer:{}", self.customer_id)
    }

    fn to_wire(&self) -> Payment {
        Payment {
            payment_id: self.payment_id.clone(),
            customer_id: self.customer_id.clone(),
            order_reference: self.order_reference.clone(),
            payment_method: self.payment_method.clone(),
            status: self.status as i32,
            decline_code: self.decline_code.clone(),
            authorized_amount: self.money(self.authorized),
            captured_amount: self.money(self.captured),
            refunded_amount: self.money(self.refunded),
            authorize_idempotency_key: self.authorize_key.clone(),
            created_at_unix_ms: self.created_at,
            updated_at_unix_ms: self.updated_at,
        }
    }

    /// Writes the mutable columns back.
    fn update(&self, tx: &Transaction<'_>) -> Result<(), PaymentsError> {
        tx.execute(
            "UPDATE payments SET status = ?2, captured_minor = ?3, refunded_minor = ?4, \
             updated_at_unix_ms = ?5 WHERE payment_id = ?1",
            params![
                self.payment_id,
                self.status as i32,
                self.captured,
                self.refunded,
                self.updated_at
            ],
        )?;
        Ok(())
    }
}

fn load_payment(conn: &Connection, payment_id: &str) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?1");
    conn.query_row(&sql, [payment_id], PaymentRow::read)
        .optional()?
        .transpose()
}

/// The stored answer for `(scope, key)` if the key was used with this payload; the
/// key-reuse error if it was used with another; `None` if it is new (or expired).
fn replay<R: Message + Default>(
    tx: &Transaction<'_>,
    scope: Scope,
    key: &str,
    fingerprint: &[u8],
    now: i64,
) -> Result<Option<R>, PaymentsError> {
    let stored: Option<(Vec<u8>, Vec<u8>)> = tx
        .query_row(
            "SELECT fingerprint, response FROM idempotency_records \
             WHERE scope = ?1 AND idempotency_key = ?2 AND expires_at_unix_ms > ?3",
            params![scope.as_str(), key, now],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match stored {
        None => Ok(None),
        Some((stored_fingerprint, response)) if stored_fingerprint == fingerprint => R::decode(&response[..])
            .map(Some)
            .map_err(|e| PaymentsError::Corrupt(format!("stored {} response: {e}", scope.as_str()))),
        Some(_) => Err(PaymentsError::key_reused(scope.as_str(), key)),
    }
}

/// Stores the answer under `(scope, key)` for 24 hours, dropping expired records.
fn remember<R: Message>(
    tx: &Transaction<'_>,
    scope: Scope,
    key: &str,
    fingerprint: &[u8],
    response: &R,
    now: i64,
) -> Result<(), PaymentsError> {
    tx.execute(
        "DELETE FROM idempotency_records WHERE expires_at_unix_ms <= ?1",
        [now],
    )?;
    tx.execute("DELETE FROM flaky_attempts WHERE expires_at_unix_ms <= ?1", [now])?;
    tx.execute(
        "INSERT OR REPLACE INTO idempotency_records \
         (scope, idempotency_key, fingerprint, response, created_at_unix_ms, expires_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            scope.as_str(),
            key,
            fingerprint,
            response.encode_to_vec(),
            now,
            now.saturating_add(ttl_ms())
        ],
    )?;
    Ok(())
}

/// One posting, before it gets its id.
struct Posting<'a> {
    kind: LedgerEntryKind,
    amount_minor: i64,
    idempotency_key: &'a str,
    refund_id: &'a str,
    reason: &'a str,
}

/// Posts one ledger entry for `payment`, debiting and crediting the accounts the
/// `LedgerEntryKind` comment names.
fn post(
    tx: &Transaction<'_>,
    last_entry_id: &mut u128,
    payment: &PaymentRow,
    posting: Posting<'_>,
    now: i64,
) -> Result<(), PaymentsError> {
    let customer = payment.customer_account();
    let (debit, credit) = match posting.kind {
        LedgerEntryKind::Authorization => (HOLDS_ACCOUNT, customer.as_str()),
        LedgerEntryKind::Capture => (MERCHANT_ACCOUNT, HOLDS_ACCOUNT),
        LedgerEntryKind::Void => (customer.as_str(), HOLDS_ACCOUNT),
        LedgerEntryKind::Refund => (customer.as_str(), MERCHANT_ACCOUNT),
        LedgerEntryKind::Unspecified => {
            return Err(PaymentsError::Corrupt("posting without a kind".into()));
        }
    };
    // UUID v7 ids are ordered within this process; the floor keeps them ordered across
    // restarts too. +1 only touches the random bits (2^62 of room below the variant).
    let mut id = Uuid::now_v7().as_u128();
    if id <= *last_entry_id {
        id = last_entry_id.saturating_add(1);
    }
    *last_entry_id = id;
    tx.execute(
        "INSERT INTO ledger_entries (entry_id, payment_id, order_reference, kind, debit_account, \
         credit_account, amount_minor, currency, idempotency_key, refund_id, reason, created_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            Uuid::from_u128(id).hyphenated().to_string(),
            payment.payment_id,
            payment.order_reference,
            posting.kind as i32,
            debit,
            credit,
            posting.amount_minor,
            payment.currency,
            posting.idempotency_key,
            posting.refund_id,
            posting.reason,
            now
        ],
    )?;
    Ok(())
}

fn authorize_tx(
    inner: &mut Inner,
    key: &str,
    request: &AuthorizeRequest,
    fingerprint: &[u8],
    method: TestMethod,
    now: i64,
) -> Result<Answer<AuthorizeResponse>, PaymentsError> {
    let Inner { conn, last_entry_id } = inner;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(stored) = replay(&tx, Scope::Authorize, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    if method == TestMethod::Flaky {
        let first = tx.execute(
            "INSERT INTO flaky_attempts (idempotency_key, created_at_unix_ms, expires_at_unix_ms) \
             VALUES (?1, ?2, ?3) ON CONFLICT (idempotency_key) DO NOTHING",
            params![key, now, now.saturating_add(ttl_ms())],
        )?;
        if first == 1 {
            // Only the marker is kept: no payment, no ledger entry, no idempotency record.
            tx.commit()?;
            return Err(PaymentsError::SimulatedOutage);
        }
    }
    let amount = request.amount.clone().unwrap_or_default();
    let (status, decline_code) = match method.decline_code() {
        Some(code) => (PaymentStatus::Declined, code),
        None => (PaymentStatus::Authorized, ""),
    };
    let payment = PaymentRow {
        payment_id: format!("{PAYMENT_ID_PREFIX}{}", Uuid::now_v7()),
        customer_id: request.customer_id.clone(),
        order_reference: request.order_reference.clone(),
        payment_method: request.payment_method.clone(),
        status,
        decline_code: decline_code.to_string(),
        currency: amount.currency,
        authorized: amount.amount_minor,
        captured: 0,
        refunded: 0,
        authorize_key: key.to_string(),
        created_at: now,
        updated_at: now,
    };
    let sql = format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    tx.execute(
        &sql,
        params![
            payment.payment_id,
            payment.customer_id,
            payment.order_reference,
            payment.payment_method,
            payment.status as i32,
            payment.decline_code,
            payment.currency,
            payment.authorized,
            payment.captured,
            payment.refunded,
            payment.authorize_key,
            payment.created_at,
            payment.updated_at
        ],
    )?;
    let moved = status == PaymentStatus::Authorized;
    if moved {
        post(
            &tx,
            last_entry_id,
            &payment,
            Posting {
                kind: LedgerEntryKind::Authorization,
                amount_minor: payment.authorized,
                idempotency_key: key,
                refund_id: "",
                reason: "",
            },
            now,
        )?;
    }
    let response = AuthorizeResponse {
        payment_id: payment.payment_id,
        status: status as i32,
        decline_code: payment.decline_code,
    };
    remember(&tx, Scope::Authorize, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh { response, moved })
}

/// Checks that `amount` (if given) is in the payment's currency; answers its minor units.
fn amount_in_currency(payment: &PaymentRow, amount: Option<&Money>) -> Result<Option<i64>, PaymentsError> {
    match amount {
        None => Ok(None),
        Some(m) if m.currency != payment.currency => Err(PaymentsError::payment_state(
            &payment.payment_id,
            format!(
                "amount is in {} but payment {} is in {}",
                m.currency, payment.payment_id, payment.currency
            ),
        )),
        Some(m) => Ok(Some(m.amount_minor)),
    }
}

fn capture_tx(
    inner: &mut Inner,
    key: &str,
    request: &CaptureRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<CaptureResponse>, PaymentsError> {
    let Inner { conn, last_entry_id } = inner;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(stored) = replay(&tx, Scope::Capture, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(&tx, &request.payment_id)? else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    let asked = amount_in_currency(&payment, request.amount.as_ref())?;
    if let Some(asked) = asked
        && asked > payment.authorized
    {
        return Err(PaymentsError::payment_state(
            &payment.payment_id,
            format!(
                "capture of {asked} exceeds the authorized {} {}",
                payment.authorized, payment.currency
            ),
        ));
    }
    let moved = match payment.status {
        PaymentStatus::Authorized => {
            let take = asked.unwrap_or(payment.authorized);
            let release = payment.authorized - take;
            payment.status = PaymentStatus::Captured;
            payment.captured = take;
            payment.updated_at = now;
            payment.update(&tx)?;
            let posting = |kind, amount_minor| Posting {
                kind,
                amount_minor,
                idempotency_key: key,
                refund_id: "",
                reason: "",
            };
            post(
                &tx,
                last_entry_id,
                &payment,
                posting(LedgerEntryKind::Capture, take),
                now,
            )?;
            if release > 0 {
                // The uncaptured rest of the hold goes back to the customer.
                post(
                    &tx,
                    last_entry_id,
                    &payment,
                    posting(LedgerEntryKind::Void, release),
                    now,
                )?;
            }
            true
        }
        // Captured at most once: a later capture answers the payment as it is.
        PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => false,
        PaymentStatus::Declined => {
            return Err(PaymentsError::payment_state(
                &payment.payment_id,
                format!("payment {} was declined; nothing to capture", payment.payment_id),
            ));
        }
        PaymentStatus::Voided => {
            return Err(PaymentsError::payment_state(
                &payment.payment_id,
                format!("payment {} was voided; nothing to capture", payment.payment_id),
            ));
        }
        PaymentStatus::Unspecified => {
            return Err(PaymentsError::Corrupt(format!(
                "payment {} has no status",
                payment.payment_id
            )));
        }
    };
    let response = CaptureResponse {
        payment_id: payment.payment_id.clone(),
        status: payment.status as i32,
        decline_code: String::new(),
        captured_amount: payment.money(payment.captured),
    };
    remember(&tx, Scope::Capture, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh { response, moved })
}

fn void_tx(
    inner: &mut Inner,
    key: &str,
    request: &VoidRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<VoidResponse>, PaymentsError> {
    let Inner { conn, last_entry_id } = inner;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(stored) = replay(&tx, Scope::Void, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(&tx, &request.payment_id)? else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    let moved = match payment.status {
        PaymentStatus::Authorized => {
            payment.status = PaymentStatus::Voided;
            payment.updated_at = now;
            payment.update(&tx)?;
            post(
                &tx,
                last_entry_id,
                &payment,
                Posting {
                    kind: LedgerEntryKind::Void,
                    amount_minor: payment.authorized,
                    idempotency_key: key,
                    refund_id: "",
                    reason: "",
                },
                now,
            )?;
            true
        }
        PaymentStatus::Voided => false,
        PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => {
            return Err(PaymentsError::payment_state(
                &payment.payment_id,
                format!("payment {} was captured; refund it instead", payment.payment_id),
            ));
        }
        PaymentStatus::Declined => {
            return Err(PaymentsError::payment_state(
                &payment.payment_id,
                format!("payment {} was declined; nothing to void", payment.payment_id),
            ));
        }
        PaymentStatus::Unspecified => {
            return Err(PaymentsError::Corrupt(format!(
                "payment {} has no status",
                payment.payment_id
            )));
        }
    };
    let response = VoidResponse {
        payment_id: payment.payment_id.clone(),
        status: payment.status as i32,
        decline_code: String::new(),
    };
    remember(&tx, Scope::Void, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh { response, moved })
}

fn refund_tx(
    inner: &mut Inner,
    key: &str,
    request: &RefundRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<RefundResponse>, PaymentsError> {
    let Inner { conn, last_entry_id } = inner;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(stored) = replay(&tx, Scope::Refund, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(&tx, &request.payment_id)? else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    match payment.status {
        PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => {}
        PaymentStatus::Authorized | PaymentStatus::Declined | PaymentStatus::Voided => {
            return Err(PaymentsError::payment_state(
                &payment.payment_id,
                format!(
                    "payment {} was never captured; nothing to refund",
                    payment.payment_id
                ),
            ));
        }
        PaymentStatus::Unspecified => {
            return Err(PaymentsError::Corrupt(format!(
                "payment {} has no status",
                payment.payment_id
            )));
        }
    }
    let left = payment.captured - payment.refunded;
    let amount = amount_in_currency(&payment, request.amount.as_ref())?.unwrap_or(left);
    if left <= 0 {
        return Err(PaymentsError::payment_state(
            &payment.payment_id,
            format!("payment {} is fully refunded", payment.payment_id),
        ));
    }
    if amount > left {
        return Err(PaymentsError::payment_state(
            &payment.payment_id,
            format!(
                "refund of {amount} exceeds the {left} {} left to refund",
                payment.currency
            ),
        ));
    }
    payment.refunded += amount;
    payment.status = if payment.refunded == payment.captured {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    payment.updated_at = now;
    payment.update(&tx)?;
    let refund_id = format!("{REFUND_ID_PREFIX}{}", Uuid::now_v7());
    post(
        &tx,
        last_entry_id,
        &payment,
        Posting {
            kind: LedgerEntryKind::Refund,
            amount_minor: amount,
            idempotency_key: key,
            refund_id: &refund_id,
            reason: &request.reason,
        },
        now,
    )?;
    let response = RefundResponse {
        payment_id: payment.payment_id.clone(),
        status: payment.status as i32,
        decline_code: String::new(),
        refund_id,
        refunded_amount: payment.money(amount),
        total_refunded: payment.money(payment.refunded),
    };
    remember(&tx, Scope::Refund, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh {
        response,
        moved: true,
    })
}

fn read_entry(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        entry_id: row.get(0)?,
        payment_id: row.get(1)?,
        order_reference: row.get(2)?,
        kind: row.get(3)?,
        debit_account: row.get(4)?,
        credit_account: row.get(5)?,
        amount: Some(Money {
            amount_minor: row.get(6)?,
            currency: row.get(7)?,
        }),
        idempotency_key: row.get(8)?,
        created_at_unix_ms: row.get(9)?,
    })
}

fn list_entries(conn: &Connection, query: &LedgerQuery) -> Result<LedgerPage, PaymentsError> {
    // Only the filters given go into the SQL, so SQLite can use the matching index.
    let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(payment_id) = &query.payment_id {
        filter("payment_id =", Value::Text(payment_id.clone()));
    }
    if let Some(order_reference) = &query.order_reference {
        filter("order_reference =", Value::Text(order_reference.clone()));
    }
    if let Some(kind) = query.kind {
        filter("kind =", Value::Integer(i64::from(kind as i32)));
    }
    if query.since_unix_ms > 0 {
        filter("created_at_unix_ms >=", Value::Integer(query.since_unix_ms));
    }
    if let Some(after) = &query.after_entry_id {
        filter("entry_id >", Value::Text(after.clone()));
    }
    // One more than asked, to know whether another page follows.
    values.push(Value::Integer(i64::from(query.limit) + 1));
    sql.push_str(&format!(" ORDER BY entry_id LIMIT ?{}", values.len()));
    let mut statement = conn.prepare_cached(&sql)?;
    let mut entries = statement
        .query_map(rusqlite::params_from_iter(values), read_entry)?
        .collect::<Result<Vec<_>, _>>()?;
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    let next_page_token = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.entry_id.clone())
    } else {
        None
    };
    Ok(LedgerPage {
        entries,
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorize_request(key: &str, amount: i64) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.into(),
            amount: Some(Money {
                amount_minor: amount,
                currency: "EUR".into(),
            }),
            payment_method: "pm_card_visa".into(),
            customer_id: "cus_1".into(),
            order_reference: "ord_1".into(),
        }
    }

    fn all_entries() -> LedgerQuery {
        LedgerQuery {
            payment_id: None,
            order_reference: None,
            kind: None,
            since_unix_ms: 0,
            after_entry_id: None,
            limit: 500,
        }
    }

    #[tokio::test]
    async fn capture_failing_midway_leaves_nothing_behind() {
        let db = PspDatabase::open(None).await.expect("open");
        let authorized = db
            .authorize(authorize_request("a", 1000), TestMethod::Visa)
            .await
            .expect("authorize")
            .into_response();
        // A capture over the authorization fails after the payment was read: the
        // transaction rolls back, and the key stays unused.
        let too_much = CaptureRequest {
            idempotency_key: "c".into(),
            payment_id: authorized.payment_id.clone(),
            amount: Some(Money {
                amount_minor: 1001,
                currency: "EUR".into(),
            }),
        };
        assert!(matches!(
            db.capture(too_much).await,
            Err(PaymentsError::FailedPrecondition { .. })
        ));
        let entries = db.list_ledger_entries(all_entries()).await.expect("list").entries;
        assert_eq!(entries.len(), 1);
        let fine = CaptureRequest {
            idempotency_key: "c".into(),
            payment_id: authorized.payment_id,
            amount: None,
        };
        assert!(matches!(
            db.capture(fine).await.expect("capture"),
            Answer::Fresh { moved: true, .. }
        ));
    }

    #[tokio::test]
    async fn entry_ids_ascend_even_when_the_clock_is_behind_the_ledger() {
        let db = PspDatabase::open(None).await.expect("open");
        // As if entries from a later clock were already in the file.
        let future = Uuid::now_v7().as_u128() + (1u128 << 100);
        db.inner.lock().expect("lock").last_entry_id = future;
        db.authorize(authorize_request("a", 10), TestMethod::Visa)
            .await
            .expect("authorize");
        let entries = db.list_ledger_entries(all_entries()).await.expect("list").entries;
        let id = Uuid::try_parse(&entries[0].entry_id).expect("uuid").as_u128();
        assert_eq!(id, future + 1);
    }

    #[tokio::test]
    async fn flaky_first_attempt_keeps_only_its_marker() {
        let db = PspDatabase::open(None).await.expect("open");
        let request = AuthorizeRequest {
            payment_method: "pm_card_flaky".into(),
            ..authorize_request("f", 10)
        };
        assert!(matches!(
            db.authorize(request.clone(), TestMethod::Flaky).await,
            Err(PaymentsError::SimulatedOutage)
        ));
        assert!(
            db.payment_by_authorize_key("f".into())
                .await
                .expect("get")
                .is_none()
        );
        assert!(matches!(
            db.authorize(request, TestMethod::Flaky).await.expect("retry"),
            Answer::Fresh { moved: true, .. }
        ));
    }
}
