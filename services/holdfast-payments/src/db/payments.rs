//! Payments: the stored row and the transactions that move it (authorize, capture, void, refund).

use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, LedgerEntryKind, Payment,
    PaymentStatus, RefundRequest, RefundResponse, VoidRequest, VoidResponse,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use uuid::Uuid;

use crate::error::PaymentsError;
use crate::validate::{PAYMENT_ID_PREFIX, REFUND_ID_PREFIX, TestMethod};

use super::{
    Answer, Inner, Scope,
    idempotency::{remember, replay},
    ledger::{Posting, post},
    ttl_ms,
};

pub(super) const PAYMENT_COLUMNS: &str = "payment_id, customer_id, order_reference, payment_method, status, \
     decline_code, currency, authorized_minor, captured_minor, refunded_minor, \
     authorize_idempotency_key, created_at_unix_ms, updated_at_unix_ms";

/// A payment as stored.
#[derive(Debug, Clone)]
pub(super) struct PaymentRow {
    pub(super) payment_id: String,
    pub(super) customer_id: String,
    pub(super) order_reference: String,
    pub(super) payment_method: String,
    pub(super) status: PaymentStatus,
    pub(super) decline_code: String,
    pub(super) currency: String,
    pub(super) authorized: i64,
    pub(super) captured: i64,
    pub(super) refunded: i64,
    pub(super) authorize_key: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl PaymentRow {
    /// `FAILED_PRECONDITION`: the payment is in no state for the call (`why` says how).
    fn refused(&self, why: &str) -> PaymentsError {
        PaymentsError::payment_state(&self.payment_id, format!("payment {} {why}", self.payment_id))
    }

    /// A stored payment without a status: the row is corrupt.
    fn no_status(&self) -> PaymentsError {
        PaymentsError::Corrupt(format!("payment {} has no status", self.payment_id))
    }

    /// Reads a row of [`PAYMENT_COLUMNS`]; an unknown status is a corrupt row.
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Result<Self, PaymentsError>> {
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

    pub(super) fn money(&self, amount_minor: i64) -> Option<Money> {
        Some(Money {
            amount_minor,
            currency: self.currency.clone(),
        })
    }

    pub(super) fn customer_account(&self) -> String {
        format!("customer:{}", self.customer_id)
    }

    pub(super) fn to_wire(&self) -> Payment {
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
    pub(super) fn update(&self, tx: &Transaction<'_>) -> Result<(), PaymentsError> {
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

pub(super) fn load_payment(conn: &Connection, payment_id: &str) -> Result<Option<PaymentRow>, PaymentsError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?1");
    conn.query_row(&sql, [payment_id], PaymentRow::read)
        .optional()?
        .transpose()
}

pub(super) fn authorize_tx(
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
    remember(&tx, Scope::Capture, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh { response, moved })
}

pub(super) fn void_tx(
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
    remember(&tx, Scope::Void, key, fingerprint, &response, now)?;
    tx.commit()?;
    Ok(Answer::Fresh { response, moved })
}

pub(super) fn refund_tx(
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
