//! PaymentsService through real gRPC (a holdfast server on 127.0.0.1:0) over a real
//! SQLite file in a scratch directory.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use holdfast_payments::PaymentsOptions;
use holdfast_platform::{GrpcServer, ServerOptions, metrics};
use holdfast_proto::common::v1::{Money, PageRequest};
use holdfast_proto::payments::v1::get_payment_request::Lookup;
use holdfast_proto::payments::v1::payments_service_client::PaymentsServiceClient;
use holdfast_proto::payments::v1::*;
use holdfast_testkit::{SpawnedServer, TempDir};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

type Client = PaymentsServiceClient<Channel>;

/// A running PSP over a database file in its own scratch directory.
struct Psp {
    server: SpawnedServer,
    client: Client,
    database: PathBuf,
    _dir: TempDir,
}

impl Psp {
    async fn start() -> Self {
        Self::start_with(PaymentsOptions::default()).await
    }

    async fn start_with(options: PaymentsOptions) -> Self {
        let dir = TempDir::new("payments").expect("scratch dir");
        let database = dir.path().join("psp.db");
        let (server, client) = serve(PaymentsOptions {
            database: Some(database.clone()),
            ..options
        })
        .await;
        Self {
            server,
            client,
            database,
            _dir: dir,
        }
    }
}

async fn serve(options: PaymentsOptions) -> (SpawnedServer, Client) {
    let service = holdfast_payments::start(options).await.expect("payments");
    let mut grpc = GrpcServer::new(ServerOptions::default());
    grpc.add_service("payments", service);
    let server = SpawnedServer::start(grpc).await.expect("server");
    let client = Client::new(server.channel().await.expect("connect"));
    (server, client)
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.into(),
    })
}

fn eur(amount_minor: i64) -> Option<Money> {
    money(amount_minor, "EUR")
}

fn authorize_request(key: &str, method: &str, amount: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        amount: eur(amount),
        payment_method: method.into(),
        customer_id: "cus_ada".into(),
        order_reference: format!("ord_{key}"),
    }
}

async fn authorize(
    c: &mut Client,
    key: &str,
    method: &str,
    amount: i64,
) -> Result<AuthorizeResponse, Status> {
    c.authorize(authorize_request(key, method, amount))
        .await
        .map(tonic::Response::into_inner)
}

async fn visa(c: &mut Client, key: &str, amount: i64) -> String {
    let answer = authorize(c, key, "pm_card_visa", amount)
        .await
        .expect("authorize");
    assert_eq!(answer.status, PaymentStatus::Authorized as i32);
    answer.payment_id
}

