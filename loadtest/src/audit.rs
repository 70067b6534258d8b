//! End-state read-backs through the services' own APIs: stock levels
//! (`InventoryService.GetAvailability`), orders (`OrderService.ListOrders`) and the payment
//! ledger (`PaymentsService.ListLedgerEntries`), and the checks on orders and money that
//! flash-sale, checkout-storm and soak share.
//!
//! Polling external state until it settles (holds lapse on the server's clock, captures and
//! refunds finish after checkout answers) is bounded by a deadline; what is still wrong then
//! is reported.

use std::collections::HashMap;
use std::time::Duration;

use holdfast_proto::common::v1::PageRequest;
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, StockLevel};
use holdfast_proto::orders::v1::{ListOrdersRequest, Order};
use holdfast_proto::payments::v1::{
    GetPaymentRequest, LedgerEntry, LedgerEntryKind, ListLedgerEntriesRequest, get_payment_request,
};
use tokio::time::Instant;

use crate::mesh::Mesh;
pub use crate::reconcile::{Attempted, CheckoutAnswer, CheckoutAudit, skipped_checkout_checks};
use crate::reconcile::{PaymentFacts, reconcile};
use crate::report::Check;
use crate::scenario::{for_each_concurrent, sample_list, with_retries};

/// How often settled state is polled.
const POLL: Duration = Duration::from_millis(200);

/// Retries of one read-back call (a read is safe to repeat).
const READ_RETRIES: u32 = 8;

/// A read-back call, retried while it fails in a way a retry can fix: the connection a
/// restarted process left behind breaks under the first call that uses it.
pub(crate) async fn read_back<T, F, Fut>(what: &str, call: F) -> anyhow::Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    with_retries(READ_RETRIES, call)
        .await
        .0
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{what}: {s}"))
}

/// Levels of `skus`, in order (GetAvailability, 100 at a time).
pub async fn availability(mesh: &Mesh, skus: &[String]) -> anyhow::Result<Vec<StockLevel>> {
    let mut levels = Vec::with_capacity(skus.len());
    for chunk in skus.chunks(100) {
        let reply = read_back("GetAvailability", |_| {
            let mut client = mesh.inventory(0);
            let request = GetAvailabilityRequest { skus: chunk.to_vec() };
            async move { client.get_availability(request).await }
        })
        .await?;
        levels.extend(reply.levels);
    }
    Ok(levels)
}

