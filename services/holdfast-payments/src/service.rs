//! The gRPC face of the PSP: validate, wait for the idempotency key, run the one
//! transaction, add the configured latency, and play the test payment method's part.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use holdfast_proto::common::v1::PageResponse;
use holdfast_proto::payments::v1::get_payment_request::Lookup;
use holdfast_proto::payments::v1::payments_service_server::PaymentsService;
use holdfast_proto::payments::v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, GetPaymentRequest,
    GetPaymentResponse, ListLedgerEntriesRequest, ListLedgerEntriesResponse, PaymentStatus, RefundRequest,
    RefundResponse, VoidRequest, VoidResponse,
};
use tokio::sync::OwnedMutexGuard;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::db::{Answer, PspDatabase, Scope};
use crate::error::PaymentsError;
use crate::metrics::{self, Outcome};
use crate::validate::{self, TestMethod};

/// How far past the caller's deadline `pm_card_timeout` answers, so the answer can never
/// arrive in time.
pub const PAST_DEADLINE: Duration = Duration::from_millis(50);

/// `holdfast.payments.v1.PaymentsService`: the simulated PSP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Payments {
    db: PspDatabase,
    keys: KeyLocks,
    latency: Duration,
    timeout_hold: Duration,
}

impl Payments {
    /// The service over `db`: every money call answers after `latency`, and
    /// `pm_card_timeout` stalls `timeout_hold` when the caller sent no deadline.
    pub fn new(db: PspDatabase, latency: Duration, timeout_hold: Duration) -> Self {
        Self {
            db,
            keys: KeyLocks::default(),
            latency,
            timeout_hold,
        }
    }

    /// The database it keeps its books in.
    pub fn database(&self) -> &PspDatabase {
        &self.db
    }

    async fn pause(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// An invalid money call still takes the provider's latency to come back.
    async fn refuse(&self, error: PaymentsError) -> Status {
        self.pause().await;
        error.into()
    }

    /// Runs `work` while holding `(scope, key)`, so a repeat of the key waits for it (and
    /// then finds its stored answer); counts it; adds the latency before letting go.
    async fn money_call<R>(
        &self,
        scope: Scope,
        key: &str,
        work: impl Future<Output = Result<Answer<R>, PaymentsError>>,
        declined: fn(&R) -> bool,
    ) -> Result<R, PaymentsError> {
        let _held = self.keys.lock(scope, key).await;
        let result = work.await;
        let outcome = Outcome::of(&result, declined);
        metrics::record(scope, outcome);
        tracing::debug!(rpc = scope.as_str(), outcome = outcome.as_str(), "money call");
        self.pause().await;
        result.map(Answer::into_response)
    }
}

fn never_declined<R>(_: &R) -> bool {
    false
}

#[tonic::async_trait]
impl PaymentsService for Payments {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let started = std::time::Instant::now();
        // pm_card_timeout answers only once the caller has given up.
        let stall =
            client_timeout(request.metadata()).map_or(self.timeout_hold, |t| t.saturating_add(PAST_DEADLINE));
        let request = request.into_inner();
        let method = match validate::authorize(&request) {
            Ok(method) => method,
            Err(error) => return Err(self.refuse(error).await),
        };
        let key = request.idempotency_key.clone();
        let answer = self
            .money_call(
                Scope::Authorize,
                &key,
                self.db.authorize(request, method),
                |r: &AuthorizeResponse| r.status == PaymentStatus::Declined as i32,
            )
            .await?;
        if method == TestMethod::Timeout {
            // Recorded and committed above; only the answer is lost, for the first call
            // and every repeat of the key alike.
            // `sleep` caps an absurd hold instead of overflowing the clock.
            tokio::time::sleep(stall.saturating_sub(started.elapsed())).await;
            return Err(PaymentsError::SimulatedTimeout.into());
        }
        Ok(Response::new(answer))
    }

    async fn capture(&self, request: Request<CaptureRequest>) -> Result<Response<CaptureResponse>, Status> {
        let request = request.into_inner();
        if let Err(error) = validate::capture(&request) {
            return Err(self.refuse(error).await);
        }
        let key = request.idempotency_key.clone();
        let answer = self
            .money_call(Scope::Capture, &key, self.db.capture(request), never_declined)
            .await?;
        Ok(Response::new(answer))
    }

