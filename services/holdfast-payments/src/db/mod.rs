//! The PSP's own SQLite database: payments, the double-entry ledger, idempotency records
//! and flaky-first-attempt markers.
//!
//! A [`holdfast_sqlite::Db`], as `holdfast-store`'s SQLite backend: one writer thread
//! with group commit, read-only connections for the reads, checkpoints off the commit path.
//! Every money call is one writer job (a savepoint in the writer's `IMMEDIATE`
//! transaction) that reads the idempotency record, checks the payment, writes the payment,
//! its ledger entries and the new idempotency record; it is answered after its batch
//! committed: a crash leaves either all of it or none of it.
//!
//! Files: `schema.rs` (migrations), `payments.rs` (the payment row and the money
//! transactions), `ledger.rs` (postings and listing), `idempotency.rs` (stored answers).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use holdfast_sqlite::{Db, Failure, Options};

use holdfast_platform::clock::now_ms;

use holdfast_proto::payments::v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, LedgerEntry, Payment,
    RefundRequest, RefundResponse, VoidRequest, VoidResponse,
};
use prost::Message;
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use crate::error::PaymentsError;
use crate::validate::{LedgerQuery, TestMethod};

mod idempotency;
mod ledger;
mod payments;
mod row;
mod schema;

use self::ledger::list_entries;
use self::payments::{authorize_tx, capture_tx, load_payment, refund_tx, void_tx};
use self::row::{PAYMENT_COLUMNS, PaymentRow};
use self::schema::migrate;

/// How long an idempotency record (and a flaky marker) is kept.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The account holding authorized, uncaptured funds.
pub const HOLDS_ACCOUNT: &str = "holds";

/// The account captured funds land in.
pub const MERCHANT_ACCOUNT: &str = "merchant";

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

/// The PSP's database. Cheap to clone; clones share the writer and the readers.
#[derive(Clone)]
pub struct PspDatabase {
    db: Db,
    /// The largest entry id handed out, so ids keep ascending even if the clock steps back
    /// across a restart. Only writer jobs (one at a time) take it.
    last_entry_id: Arc<Mutex<u128>>,
}

impl std::fmt::Debug for PspDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PspDatabase")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl From<Failure> for PaymentsError {
    fn from(failure: Failure) -> Self {
        if failure.is_corrupt() {
            Self::Corrupt(failure.to_string())
        } else {
            Self::Database(failure.to_string())
        }
    }
}

fn ttl_ms() -> i64 {
    i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(i64::MAX)
}

impl PspDatabase {
    /// Opens (creating if needed) the database file at `path`, or a private in-memory
    /// database for `None`, and brings its schema up to date.
    pub async fn open(path: Option<PathBuf>) -> Result<Self, PaymentsError> {
        let (db, last_entry_id) = tokio::task::spawn_blocking(move || -> Result<_, PaymentsError> {
            let mut last_entry_id = 0;
            let db = Db::open(path.as_deref(), Options::default(), |conn: &mut Connection| {
                conn.pragma_update(None, "foreign_keys", "ON")?;
                migrate(conn)?;
                let last: Option<String> =
                    conn.query_row("SELECT MAX(entry_id) FROM ledger_entries", [], |row| row.get(0))?;
                if let Some(id) = last {
                    last_entry_id = Uuid::try_parse(&id)
                        .map_err(|e| PaymentsError::Corrupt(format!("entry id {id:?}: {e}")))?
                        .as_u128();
                }
                Ok::<(), PaymentsError>(())
            })?;
            Ok((db, last_entry_id))
        })
        .await
        .map_err(|e| PaymentsError::Database(format!("sqlite open task failed: {e}")))??;
        Ok(Self {
            db,
            last_entry_id: Arc::new(Mutex::new(last_entry_id)),
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.db.path()
    }

    /// Runs `work` as one writer job (its own savepoint; answered after the commit), with
    /// the ledger's entry id floor.
    fn write<T, F>(&self, work: F) -> impl Future<Output = Result<T, PaymentsError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut u128) -> Result<T, PaymentsError> + Send + 'static,
    {
        let last_entry_id = Arc::clone(&self.last_entry_id);
        self.db.write(move |conn| {
            let mut last = last_entry_id.lock().unwrap_or_else(PoisonError::into_inner);
            work(conn, &mut last)
        })
    }

    /// Authorizes (or declines) `request`, paid with `method`.
    pub async fn authorize(
        &self,
        mut request: AuthorizeRequest,
        method: TestMethod,
    ) -> Result<Answer<AuthorizeResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.write(move |conn, last| authorize_tx(conn, last, &key, &request, &fingerprint, method, now_ms()))
            .await?
    }

    /// Captures `request.payment_id`.
    pub async fn capture(
        &self,
        mut request: CaptureRequest,
    ) -> Result<Answer<CaptureResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.write(move |conn, last| capture_tx(conn, last, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// Voids `request.payment_id`.
    pub async fn void(&self, mut request: VoidRequest) -> Result<Answer<VoidResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.write(move |conn, last| void_tx(conn, last, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// Refunds (part of) `request.payment_id`.
    pub async fn refund(&self, mut request: RefundRequest) -> Result<Answer<RefundResponse>, PaymentsError> {
        let key = std::mem::take(&mut request.idempotency_key);
        let fingerprint = request.encode_to_vec();
        self.write(move |conn, last| refund_tx(conn, last, &key, &request, &fingerprint, now_ms()))
            .await
    }

    /// The payment with `payment_id`.
    pub async fn payment(&self, payment_id: String) -> Result<Option<Payment>, PaymentsError> {
        self.db
            .lookup(move |conn| Ok(load_payment(conn, &payment_id)?.map(|p| p.to_wire())))
            .await
    }

    /// The latest payment its Authorize created under `key`.
    pub async fn payment_by_authorize_key(&self, key: String) -> Result<Option<Payment>, PaymentsError> {
        self.db
            .read(move |conn| {
                let sql = format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE authorize_idempotency_key = ?1 \
                 ORDER BY created_at_unix_ms DESC, payment_id DESC LIMIT 1"
                );
                let row = conn
                    .prepare_cached(&sql)?
                    .query_row([&key], PaymentRow::read)
                    .optional()?;
                row.map(|r| r.map(|p| p.to_wire())).transpose()
            })
            .await
    }

    /// One page of ledger entries matching every filter of `query`.
    pub async fn list_ledger_entries(&self, query: LedgerQuery) -> Result<LedgerPage, PaymentsError> {
        self.db.read(move |conn| list_entries(conn, &query)).await
    }
}

#[cfg(test)]
mod tests {
    use holdfast_proto::common::v1::Money;

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
        *db.last_entry_id.lock().expect("lock") = future;
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