/// Polls `skus` until none has a live hold or `deadline` passes; answers the last levels and
/// whether every hold was gone.
pub async fn wait_no_holds(
    mesh: &Mesh,
    skus: &[String],
    deadline: Instant,
) -> anyhow::Result<(Vec<StockLevel>, bool)> {
    loop {
        let levels = availability(mesh, skus).await?;
        if levels.iter().all(|l| l.reserved == 0) {
            return Ok((levels, true));
        }
        if Instant::now() >= deadline {
            return Ok((levels, false));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `live-holds` check from final levels.
pub fn live_holds_check(levels: &[StockLevel], gone: bool, waited_for: Duration) -> Check {
    let held: Vec<String> = levels
        .iter()
        .filter(|l| l.reserved != 0)
        .map(|l| format!("{} reserved {}", l.sku, l.reserved))
        .collect();
    Check::new(
        "live-holds",
        "no hold is left once every TTL has passed",
        gone,
        if gone {
            format!("reserved is 0 on all {} SKUs", levels.len())
        } else {
            format!(
                "still held {:.0} s after the last hold should have lapsed: {}",
                waited_for.as_secs_f64(),
                sample_list(&held, 5)
            )
        },
    )
}

/// Every order of `customers`, all pages.
pub async fn orders_of(mesh: &Mesh, customers: &[String]) -> anyhow::Result<HashMap<String, Vec<Order>>> {
    let found = std::sync::Mutex::new(HashMap::new());
    for_each_concurrent(customers.iter().enumerate(), 32, |(i, customer)| {
        let found = &found;
        async move {
            let client = mesh.orders(i as u64);
            let mut orders = Vec::new();
            let mut token = String::new();
            loop {
                let reply = read_back(&format!("ListOrders {customer}"), |_| {
                    let mut client = client.clone();
                    let request = ListOrdersRequest {
                        customer_id: customer.clone(),
                        statuses: Vec::new(),
                        page: Some(PageRequest {
                            page_size: 500,
                            page_token: token.clone(),
                        }),
                    };
                    async move { client.list_orders(request).await }
                })
                .await?;
                orders.extend(reply.orders);
                token = reply.page.map(|p| p.next_page_token).unwrap_or_default();
                if token.is_empty() {
                    break;
                }
            }
            found.lock().expect("lock").insert(customer.clone(), orders);
            Ok(())
        }
    })
    .await?;
    Ok(found.into_inner().expect("lock"))
}

/// Every ledger entry posted at or after `since_unix_ms`, all pages.
pub async fn ledger_since(mesh: &Mesh, since_unix_ms: i64) -> anyhow::Result<Vec<LedgerEntry>> {
    let client = mesh.payments(0);
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let reply = read_back("ListLedgerEntries", |_| {
            let mut client = client.clone();
            let request = ListLedgerEntriesRequest {
                since_unix_ms,
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
                ..Default::default()
            };
            async move { client.list_ledger_entries(request).await }
        })
        .await?;
        entries.extend(reply.entries);
        token = reply.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(entries);
        }
    }
}

/// Payments of the run's customers (customer ids starting with `prefix`), from the ledger.
async fn payments_of(
    mesh: &Mesh,
    entries: &[LedgerEntry],
    prefix: &str,
) -> anyhow::Result<HashMap<String, PaymentFacts>> {
    let mut payments: HashMap<String, PaymentFacts> = HashMap::new();
    for entry in entries {
        let facts = payments.entry(entry.payment_id.clone()).or_default();
        let amount = entry.amount.as_ref().map_or(0, |m| m.amount_minor);
        let customer_account = [&entry.credit_account, &entry.debit_account]
            .into_iter()
            .find_map(|a| a.strip_prefix("customer:"));
        if let Some(customer) = customer_account {
            facts.customer = customer.to_string();
        }
        match LedgerEntryKind::try_from(entry.kind) {
            Ok(LedgerEntryKind::Capture) => {
                facts.captures += 1;
                facts.captured_minor += amount;
            }
            Ok(LedgerEntryKind::Refund) => facts.refunded_minor += amount,
            _ => {}
        }
    }
    // A capture whose authorization fell before the window: ask the PSP whose it is.
    let mut client = mesh.payments(1);
    for (payment_id, facts) in payments.iter_mut().filter(|(_, f)| f.customer.is_empty()) {
        if let Ok(reply) = client
            .get_payment(GetPaymentRequest {
                lookup: Some(get_payment_request::Lookup::PaymentId(payment_id.clone())),
            })
            .await
            && let Some(payment) = reply.into_inner().payment
        {
            facts.customer = payment.customer_id;
        }
    }
    payments.retain(|_, f| f.customer.starts_with(prefix));
    Ok(payments)
}

/// Reads back the orders and the ledger for `attempted` and reconciles them with what the
/// clients saw, polling until every check holds or `deadline` passes (captures and refunds
/// land after checkout answers). `prefix` is the run id every customer starts with;
/// `since_unix_ms` is when the run started.
pub async fn audit_checkouts(
    mesh: &Mesh,
    attempted: &[Attempted],
    prefix: &str,
    since_unix_ms: i64,
    deadline: Instant,
) -> anyhow::Result<CheckoutAudit> {
    let customers: Vec<String> = attempted.iter().map(|a| a.customer.clone()).collect();
    loop {
        let orders = orders_of(mesh, &customers).await?;
        // The server's clock may differ from ours: read a minute further back and keep only
        // the run's customers.
        let entries = ledger_since(mesh, since_unix_ms - 60_000).await?;
        let payments = payments_of(mesh, &entries, prefix).await?;
        let audit = reconcile(attempted, &orders, &payments);
        if !audit.checks.iter().any(Check::failed) || Instant::now() >= deadline {
            return Ok(audit);
        }
        tokio::time::sleep(POLL * 2).await;
    }
}
