//! The double-entry ledger: postings and the paged listing.

use holdfast_proto::common::v1::Money;
use holdfast_proto::payments::v1::{LedgerEntry, LedgerEntryKind};
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params};
use uuid::Uuid;

use crate::error::PaymentsError;
use crate::validate::LedgerQuery;

use super::{HOLDS_ACCOUNT, LedgerPage, MERCHANT_ACCOUNT, row::PaymentRow};

pub(super) const ENTRY_COLUMNS: &str = "entry_id, payment_id, order_reference, kind, debit_account, credit_account, \
     amount_minor, currency, idempotency_key, created_at_unix_ms";

/// One posting, before it gets its id.
pub(super) struct Posting<'a> {
    pub(super) kind: LedgerEntryKind,
    pub(super) amount_minor: i64,
    pub(super) idempotency_key: &'a str,
    pub(super) refund_id: &'a str,
    pub(super) reason: &'a str,
}

/// Posts one ledger entry for `payment`, debiting and crediting the accounts the
/// `LedgerEntryKind` comment names.
pub(super) fn post(
    tx: &Connection,
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
    tx.prepare_cached(
        "INSERT INTO ledger_entries (entry_id, payment_id, order_reference, kind, debit_account, \
         credit_account, amount_minor, currency, idempotency_key, refund_id, reason, created_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
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
    ])?;
    Ok(())
}

pub(super) fn read_entry(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
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

pub(super) fn list_entries(conn: &Connection, query: &LedgerQuery) -> Result<LedgerPage, PaymentsError> {
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
