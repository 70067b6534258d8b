//! Reconciling a checkout run: what each client was told ([`CheckoutAnswer`]) against the
//! orders and the ledger read back by `audit.rs`. Pure functions over what was read, so
//! the checks on orders and money are unit-tested without a mesh.

use std::collections::{BTreeMap, HashMap};

use holdfast_proto::orders::v1::{CheckoutOutcome, CheckoutResponse, Order, OrderStatus};

use crate::report::Check;
use crate::scenario::sample_list;

/// What a checkout came to, as the client saw it after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutAnswer {
    /// PLACED with this order id.
    Placed(String),
    /// MANUAL_REVIEW with this order id (recorded, not charged).
    ManualReview(String),
    /// PAYMENT_DECLINED.
    Declined,
    /// OUT_OF_STOCK.
    OutOfStock,
    /// PRICE_CHANGED.
    PriceChanged,
    /// No answer: the last error after every retry.
    Unknown(String),
}

impl CheckoutAnswer {
    /// Classifies a response.
    pub fn of(response: &CheckoutResponse) -> Self {
        let order_id = || response.order.as_ref().map(|o| o.id.clone()).unwrap_or_default();
        match CheckoutOutcome::try_from(response.outcome) {
            Ok(CheckoutOutcome::Placed) => Self::Placed(order_id()),
            Ok(CheckoutOutcome::ManualReview) => Self::ManualReview(order_id()),
            Ok(CheckoutOutcome::PaymentDeclined) => Self::Declined,
            Ok(CheckoutOutcome::OutOfStock) => Self::OutOfStock,
            Ok(CheckoutOutcome::PriceChanged) => Self::PriceChanged,
            _ => Self::Unknown(format!("outcome {}", response.outcome)),
        }
    }

    /// The label tallied in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Placed(_) => "placed",
            Self::ManualReview(_) => "manual_review",
            Self::Declined => "payment_declined",
            Self::OutOfStock => "out_of_stock",
            Self::PriceChanged => "price_changed",
            Self::Unknown(_) => "unknown",
        }
    }

    /// The order it created, if any.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::Placed(id) | Self::ManualReview(id) => Some(id),
            _ => None,
        }
    }
}

/// One customer's checkout in a run: one idempotency key, one final answer.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// The customer (unique to the attempt).
    pub customer: String,
    /// Its idempotency key.
    pub key: String,
    /// What the client finally saw.
    pub answer: CheckoutAnswer,
    /// Whether the harness cancelled the order afterwards.
    pub cancelled: bool,
}

/// Orders and money, read back and reconciled.
#[derive(Debug, Default)]
pub struct CheckoutAudit {
    /// The checks.
    pub checks: Vec<Check>,
    /// Units of orders that are not cancelled, per SKU.
    pub live_units: HashMap<String, i64>,
    /// Orders read back.
    pub orders: usize,
    /// Captures (charges) of the run's customers found in the ledger.
    pub captures: usize,
}

fn is_live(order: &Order) -> bool {
    order.status != OrderStatus::Cancelled as i32
}