async fn capture(
    c: &mut Client,
    key: &str,
    payment_id: &str,
    amount: Option<Money>,
) -> Result<CaptureResponse, Status> {
    c.capture(CaptureRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn void(c: &mut Client, key: &str, payment_id: &str) -> Result<VoidResponse, Status> {
    c.void(VoidRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn refund(
    c: &mut Client,
    key: &str,
    payment_id: &str,
    amount: Option<Money>,
) -> Result<RefundResponse, Status> {
    c.refund(RefundRequest {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount,
        reason: "customer changed their mind".into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn get(c: &mut Client, lookup: Lookup) -> Result<Payment, Status> {
    c.get_payment(GetPaymentRequest { lookup: Some(lookup) })
        .await
        .map(|r| r.into_inner().payment.expect("payment"))
}

async fn by_id(c: &mut Client, payment_id: &str) -> Payment {
    get(c, Lookup::PaymentId(payment_id.into()))
        .await
        .expect("get payment")
}

/// Every entry matching `filter`, following the cursor with pages of `page_size`.
async fn entries_where(c: &mut Client, filter: ListLedgerEntriesRequest, page_size: u32) -> Vec<LedgerEntry> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_ledger_entries(ListLedgerEntriesRequest {
                page: Some(PageRequest {
                    page_size,
                    page_token: token,
                }),
                ..filter.clone()
            })
            .await
            .expect("list ledger entries")
            .into_inner();
        assert!(page.entries.len() <= page_size as usize);
        all.extend(page.entries);
        token = page.page.expect("page").next_page_token;
        if token.is_empty() {
            return all;
        }
    }
}

async fn all_entries(c: &mut Client) -> Vec<LedgerEntry> {
    entries_where(c, ListLedgerEntriesRequest::default(), 500).await
}

async fn entries_of(c: &mut Client, payment_id: &str) -> Vec<LedgerEntry> {
    entries_where(
        c,
        ListLedgerEntriesRequest {
            payment_id: payment_id.into(),
            ..Default::default()
        },
        500,
    )
    .await
}

fn kinds(entries: &[LedgerEntry]) -> Vec<LedgerEntryKind> {
    entries
        .iter()
        .map(|e| LedgerEntryKind::try_from(e.kind).expect("kind"))
        .collect()
}

fn postings(entries: &[LedgerEntry]) -> Vec<(LedgerEntryKind, &str, &str, i64)> {
    entries
        .iter()
        .map(|e| {
            (
                LedgerEntryKind::try_from(e.kind).expect("kind"),
                e.debit_account.as_str(),
                e.credit_account.as_str(),
                e.amount.as_ref().expect("amount").amount_minor,
            )
        })
        .collect()
}

fn amount(m: &Option<Money>) -> i64 {
    m.as_ref().expect("money").amount_minor
}

fn bad_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn assert_failed_precondition(result: Result<impl std::fmt::Debug, Status>, kind: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let failure = status
        .get_details_precondition_failure()
        .expect("PreconditionFailure details");
    assert_eq!(failure.violations[0].r#type, kind, "{status:?}");
}

/// The caller ran out of time. Other gRPC clients say DEADLINE_EXCEEDED; tonic reports
/// its own expired `grpc-timeout` as CANCELLED "Timeout expired".
fn is_deadline(status: &Status) -> bool {
    status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message() == "Timeout expired")
}

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

#[tokio::test]
async fn authorize_capture_refund_happy_path() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let answer = authorize(c, "a1", "pm_card_visa", 1299).await.expect("authorize");
    assert_eq!(
        (answer.status, answer.decline_code.as_str()),
        (PaymentStatus::Authorized as i32, "")
    );
    assert!(answer.payment_id.starts_with("pay_"), "{}", answer.payment_id);
    let id = answer.payment_id;

    let payment = by_id(c, &id).await;
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
    assert_eq!(
        (
            payment.customer_id.as_str(),
            payment.order_reference.as_str(),
            payment.payment_method.as_str(),
            payment.authorize_idempotency_key.as_str()
        ),
        ("cus_ada", "ord_a1", "pm_card_visa", "a1")
    );
    assert_eq!(payment.authorized_amount, eur(1299));
    assert_eq!(payment.captured_amount, eur(0), "zero in the authorized currency");
    assert_eq!(payment.refunded_amount, eur(0));
    assert!(payment.created_at_unix_ms > 0);
    assert_eq!(
        get(c, Lookup::AuthorizeIdempotencyKey("a1".into()))
            .await
            .expect("by key"),
        payment
    );

    let captured = capture(c, "c1", &id, None).await.expect("capture");
    assert_eq!(captured.status, PaymentStatus::Captured as i32);
    assert_eq!(captured.captured_amount, eur(1299), "unset captures everything");

    let refunded = refund(c, "r1", &id, eur(299)).await.expect("refund");
    assert_eq!(refunded.status, PaymentStatus::PartiallyRefunded as i32);
    assert!(refunded.refund_id.starts_with("re_"), "{}", refunded.refund_id);
    assert_eq!(
        (refunded.refunded_amount, refunded.total_refunded),
        (eur(299), eur(299))
    );

    let payment = by_id(c, &id).await;
    assert_eq!(payment.status, PaymentStatus::PartiallyRefunded as i32);
    assert_eq!(
        (payment.captured_amount, payment.refunded_amount),
        (eur(1299), eur(299))
    );
    assert!(payment.updated_at_unix_ms >= payment.created_at_unix_ms);

    let entries = entries_of(c, &id).await;
    assert_eq!(
        postings(&entries),
        [
            (LedgerEntryKind::Authorization, "holds", "customer:cus_ada", 1299),
            (LedgerEntryKind::Capture, "merchant", "holds", 1299),
            (LedgerEntryKind::Refund, "customer:cus_ada", "merchant", 299),
        ]
    );
    let keys: Vec<_> = entries.iter().map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["a1", "c1", "r1"]);
    assert!(
        entries
            .iter()
            .all(|e| e.order_reference == "ord_a1" && e.payment_id == id)
    );

    let text = metrics::render();
    for kind in ["authorize", "capture", "refund"] {
        assert!(
            text.contains(&format!(
                r#"holdfast_payments_money_movements_total{{kind="{kind}",outcome="moved"}} 1"#
            )),
            "{kind} counted:\n{text}"
        );
    }
}

#[tokio::test]
async fn void_drops_the_hold_and_is_idempotent_on_voided() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "a1", 500).await;
    let voided = void(c, "v1", &id).await.expect("void");
    assert_eq!(voided.status, PaymentStatus::Voided as i32);
    let again = void(c, "v2", &id).await.expect("void a voided payment");
    assert_eq!(again.status, PaymentStatus::Voided as i32);
    assert_eq!(
        postings(&entries_of(c, &id).await),
        [
            (LedgerEntryKind::Authorization, "holds", "customer:cus_ada", 500),
            (LedgerEntryKind::Void, "customer:cus_ada", "holds", 500),
        ],
        "the second void moved nothing"
    );
    assert_failed_precondition(capture(c, "c1", &id, None).await, "PAYMENT_STATE");
    assert_failed_precondition(refund(c, "r1", &id, None).await, "PAYMENT_STATE");
    assert_eq!(by_id(c, &id).await.status, PaymentStatus::Voided as i32);
}

#[tokio::test]
async fn declining_cards_answer_declined_with_their_code_and_hold_nothing() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    for (key, method, code) in [
        ("d1", "pm_card_declined", "card_declined"),
        ("d2", "pm_card_insufficient_funds", "insufficient_funds"),
    ] {
        let answer = authorize(c, key, method, 700)
            .await
            .expect("a decline is an answer");
        assert_eq!(
            (answer.status, answer.decline_code.as_str()),
            (PaymentStatus::Declined as i32, code)
        );
        let payment = get(c, Lookup::AuthorizeIdempotencyKey(key.into()))
            .await
            .expect("declined attempts can be looked up");
        assert_eq!(payment.payment_id, answer.payment_id);
        assert_eq!(
            (payment.status, payment.decline_code.as_str()),
            (PaymentStatus::Declined as i32, code)
        );
        assert!(
            entries_of(c, &answer.payment_id).await.is_empty(),
            "nothing was held"
        );
        assert_failed_precondition(
            capture(c, &format!("c-{key}"), &answer.payment_id, None).await,
            "PAYMENT_STATE",
        );
        assert_failed_precondition(
            void(c, &format!("v-{key}"), &answer.payment_id).await,
            "PAYMENT_STATE",
        );
        assert_failed_precondition(
            refund(c, &format!("r-{key}"), &answer.payment_id, None).await,
            "PAYMENT_STATE",
        );
    }
    assert!(all_entries(c).await.is_empty());
}

