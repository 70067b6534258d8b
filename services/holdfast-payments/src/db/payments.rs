//! Payments: the transactions that move a payment (authorize, capture, void, refund).

use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, LedgerEntryKind, PaymentStatus,
    RefundRequest, RefundResponse, VoidRequest, VoidResponse,
};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::error::PaymentsError;
use crate::validate::{PAYMENT_ID_PREFIX, REFUND_ID_PREFIX, TestMethod};

use super::{
    Answer, Scope,
    idempotency::{remember, replay},
    ledger::{Posting, post},
    row::{PAYMENT_COLUMNS, PaymentRow},
    ttl_ms,
};

pub(super) fn load_payment(conn: &Connection, payment_id: &str) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([payment_id], PaymentRow::read)
        .optional()?
        .transpose()
}

/// The outer `Err` rolls the call back; an inner `Err` is an answer whose writes are kept
/// (`pm_card_flaky`'s first attempt keeps its marker).
pub(super) fn authorize_tx(
    conn: &Connection,
    last_entry_id: &mut u128,
    key: &str,
    request: &AuthorizeRequest,
    fingerprint: &[u8],
    method: TestMethod,
    now: i64,
) -> Result<Result<Answer<AuthorizeResponse>, PaymentsError>, PaymentsError> {
    // One writer job: inside the writer's transaction, in a savepoint of its own (an
    // `Err` rolls back everything this call wrote).
    if let Some(stored) = replay(conn, Scope::Authorize, key, fingerprint, now)? {
        return Ok(Ok(Answer::Replayed(stored)));
    }
    if method == TestMethod::Flaky {
        let first = conn
            .prepare_cached(
                "INSERT INTO flaky_attempts (idempotency_key, created_at_unix_ms, expires_at_unix_ms) \
             VALUES (?1, ?2, ?3) ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![key, now, now.saturating_add(ttl_ms())])?;
        if first == 1 {
            // Only the marker is kept (the job succeeds, so its write commits): no payment,
            // no ledger entry, no idempotency record.
            return Ok(Err(PaymentsError::SimulatedOutage));
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
    conn.prepare_cached(&sql)?.execute(params![
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
    ])?;
    let moved = status == PaymentStatus::Authorized;
    if moved {
        post(
            conn,
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
    remember(conn, Scope::Authorize, key, fingerprint, &response, now)?;
    Ok(Ok(Answer::Fresh { response, moved }))
}

/// Checks that `amount` (if given) is in the payment's currency; answers its minor units.
pub(super) fn amount_in_currency(
    payment: &PaymentRow,
    amount: Option<&Money>,
) -> Result<Option<i64>, PaymentsError> {
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

pub(super) fn capture_tx(
    conn: &Connection,
    last_entry_id: &mut u128,
    key: &str,
    request: &CaptureRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<CaptureResponse>, PaymentsError> {
    // One writer job: inside the writer's transaction, in a savepoint of its own (an
    // `Err` rolls back everything this call wrote).
    if let Some(stored) = replay(conn, Scope::Capture, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(conn, &request.payment_id)? else {
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
            payment.update(conn)?;
            let posting = |kind, amount_minor| Posting {
                kind,
                amount_minor,
                idempotency_key: key,
                refund_id: "",
                reason: "",
            };
            post(
                conn,
                last_entry_id,
                &payment,
                posting(LedgerEntryKind::Capture, take),
                now,
            )?;
            if release > 0 {
                // The uncaptured rest of the hold goes back to the customer.
                post(
                    conn,
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
            return Err(payment.refused("was declined; nothing to capture"));
        }
        PaymentStatus::Voided => {
            return Err(payment.refused("was voided; nothing to capture"));
        }
        PaymentStatus::Unspecified => {
            return Err(payment.no_status());
        }
    };
    let response = CaptureResponse {
        payment_id: payment.payment_id.clone(),
        status: payment.status as i32,
        decline_code: String::new(),
        captured_amount: payment.money(payment.captured),
    };
    remember(conn, Scope::Capture, key, fingerprint, &response, now)?;
    Ok(Answer::Fresh { response, moved })
}

pub(super) fn void_tx(
    conn: &Connection,
    last_entry_id: &mut u128,
    key: &str,
    request: &VoidRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<VoidResponse>, PaymentsError> {
    // One writer job: inside the writer's transaction, in a savepoint of its own (an
    // `Err` rolls back everything this call wrote).
    if let Some(stored) = replay(conn, Scope::Void, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(conn, &request.payment_id)? else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    let moved = match payment.status {
        PaymentStatus::Authorized => {
            payment.status = PaymentStatus::Voided;
            payment.updated_at = now;
            payment.update(conn)?;
            post(
                conn,
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
            return Err(payment.refused("was captured; refund it instead"));
        }
        PaymentStatus::Declined => {
            return Err(payment.refused("was declined; nothing to void"));
        }
        PaymentStatus::Unspecified => {
            return Err(payment.no_status());
        }
    };
    let response = VoidResponse {
        payment_id: payment.payment_id.clone(),
        status: payment.status as i32,
        decline_code: String::new(),
    };
    remember(conn, Scope::Void, key, fingerprint, &response, now)?;
    Ok(Answer::Fresh { response, moved })
}

pub(super) fn refund_tx(
    conn: &Connection,
    last_entry_id: &mut u128,
    key: &str,
    request: &RefundRequest,
    fingerprint: &[u8],
    now: i64,
) -> Result<Answer<RefundResponse>, PaymentsError> {
    // One writer job: inside the writer's transaction, in a savepoint of its own (an
    // `Err` rolls back everything this call wrote).
    if let Some(stored) = replay(conn, Scope::Refund, key, fingerprint, now)? {
        return Ok(Answer::Replayed(stored));
    }
    let Some(mut payment) = load_payment(conn, &request.payment_id)? else {
        return Err(PaymentsError::NotFound(request.payment_id.clone()));
    };
    match payment.status {
        PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => {}
        PaymentStatus::Authorized | PaymentStatus::Declined | PaymentStatus::Voided => {
            return Err(payment.refused("was never captured; nothing to refund"));
        }
        PaymentStatus::Unspecified => {
            return Err(payment.no_status());
        }
    }
    let left = payment.captured - payment.refunded;
    let amount = amount_in_currency(&payment, request.amount.as_ref())?.unwrap_or(left);
    if left <= 0 {
        return Err(payment.refused("is fully refunded"));
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
    payment.update(conn)?;
    let refund_id = format!("{REFUND_ID_PREFIX}{}", Uuid::now_v7());
    post(
        conn,
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
    remember(conn, Scope::Refund, key, fingerprint, &response, now)?;
    Ok(Answer::Fresh {
        response,
        moved: true,
    })
}
