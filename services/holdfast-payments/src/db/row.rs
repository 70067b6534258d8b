//! The stored payment row: its columns, how it reads from and writes back to SQLite, and
//! its wire form. A leaf module: the transactions (`payments.rs`) and the ledger
//! (`ledger.rs`) both use it.

use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::{Payment, PaymentStatus};
use rusqlite::{Connection, Row, params};

use crate::error::PaymentsError;

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
    pub(super) fn refused(&self, why: &str) -> PaymentsError {
        PaymentsError::payment_state(&self.payment_id, format!("payment {} {why}", self.payment_id))
    }

    /// A stored payment without a status: the row is corrupt.
    pub(super) fn no_status(&self) -> PaymentsError {
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
    pub(super) fn update(&self, tx: &Connection) -> Result<(), PaymentsError> {
        tx.prepare_cached(
            "UPDATE payments SET status = ?2, captured_minor = ?3, refunded_minor = ?4, \
             updated_at_unix_ms = ?5 WHERE payment_id = ?1",
        )?
        .execute(params![
            self.payment_id,
            self.status as i32,
            self.captured,
            self.refunded,
            self.updated_at
        ])?;
        Ok(())
    }
}