#[tokio::test]
async fn unknown_payments_are_not_found() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let unknown = "pay_0193a5c4-7e2b-7c1d-9a3f-2b8c4d5e6f70";
    let codes = [
        capture(c, "c", unknown, None).await.expect_err("capture").code(),
        void(c, "v", unknown).await.expect_err("void").code(),
        refund(c, "r", unknown, None).await.expect_err("refund").code(),
        get(c, Lookup::PaymentId(unknown.into()))
            .await
            .expect_err("get")
            .code(),
        get(c, Lookup::AuthorizeIdempotencyKey("never".into()))
            .await
            .expect_err("get by key")
            .code(),
    ];
    assert_eq!(codes, [Code::NotFound; 5]);
}

#[tokio::test]
async fn repeats_answer_the_stored_answer_and_move_nothing() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let first = authorize(c, "a1", "pm_card_visa", 1000).await.expect("authorize");
    let repeat = authorize(c, "a1", "pm_card_visa", 1000).await.expect("repeat");
    assert_eq!(repeat, first);
    let id = first.payment_id;

    let captured = capture(c, "c1", &id, eur(800)).await.expect("capture");
    assert_eq!(capture(c, "c1", &id, eur(800)).await.expect("repeat"), captured);

    let refunded = refund(c, "r1", &id, eur(100)).await.expect("refund");
    let again = refund(c, "r1", &id, eur(100)).await.expect("repeat");
    assert_eq!(again, refunded, "same refund id, same totals");
    assert_eq!(amount(&again.total_refunded), 100);

    let other = visa(c, "a2", 50).await;
    let voided = void(c, "v1", &other).await.expect("void");
    assert_eq!(void(c, "v1", &other).await.expect("repeat"), voided);

    let entries = all_entries(c).await;
    assert_eq!(
        kinds(&entries),
        [
            LedgerEntryKind::Authorization,
            LedgerEntryKind::Capture,
            LedgerEntryKind::Void,
            LedgerEntryKind::Refund,
            LedgerEntryKind::Authorization,
            LedgerEntryKind::Void,
        ],
        "each money movement posted once"
    );
    assert_eq!(by_id(c, &id).await.refunded_amount, eur(100));
    let text = metrics::render();
    assert!(
        text.contains(r#"holdfast_payments_money_movements_total{kind="authorize",outcome="replayed"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_key_reused_with_another_payload_is_failed_precondition() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "k", 1000).await;
    assert_failed_precondition(authorize(c, "k", "pm_card_visa", 2000).await, "IDEMPOTENCY_KEY");
    let mut other_customer = authorize_request("k", "pm_card_visa", 1000);
    other_customer.customer_id = "cus_bob".into();
    assert_failed_precondition(
        c.authorize(other_customer).await.map(tonic::Response::into_inner),
        "IDEMPOTENCY_KEY",
    );

    // Keys are scoped per RPC: "k" is new to Capture.
    capture(c, "k", &id, eur(400))
        .await
        .expect("capture with the same key string");
    assert_failed_precondition(capture(c, "k", &id, eur(300)).await, "IDEMPOTENCY_KEY");
    refund(c, "k", &id, eur(10)).await.expect("refund");
    assert_failed_precondition(refund(c, "k", &id, eur(20)).await, "IDEMPOTENCY_KEY");

    let payment = by_id(c, &id).await;
    assert_eq!(
        (
            amount(&payment.authorized_amount),
            amount(&payment.captured_amount),
            amount(&payment.refunded_amount)
        ),
        (1000, 400, 10)
    );
    assert_eq!(
        all_entries(c).await.len(),
        4,
        "authorization, capture, release, refund"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_authorizes_with_one_key_make_one_payment() {
    // Latency keeps the first call holding the key while the others arrive.
    let psp = Psp::start_with(PaymentsOptions {
        latency: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut c = psp.client.clone();
            tokio::spawn(async move { authorize(&mut c, "same-key", "pm_card_visa", 4200).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for call in calls {
        let answer = call.await.expect("join").expect("authorize");
        assert_eq!(answer.status, PaymentStatus::Authorized as i32);
        ids.insert(answer.payment_id);
    }
    assert_eq!(ids.len(), 1, "one payment: {ids:?}");
    let mut c = psp.client.clone();
    let entries = entries_where(
        &mut c,
        ListLedgerEntriesRequest {
            order_reference: "ord_same-key".into(),
            kind: LedgerEntryKind::Authorization as i32,
            ..Default::default()
        },
        50,
    )
    .await;
    assert_eq!(entries.len(), 1, "one AUTHORIZATION entry");
    assert_eq!(all_entries(&mut c).await.len(), 1);
}

#[tokio::test]
async fn timeout_card_authorizes_but_answers_only_after_the_deadline() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let deadline = Duration::from_millis(300);
    for attempt in 0..2 {
        let started = Instant::now();
        let status = c
            .authorize(with_deadline(
                authorize_request("t1", "pm_card_timeout", 900),
                deadline,
            ))
            .await
            .expect_err("no answer in time");
        assert!(is_deadline(&status), "attempt {attempt}: {status:?}");
        assert!(started.elapsed() >= deadline, "attempt {attempt} ended early");
    }

    let payment = get(c, Lookup::AuthorizeIdempotencyKey("t1".into()))
        .await
        .expect("the authorization was recorded");
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
    assert_eq!(
        postings(&all_entries(c).await),
        [(LedgerEntryKind::Authorization, "holds", "customer:cus_ada", 900)],
        "one authorization, though the key was tried twice"
    );

    let voided = void(c, "v1", &payment.payment_id)
        .await
        .expect("void after the lookup");
    assert_eq!(voided.status, PaymentStatus::Voided as i32);
    assert_eq!(
        kinds(&entries_of(c, &payment.payment_id).await),
        [LedgerEntryKind::Authorization, LedgerEntryKind::Void]
    );
}

#[tokio::test]
async fn timeout_card_without_a_deadline_answers_deadline_exceeded_after_the_hold() {
    let hold = Duration::from_millis(200);
    let mut psp = Psp::start_with(PaymentsOptions {
        timeout_hold: hold,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let status = authorize(&mut psp.client, "t1", "pm_card_timeout", 900)
        .await
        .expect_err("stalls, then gives up");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= hold);
    let payment = get(&mut psp.client, Lookup::AuthorizeIdempotencyKey("t1".into()))
        .await
        .expect("recorded");
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
}

#[tokio::test]
async fn flaky_card_fails_once_per_key_then_authorizes() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let first = authorize(c, "f1", "pm_card_flaky", 300)
        .await
        .expect_err("first attempt");
    assert_eq!(first.code(), Code::Unavailable, "{first:?}");
    assert_eq!(
        get(c, Lookup::AuthorizeIdempotencyKey("f1".into()))
            .await
            .expect_err("nothing recorded")
            .code(),
        Code::NotFound
    );
    assert!(all_entries(c).await.is_empty());

    let retry = authorize(c, "f1", "pm_card_flaky", 300)
        .await
        .expect("retry authorizes");
    assert_eq!(retry.status, PaymentStatus::Authorized as i32);
    assert_eq!(
        authorize(c, "f1", "pm_card_flaky", 300).await.expect("repeat"),
        retry
    );
    assert_eq!(all_entries(c).await.len(), 1);

    let other = authorize(c, "f2", "pm_card_flaky", 300)
        .await
        .expect_err("each key fails once");
    assert_eq!(other.code(), Code::Unavailable);
}

#[tokio::test]
async fn partial_capture_releases_the_rest_and_captures_once() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "a1", 1000).await;
    assert_failed_precondition(capture(c, "too-much", &id, eur(1001)).await, "PAYMENT_STATE");
    assert_failed_precondition(
        capture(c, "dollars", &id, money(500, "USD")).await,
        "PAYMENT_STATE",
    );

    let captured = capture(c, "c1", &id, eur(600)).await.expect("partial capture");
    assert_eq!(
        (captured.status, captured.captured_amount),
        (PaymentStatus::Captured as i32, eur(600))
    );
    assert_eq!(
        postings(&entries_of(c, &id).await),
        [
            (LedgerEntryKind::Authorization, "holds", "customer:cus_ada", 1000),
            (LedgerEntryKind::Capture, "merchant", "holds", 600),
            (LedgerEntryKind::Void, "customer:cus_ada", "holds", 400),
        ]
    );

    let again = capture(c, "c2", &id, None).await.expect("capturing again");
    assert_eq!(
        (again.status, again.captured_amount),
        (PaymentStatus::Captured as i32, eur(600)),
        "answered unchanged"
    );
    assert_eq!(entries_of(c, &id).await.len(), 3, "and nothing moved");
    assert_failed_precondition(void(c, "v1", &id).await, "PAYMENT_STATE");
}

#[tokio::test]
async fn refunds_run_down_to_zero_then_are_refused() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "a1", 1000).await;
    assert_failed_precondition(refund(c, "early", &id, None).await, "PAYMENT_STATE");
    capture(c, "c1", &id, None).await.expect("capture");
    assert_failed_precondition(refund(c, "r-over", &id, eur(1001)).await, "PAYMENT_STATE");

    let first = refund(c, "r1", &id, eur(300)).await.expect("partial refund");
    assert_eq!(
        (first.status, amount(&first.total_refunded)),
        (PaymentStatus::PartiallyRefunded as i32, 300)
    );
    assert_failed_precondition(refund(c, "r-over2", &id, eur(701)).await, "PAYMENT_STATE");
    let rest = refund(c, "r2", &id, None).await.expect("refund the rest");
    assert_eq!(
        (
            rest.status,
            amount(&rest.refunded_amount),
            amount(&rest.total_refunded)
        ),
        (PaymentStatus::Refunded as i32, 700, 1000)
    );
    assert_ne!(first.refund_id, rest.refund_id);
    assert_failed_precondition(refund(c, "r3", &id, eur(1)).await, "PAYMENT_STATE");
    assert_failed_precondition(refund(c, "r4", &id, None).await, "PAYMENT_STATE");

    let payment = by_id(c, &id).await;
    assert_eq!(payment.status, PaymentStatus::Refunded as i32);
    assert_eq!(payment.refunded_amount, eur(1000));
    let refunds = entries_where(
        c,
        ListLedgerEntriesRequest {
            payment_id: id.clone(),
            kind: LedgerEntryKind::Refund as i32,
            ..Default::default()
        },
        1,
    )
    .await;
    assert_eq!(
        postings(&refunds).iter().map(|p| p.3).collect::<Vec<_>>(),
        [300, 700]
    );
}

/// Balance of every account (debits minus credits), per currency.
fn balances(entries: &[LedgerEntry]) -> BTreeMap<(String, String), i64> {
    let mut balances = BTreeMap::new();
    for e in entries {
        let money = e.amount.as_ref().expect("amount");
        assert!(money.amount_minor > 0, "{e:?}");
        assert_ne!(e.debit_account, e.credit_account);
        *balances
            .entry((money.currency.clone(), e.debit_account.clone()))
            .or_insert(0) += money.amount_minor;
        *balances
            .entry((money.currency.clone(), e.credit_account.clone()))
            .or_insert(0) -= money.amount_minor;
    }
    balances
}

#[tokio::test]
async fn the_ledger_balances_and_matches_every_payment() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let mut payments = Vec::new();
    for (i, currency) in ["EUR", "USD", "EUR", "USD", "EUR", "GBP"].into_iter().enumerate() {
        let mut request = authorize_request(&format!("a{i}"), "pm_card_visa", 1000 + i as i64);
        request.amount = money(1000 + i as i64, currency);
        request.customer_id = format!("cus_{}", i % 2);
        let id = c
            .authorize(request)
            .await
            .expect("authorize")
            .into_inner()
            .payment_id;
        payments.push((id, currency));
    }
    // payments[4] and [5] stay authorized.
    let (p0, p1, p2, p3) = (&payments[0], &payments[1], &payments[2], &payments[3]);
    capture(c, "c0", &p0.0, None).await.expect("full capture");
    capture(c, "c1", &p1.0, money(250, p1.1))
        .await
        .expect("partial capture");
    refund(c, "r1", &p1.0, money(100, p1.1))
        .await
        .expect("partial refund");
    void(c, "v2", &p2.0).await.expect("void");
    capture(c, "c3", &p3.0, None).await.expect("capture");
    refund(c, "r3", &p3.0, None).await.expect("full refund");
    authorize(c, "d", "pm_card_declined", 77).await.expect("decline");

    let entries = entries_where(c, ListLedgerEntriesRequest::default(), 3).await;
    let ids: Vec<_> = entries.iter().map(|e| e.entry_id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "pages are ascending by entry id, without repeats");

    let mut debits = BTreeMap::<String, i64>::new();
    let mut credits = BTreeMap::<String, i64>::new();
    for e in &entries {
        let m = e.amount.as_ref().expect("amount");
        *debits.entry(m.currency.clone()).or_default() += m.amount_minor;
        *credits.entry(m.currency.clone()).or_default() += m.amount_minor;
    }
    assert_eq!(debits, credits, "debits equal credits per currency");

    // What every account should hold, from the payments themselves.
    let mut expected = BTreeMap::<(String, String), i64>::new();
    for (id, _) in &payments {
        let p = by_id(c, id).await;
        let currency = p.authorized_amount.as_ref().expect("amount").currency.clone();
        let held = if p.status == PaymentStatus::Authorized as i32 {
            amount(&p.authorized_amount)
        } else {
            0
        };
        let kept = amount(&p.captured_amount) - amount(&p.refunded_amount);
        *expected.entry((currency.clone(), "holds".into())).or_default() += held;
        *expected.entry((currency.clone(), "merchant".into())).or_default() += kept;
        *expected
            .entry((currency, format!("customer:{}", p.customer_id)))
            .or_default() -= held + kept;
    }
    let actual = balances(&entries);
    for (account, balance) in &actual {
        assert_eq!(
            expected.get(account).copied().unwrap_or(0),
            *balance,
            "{account:?}"
        );
    }
    for (account, balance) in &expected {
        assert_eq!(actual.get(account).copied().unwrap_or(0), *balance, "{account:?}");
    }
    assert_eq!(actual[&("EUR".to_string(), "merchant".to_string())], 1000);
    assert_eq!(actual[&("USD".to_string(), "merchant".to_string())], 150);
    assert_eq!(actual[&("EUR".to_string(), "holds".to_string())], 1004);

    // Filters combine with AND.
    let voids_of_p1 = entries_where(
        c,
        ListLedgerEntriesRequest {
            order_reference: "ord_a1".into(),
            kind: LedgerEntryKind::Void as i32,
            ..Default::default()
        },
        50,
    )
    .await;
    assert_eq!(
        postings(&voids_of_p1),
        [(LedgerEntryKind::Void, "customer:cus_1", "holds", 751)]
    );
    let none = entries_where(
        c,
        ListLedgerEntriesRequest {
            payment_id: p0.0.clone(),
            order_reference: "ord_a1".into(),
            ..Default::default()
        },
        50,
    )
    .await;
    assert!(none.is_empty(), "p0's entries are not ord_a1's");
    let last = entries.last().expect("entries");
    let since = entries_where(
        c,
        ListLedgerEntriesRequest {
            since_unix_ms: last.created_at_unix_ms,
            ..Default::default()
        },
        50,
    )
    .await;
    assert!(!since.is_empty());
    assert!(
        since
            .iter()
            .all(|e| e.created_at_unix_ms >= last.created_at_unix_ms)
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.created_at_unix_ms >= last.created_at_unix_ms)
            .count(),
        since.len()
    );
    let future = entries_where(
        c,
        ListLedgerEntriesRequest {
            since_unix_ms: last.created_at_unix_ms + 3_600_000,
            ..Default::default()
        },
        50,
    )
    .await;
    assert!(future.is_empty());
}