    async fn void(&self, request: Request<VoidRequest>) -> Result<Response<VoidResponse>, Status> {
        let request = request.into_inner();
        if let Err(error) = validate::void(&request) {
            return Err(self.refuse(error).await);
        }
        let key = request.idempotency_key.clone();
        let answer = self
            .money_call(Scope::Void, &key, self.db.void(request), never_declined)
            .await?;
        Ok(Response::new(answer))
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<RefundResponse>, Status> {
        let request = request.into_inner();
        if let Err(error) = validate::refund(&request) {
            return Err(self.refuse(error).await);
        }
        let key = request.idempotency_key.clone();
        let answer = self
            .money_call(Scope::Refund, &key, self.db.refund(request), never_declined)
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<GetPaymentResponse>, Status> {
        let request = request.into_inner();
        let (found, asked) = match validate::get_payment(&request)? {
            Lookup::PaymentId(id) => (self.db.payment(id.clone()).await?, id),
            Lookup::AuthorizeIdempotencyKey(key) => {
                (self.db.payment_by_authorize_key(key.clone()).await?, key)
            }
        };
        match found {
            Some(payment) => Ok(Response::new(GetPaymentResponse {
                payment: Some(payment),
            })),
            None => Err(PaymentsError::NotFound(asked.clone()).into()),
        }
    }

    async fn list_ledger_entries(
        &self,
        request: Request<ListLedgerEntriesRequest>,
    ) -> Result<Response<ListLedgerEntriesResponse>, Status> {
        let query = validate::list_ledger_entries(request.get_ref())?;
        let page = self.db.list_ledger_entries(query).await?;
        Ok(Response::new(ListLedgerEntriesResponse {
            entries: page.entries,
            page: Some(PageResponse {
                next_page_token: page.next_page_token.unwrap_or_default(),
            }),
        }))
    }
}

/// The caller's deadline from the `grpc-timeout` header (`<1..8 digits><H|M|S|m|u|n>`),
/// `None` if absent or malformed.
pub fn client_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    match unit {
        b'H' => Some(Duration::from_secs(amount.checked_mul(3600)?)),
        b'M' => Some(Duration::from_secs(amount.checked_mul(60)?)),
        b'S' => Some(Duration::from_secs(amount)),
        b'm' => Some(Duration::from_millis(amount)),
        b'u' => Some(Duration::from_micros(amount)),
        b'n' => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

type KeyMap = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

/// One async lock per `(RPC, idempotency key)` in flight; entries go away with their
/// last holder, so the map only holds keys being worked on.
#[derive(Debug, Clone, Default)]
struct KeyLocks {
    held: Arc<Mutex<KeyMap>>,
}

impl KeyLocks {
    async fn lock(&self, scope: Scope, key: &str) -> KeyGuard {
        let name = format!("{}:{key}", scope.as_str());
        let lock = Arc::clone(
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.clone())
                .or_default(),
        );
        let guard = lock.lock_owned().await;
        KeyGuard {
            held: Arc::clone(&self.held),
            name,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

struct KeyGuard {
    held: Arc<Mutex<KeyMap>>,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // Two references (the map's and this guard's) mean nobody waits: forget the key.
        // New waiters clone under the map lock, which this holds.
        if held
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 2)
        {
            held.remove(&self.name);
        }
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &'static str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", tonic::metadata::MetadataValue::from_static(value));
        client_timeout(&metadata)
    }

    #[test]
    fn client_timeout_reads_every_unit() {
        assert_eq!(timeout_of("300m"), Some(Duration::from_millis(300)));
        assert_eq!(timeout_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of("1M"), Some(Duration::from_secs(60)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(client_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn client_timeout_ignores_malformed_values() {
        for bad in ["", "m", "300", "300x", "123456789m", "-1m", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn key_locks_serialize_one_key_and_forget_it_after() {
        let locks = KeyLocks::default();
        let first = locks.lock(Scope::Authorize, "k").await;
        // Timing out after zero time polls the lock exactly once.
        let once = |scope| tokio::time::timeout(Duration::ZERO, locks.lock(scope, "k"));
        let other_rpc = once(Scope::Capture).await.expect("keys are scoped per RPC");
        assert!(once(Scope::Authorize).await.is_err(), "a second holder waits");
        drop(first);
        let second = once(Scope::Authorize).await.expect("free once released");
        assert_eq!(locks.len(), 2);
        drop(second);
        drop(other_rpc);
        assert_eq!(locks.len(), 0, "released keys are forgotten");
    }
}