fn is_charged_status(status: i32) -> bool {
    [
        OrderStatus::Paid,
        OrderStatus::Fulfilling,
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

/// One payment as the ledger tells it.
#[derive(Debug, Default, Clone)]
pub(crate) struct PaymentFacts {
    pub(crate) customer: String,
    pub(crate) captures: u32,
    pub(crate) captured_minor: i64,
    pub(crate) refunded_minor: i64,
}

/// The checks on orders and money: what the clients were told against the orders and the
/// ledger read back.
pub(crate) fn reconcile(
    attempted: &[Attempted],
    orders: &HashMap<String, Vec<Order>>,
    payments: &HashMap<String, PaymentFacts>,
) -> CheckoutAudit {
    let mut audit = CheckoutAudit {
        orders: orders.values().map(Vec::len).sum(),
        captures: payments.values().map(|p| p.captures as usize).sum(),
        ..Default::default()
    };
    let empty = Vec::new();

    // Orders against answers: one order per key, the one the client was told about.
    let mut mismatches = Vec::new();
    let mut duplicates = Vec::new();
    for a in attempted {
        let theirs = orders.get(&a.customer).unwrap_or(&empty);
        if theirs.len() > 1 {
            duplicates.push(format!("{} has {} orders", a.key, theirs.len()));
        }
        match (&a.answer, theirs.first()) {
            (CheckoutAnswer::Placed(id) | CheckoutAnswer::ManualReview(id), Some(order)) => {
                if &order.id != id {
                    mismatches.push(format!("{}: answered {id}, recorded {}", a.key, order.id));
                } else if a.cancelled && is_live(order) {
                    mismatches.push(format!("{}: cancelled but {}", a.key, status_name(order.status)));
                }
            }
            (CheckoutAnswer::Placed(id) | CheckoutAnswer::ManualReview(id), None) => {
                mismatches.push(format!("{}: answered {id}, no such order", a.key));
            }
            (CheckoutAnswer::Unknown(_), _) => {}
            // A refusal after create_order (the hold was lost before the pivot and could
            // not be held again): compensated, so the order exists, CANCELLED.
            (_, Some(order)) if !is_live(order) => {}
            (refused, Some(order)) => mismatches.push(format!(
                "{}: answered {} yet order {} exists",
                a.key,
                refused.label(),
                order.id
            )),
            (_, None) => {}
        }
    }
    audit.checks.push(Check::new(
        "orders-match-answers",
        "every PLACED answer has its order, every refusal has none (or a CANCELLED one: compensated), every cancelled order is CANCELLED",
        mismatches.is_empty(),
        if mismatches.is_empty() {
            format!("{} orders read back for {} keys", audit.orders, attempted.len())
        } else {
            format!("{} mismatches: {}", mismatches.len(), sample_list(&mismatches, 5))
        },
    ));

    // One charge per key: at most one captured payment per key (= customer), each captured
    // at most once.
    let mut captured_by_customer: BTreeMap<&str, Vec<&PaymentFacts>> = BTreeMap::new();
    for facts in payments.values().filter(|p| p.captures > 0) {
        captured_by_customer
            .entry(facts.customer.as_str())
            .or_default()
            .push(facts);
    }
    let key_of: HashMap<&str, &str> = attempted
        .iter()
        .map(|a| (a.customer.as_str(), a.key.as_str()))
        .collect();
    let twice: Vec<String> = captured_by_customer
        .iter()
        .filter(|(_, ps)| ps.len() > 1 || ps.iter().any(|p| p.captures > 1))
        .map(|(c, ps)| {
            format!(
                "{} charged {} times",
                key_of.get(c).unwrap_or(c),
                ps.iter().map(|p| p.captures).sum::<u32>()
            )
        })
        .collect();
    audit.checks.push(Check::new(
        "one-charge-per-key",
        "at most one CAPTURE ledger entry per idempotency key",
        twice.is_empty(),
        if twice.is_empty() {
            format!(
                "{} captures for {} keys, none twice",
                audit.captures,
                attempted.len()
            )
        } else {
            format!(
                "{} keys charged more than once: {}",
                twice.len(),
                sample_list(&twice, 5)
            )
        },
    ));

    // Every live order (not held for review) is captured once, for its total, not refunded.
    let mut uncharged = Vec::new();
    let mut live_charged = 0;
    for order in orders.values().flatten() {
        for line in &order.lines {
            if is_live(order) {
                *audit.live_units.entry(line.sku.clone()).or_default() += line.quantity;
            }
        }
        if !is_live(order) || order.status == OrderStatus::ManualReview as i32 {
            continue;
        }
        let total = order.total.as_ref().map_or(0, |m| m.amount_minor);
        let facts = payments.get(&order.payment_id);
        let ok = is_charged_status(order.status)
            && facts.is_some_and(|f| f.captures == 1 && f.captured_minor == total && f.refunded_minor == 0);
        if ok {
            live_charged += 1;
        } else {
            uncharged.push(format!(
                "{} ({}, payment {:?}: {})",
                order.id,
                status_name(order.status),
                order.payment_id,
                facts.map_or("no ledger entries".to_string(), |f| format!(
                    "{} captures of {} minor, {} refunded, total {total}",
                    f.captures, f.captured_minor, f.refunded_minor
                ))
            ));
        }
    }
    audit.checks.push(Check::new(
        "order-without-charge",
        "every live order is captured exactly once for its total",
        uncharged.is_empty(),
        if uncharged.is_empty() {
            format!("{live_charged} live orders, each captured once")
        } else {
            format!(
                "{} orders not charged as they should be: {}",
                uncharged.len(),
                sample_list(&uncharged, 5)
            )
        },
    ));

    // Net money taken from each customer equals the totals of their live, charged orders:
    // nothing for refusals, cancellations (refunded or voided) or review holds.
    let mut overcharged = Vec::new();
    let mut net_total = 0;
    for a in attempted {
        let expected: i64 = orders
            .get(&a.customer)
            .unwrap_or(&empty)
            .iter()
            .filter(|o| is_live(o) && o.status != OrderStatus::ManualReview as i32)
            .map(|o| o.total.as_ref().map_or(0, |m| m.amount_minor))
            .sum();
        let taken: i64 = captured_by_customer.get(a.customer.as_str()).map_or(0, |ps| {
            ps.iter().map(|p| p.captured_minor - p.refunded_minor).sum()
        });
        net_total += taken;
        if taken > expected {
            overcharged.push(format!(
                "{} ({}): {taken} minor taken, orders worth {expected}",
                a.key,
                a.answer.label()
            ));
        }
    }
    let strays: Vec<String> = payments
        .iter()
        .filter(|(_, f)| f.captures > 0 && !key_of.contains_key(f.customer.as_str()))
        .map(|(id, f)| format!("{id} of unknown customer {}", f.customer))
        .collect();
    overcharged.extend(strays);
    audit.checks.push(Check::new(
        "charge-without-order",
        "no money is kept without a live order: refused and cancelled checkouts net zero",
        overcharged.is_empty(),
        if overcharged.is_empty() {
            format!("{net_total} minor kept in all, matching the live orders")
        } else {
            format!(
                "{} charges without an order: {}",
                overcharged.len(),
                sample_list(&overcharged, 5)
            )
        },
    ));
    audit
}

/// An order status's short name.
pub fn status_name(status: i32) -> String {
    OrderStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("ORDER_STATUS_").to_string())
        .unwrap_or_else(|_| format!("status {status}"))
}

/// The checks that need orders and payments, skipped with `why`.
pub fn skipped_checkout_checks(why: &str) -> Vec<Check> {
    vec![
        Check::skipped(
            "orders-match-answers",
            "every PLACED answer has its order, every refusal has none (or a CANCELLED one)",
            why,
        ),
        Check::skipped(
            "one-charge-per-key",
            "at most one CAPTURE per idempotency key",
            why,
        ),
        Check::skipped("order-without-charge", "every live order is captured once", why),
        Check::skipped(
            "charge-without-order",
            "no money is kept without a live order",
            why,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::common::v1::Money;
    use holdfast_proto::orders::v1::OrderLine;

    fn order(id: &str, customer: &str, status: OrderStatus, payment: &str) -> Order {
        Order {
            id: id.into(),
            customer_id: customer.into(),
            status: status as i32,
            payment_id: payment.into(),
            total: Some(Money {
                amount_minor: 500,
                currency: "EUR".into(),
            }),
            lines: vec![OrderLine {
                sku: "S".into(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn attempted(customer: &str, answer: CheckoutAnswer) -> Attempted {
        Attempted {
            customer: customer.into(),
            key: format!("key-{customer}"),
            answer,
            cancelled: false,
        }
    }

    fn paid(customer: &str, captures: u32, refunded: i64) -> PaymentFacts {
        PaymentFacts {
            customer: customer.into(),
            captures,
            captured_minor: 500 * i64::from(captures),
            refunded_minor: refunded,
        }
    }

    fn failed(audit: &CheckoutAudit) -> Vec<&'static str> {
        audit
            .checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn reconcile_passes_a_consistent_sale() {
        let attempted = vec![
            attempted("a", CheckoutAnswer::Placed("o1".into())),
            attempted("b", CheckoutAnswer::OutOfStock),
        ];
        let orders = HashMap::from([("a".to_string(), vec![order("o1", "a", OrderStatus::Paid, "p1")])]);
        let payments = HashMap::from([("p1".to_string(), paid("a", 1, 0))]);
        let audit = reconcile(&attempted, &orders, &payments);
        assert!(failed(&audit).is_empty(), "{:?}", audit.checks);
        assert_eq!(audit.live_units["S"], 1);
    }

    #[test]
    fn a_refusal_may_leave_a_compensated_order_but_never_a_live_one() {
        // The hold was lost before the pivot and could not be held again: the buyer is told
        // out of stock and the order created before the commit is CANCELLED, its money voided.
        let answers = vec![attempted("a", CheckoutAnswer::OutOfStock)];
        let compensated = HashMap::from([(
            "a".to_string(),
            vec![order("o1", "a", OrderStatus::Cancelled, "")],
        )]);
        let audit = reconcile(&answers, &compensated, &HashMap::new());
        assert!(failed(&audit).is_empty(), "{:?}", audit.checks);
        assert!(audit.live_units.is_empty());

        let live = HashMap::from([("a".to_string(), vec![order("o1", "a", OrderStatus::Placed, "")])]);
        let audit = reconcile(&answers, &live, &HashMap::new());
        assert!(
            failed(&audit).contains(&"orders-match-answers"),
            "{:?}",
            audit.checks
        );
    }

    #[test]
    fn reconcile_names_double_charges_orphans_and_phantom_orders() {
        let attempted = vec![
            attempted("a", CheckoutAnswer::Placed("o1".into())),
            attempted("b", CheckoutAnswer::Declined),
            attempted("c", CheckoutAnswer::OutOfStock),
        ];
        let orders = HashMap::from([
            ("a".to_string(), vec![order("o1", "a", OrderStatus::Paid, "p1")]),
            ("c".to_string(), vec![order("o3", "c", OrderStatus::Paid, "p3")]),
        ]);
        let payments = HashMap::from([
            ("p1".to_string(), paid("a", 2, 0)),
            ("p2".to_string(), paid("b", 1, 0)),
            ("p3".to_string(), paid("c", 1, 0)),
        ]);
        let audit = reconcile(&attempted, &orders, &payments);
        assert_eq!(
            failed(&audit),
            vec![
                "orders-match-answers",
                "one-charge-per-key",
                "order-without-charge",
                "charge-without-order"
            ]
        );
    }

    #[test]
    fn reconcile_wants_cancelled_orders_refunded() {
        let mut a = attempted("a", CheckoutAnswer::Placed("o1".into()));
        a.cancelled = true;
        let orders = HashMap::from([(
            "a".to_string(),
            vec![order("o1", "a", OrderStatus::Cancelled, "p1")],
        )]);
        let kept = HashMap::from([("p1".to_string(), paid("a", 1, 0))]);
        assert_eq!(
            failed(&reconcile(std::slice::from_ref(&a), &orders, &kept)),
            vec!["charge-without-order"]
        );
        let refunded = HashMap::from([("p1".to_string(), paid("a", 1, 500))]);
        assert!(failed(&reconcile(&[a], &orders, &refunded)).is_empty());
    }
}