#[tokio::test]
async fn a_restart_on_the_same_file_keeps_payments_ledger_and_answers() {
    let psp = Psp::start().await;
    let mut c = psp.client.clone();
    let authorized = authorize(&mut c, "a1", "pm_card_visa", 1000)
        .await
        .expect("authorize");
    let captured = capture(&mut c, "c1", &authorized.payment_id, eur(600))
        .await
        .expect("capture");
    let refunded = refund(&mut c, "r1", &authorized.payment_id, eur(100))
        .await
        .expect("refund");
    let flaky = authorize(&mut c, "f1", "pm_card_flaky", 10)
        .await
        .expect_err("flaky");
    assert_eq!(flaky.code(), Code::Unavailable);
    let before = all_entries(&mut c).await;
    let payment_before = by_id(&mut c, &authorized.payment_id).await;
    let database = psp.database.clone();
    let Psp {
        server,
        client,
        database: _,
        _dir: dir,
    } = psp;
    drop((c, client));
    server.shutdown().await.expect("drained");

    let (_server, mut c) = serve(PaymentsOptions {
        database: Some(database),
        ..Default::default()
    })
    .await;
    assert_eq!(by_id(&mut c, &authorized.payment_id).await, payment_before);
    assert_eq!(all_entries(&mut c).await, before);
    assert_eq!(
        authorize(&mut c, "a1", "pm_card_visa", 1000)
            .await
            .expect("repeat"),
        authorized
    );
    assert_eq!(
        capture(&mut c, "c1", &authorized.payment_id, eur(600))
            .await
            .expect("repeat"),
        captured
    );
    assert_eq!(
        refund(&mut c, "r1", &authorized.payment_id, eur(100))
            .await
            .expect("repeat"),
        refunded
    );
    assert_failed_precondition(
        authorize(&mut c, "a1", "pm_card_visa", 5).await,
        "IDEMPOTENCY_KEY",
    );
    assert_eq!(
        all_entries(&mut c).await,
        before,
        "repeats after the restart moved nothing"
    );
    let retry = authorize(&mut c, "f1", "pm_card_flaky", 10)
        .await
        .expect("the flaky marker survived: the retry authorizes");
    assert_eq!(retry.status, PaymentStatus::Authorized as i32);
    let newer = authorize(&mut c, "a2", "pm_card_visa", 1)
        .await
        .expect("new payment");
    let after = all_entries(&mut c).await;
    assert_eq!(after.len(), before.len() + 2);
    assert!(
        after.windows(2).all(|w| w[0].entry_id < w[1].entry_id),
        "entry ids keep ascending across the restart"
    );
    assert_eq!(entries_of(&mut c, &newer.payment_id).await.len(), 1);
    drop(dir);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "a1", 100).await;
    let long = "x".repeat(129);

    let authorize_cases: Vec<(AuthorizeRequest, &str)> = vec![
        (authorize_request("", "pm_card_visa", 1), "idempotency_key"),
        (
            AuthorizeRequest {
                order_reference: "ord_long".into(),
                ..authorize_request(&long, "pm_card_visa", 1)
            },
            "idempotency_key",
        ),
        (authorize_request("k", "pm_card_visa", 0), "amount.amount_minor"),
        (authorize_request("k", "pm_card_visa", -5), "amount.amount_minor"),
        (
            AuthorizeRequest {
                amount: money(1, "usd"),
                ..authorize_request("k", "pm_card_visa", 1)
            },
            "amount.currency",
        ),
        (
            AuthorizeRequest {
                amount: money(1, "EURO"),
                ..authorize_request("k", "pm_card_visa", 1)
            },
            "amount.currency",
        ),
        (
            AuthorizeRequest {
                amount: None,
                ..authorize_request("k", "pm_card_visa", 1)
            },
            "amount",
        ),
        (authorize_request("k", "pm_card_mastercard", 1), "payment_method"),
        (authorize_request("k", "", 1), "payment_method"),
        (
            AuthorizeRequest {
                customer_id: String::new(),
                ..authorize_request("k", "pm_card_visa", 1)
            },
            "customer_id",
        ),
        (
            AuthorizeRequest {
                order_reference: long.clone(),
                ..authorize_request("k", "pm_card_visa", 1)
            },
            "order_reference",
        ),
    ];
    for (request, field) in authorize_cases {
        let status = c.authorize(request.clone()).await.expect_err("invalid");
        assert_eq!(bad_fields(&status), [field], "{request:?}");
    }

    let status = capture(c, "c", "pay_nope", None).await.expect_err("bad id");
    assert_eq!(bad_fields(&status), ["payment_id"]);
    let status = capture(c, "c", &id, eur(0)).await.expect_err("zero");
    assert_eq!(bad_fields(&status), ["amount.amount_minor"]);
    let status = capture(c, "", &id, None).await.expect_err("no key");
    assert_eq!(bad_fields(&status), ["idempotency_key"]);
    let status = void(c, "v", "").await.expect_err("no id");
    assert_eq!(bad_fields(&status), ["payment_id"]);
    let status = refund(c, "r", &id, money(-1, "eur"))
        .await
        .expect_err("bad amount");
    assert_eq!(bad_fields(&status), ["amount.amount_minor", "amount.currency"]);
    let status = c
        .refund(RefundRequest {
            idempotency_key: "r".into(),
            payment_id: id.clone(),
            amount: None,
            reason: "y".repeat(501),
        })
        .await
        .expect_err("long reason");
    assert_eq!(bad_fields(&status), ["reason"]);
    let status = c
        .get_payment(GetPaymentRequest { lookup: None })
        .await
        .expect_err("no lookup");
    assert_eq!(bad_fields(&status), ["lookup"]);
    let status = get(c, Lookup::AuthorizeIdempotencyKey(String::new()))
        .await
        .expect_err("empty key");
    assert_eq!(bad_fields(&status), ["authorize_idempotency_key"]);
    let status = get(
        c,
        Lookup::PaymentId("re_0193a5c4-7e2b-7c1d-9a3f-2b8c4d5e6f70".into()),
    )
    .await
    .expect_err("a refund id");
    assert_eq!(bad_fields(&status), ["payment_id"]);

    let list_cases = [
        (
            ListLedgerEntriesRequest {
                page: Some(PageRequest {
                    page_size: 501,
                    page_token: String::new(),
                }),
                ..Default::default()
            },
            "page.page_size",
        ),
        (
            ListLedgerEntriesRequest {
                page: Some(PageRequest {
                    page_size: 10,
                    page_token: "not-a-token".into(),
                }),
                ..Default::default()
            },
            "page.page_token",
        ),
        (
            ListLedgerEntriesRequest {
                kind: 42,
                ..Default::default()
            },
            "kind",
        ),
        (
            ListLedgerEntriesRequest {
                since_unix_ms: -1,
                ..Default::default()
            },
            "since_unix_ms",
        ),
        (
            ListLedgerEntriesRequest {
                payment_id: "pay_?".into(),
                ..Default::default()
            },
            "payment_id",
        ),
    ];
    for (request, field) in list_cases {
        let status = c.list_ledger_entries(request.clone()).await.expect_err("invalid");
        assert_eq!(bad_fields(&status), [field], "{request:?}");
    }

    // Page size 0 means the default of 50.
    for i in 0..55 {
        visa(c, &format!("many{i}"), 1).await;
    }
    let page = c
        .list_ledger_entries(ListLedgerEntriesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.entries.len(), 50);
    assert!(!page.page.expect("page").next_page_token.is_empty());
    assert_eq!(all_entries(c).await.len(), 56, "the invalid calls moved nothing");
}

#[tokio::test]
async fn every_money_call_takes_at_least_the_configured_latency() {
    let latency = Duration::from_millis(150);
    let mut psp = Psp::start_with(PaymentsOptions {
        latency,
        ..Default::default()
    })
    .await;
    let c = &mut psp.client;
    let started = Instant::now();
    let id = visa(c, "a1", 100).await;
    assert!(started.elapsed() >= latency, "authorize");
    let started = Instant::now();
    capture(c, "c1", &id, None).await.expect("capture");
    assert!(started.elapsed() >= latency, "capture");
    let started = Instant::now();
    refund(c, "r1", &id, None).await.expect("refund");
    assert!(started.elapsed() >= latency, "refund");
    let other = visa(c, "a2", 100).await;
    let started = Instant::now();
    void(c, "v1", &other).await.expect("void");
    assert!(started.elapsed() >= latency, "void");
    let started = Instant::now();
    authorize(c, "a1", "pm_card_visa", 100).await.expect("repeat");
    assert!(started.elapsed() >= latency, "a replayed answer too");
}

#[tokio::test]
async fn the_largest_amounts_move_without_overflow() {
    let mut psp = Psp::start().await;
    let c = &mut psp.client;
    let id = visa(c, "a1", i64::MAX).await;
    let captured = capture(c, "c1", &id, eur(i64::MAX - 1)).await.expect("capture");
    assert_eq!(amount(&captured.captured_amount), i64::MAX - 1);
    let refunded = refund(c, "r1", &id, None).await.expect("refund");
    assert_eq!(refunded.status, PaymentStatus::Refunded as i32);
    assert_eq!(amount(&refunded.total_refunded), i64::MAX - 1);
    assert_eq!(
        postings(&entries_of(c, &id).await)
            .iter()
            .map(|p| p.3)
            .collect::<Vec<_>>(),
        [i64::MAX, i64::MAX - 1, 1, i64::MAX - 1]
    );
}
