//! PaymentsService: a simulated payment service provider (PSP) in the style of Stripe, so
//! checkout's failure paths can be driven from tests and the load harness.
//!
//! # Storage
//!
//! The PSP stands in for an external system, so it keeps its own SQLite database
//! (rusqlite, bundled; WAL and `synchronous = NORMAL` on a file; one connection behind a
//! mutex, every call on tokio's blocking pool), not the `holdfast-store` crate. With
//! [`PaymentsOptions::database`] unset it is a private in-memory database. Tables:
//!
//! - `payments`: one row per Authorize that got an answer: status, decline code,
//!   currency, authorized / captured / refunded minor units, the Authorize key.
//! - `ledger_entries`: the double-entry ledger, one posting per row with a UUID v7
//!   `entry_id` (ascending = posting order, kept ascending across restarts). Accounts
//!   per the `LedgerEntryKind` comments: AUTHORIZATION debits `holds` and credits
//!   `customer:<id>`; CAPTURE debits `merchant`, credits `holds`; VOID (a dropped hold,
//!   or the uncaptured rest released at a partial capture) debits `customer:<id>`,
//!   credits `holds`; REFUND debits `customer:<id>`, credits `merchant` (and keeps the
//!   refund id and reason). Declines post nothing.
//! - `idempotency_records`: per `(rpc, key)`, the request's fingerprint (its prost
//!   encoding with the key cleared) and the encoded response, kept 24 hours.
//! - `flaky_attempts`: Authorize keys whose first `pm_card_flaky` attempt has failed.
//!
//! # Transactions and idempotency
//!
//! Each Authorize, Capture, Void and Refund is one `IMMEDIATE` transaction: read the
//! idempotency record (same fingerprint: answer the stored response and move nothing;
//! different fingerprint: FAILED_PRECONDITION), check the payment's status, update it,
//! post its ledger entries, store the response under the key, commit. A crash leaves all
//! of it or none of it. Only answers are stored: a NOT_FOUND or FAILED_PRECONDITION moves
//! nothing and leaves the key unused. Within the process a per-`(rpc, key)` async lock
//! makes a repeat that arrives while the first call is running (including its latency)
//! wait for it, then answer its stored response.
//!
//! # Test payment methods
//!
//! - `pm_card_visa`: AUTHORIZED.
//! - `pm_card_declined` / `pm_card_insufficient_funds`: DECLINED with decline code
//!   `card_declined` / `insufficient_funds`; the payment row exists, no ledger entry.
//! - `pm_card_timeout`: AUTHORIZED and committed (GetPayment by
//!   `authorize_idempotency_key` and the ledger show it), then the call stalls until
//!   [`service::PAST_DEADLINE`] after the caller's `grpc-timeout` (or
//!   [`PaymentsOptions::timeout_hold`] without one) and answers DEADLINE_EXCEEDED; repeats
//!   of the key stall the same way. (The server stack's request timeout, 10 s by default,
//!   cuts a longer stall short, also as DEADLINE_EXCEEDED.) A tonic caller usually sees its own deadline first:
//!   tonic reports that as CANCELLED "Timeout expired", other gRPC clients as
//!   DEADLINE_EXCEEDED. Either way the outcome is unknown to it; look it up, then void.
//! - `pm_card_flaky`: the first Authorize of each key answers UNAVAILABLE and records only
//!   its `flaky_attempts` marker (no payment, no entry, no idempotency record); a retry
//!   with the key authorizes.
//!
//! Any other `payment_method` is INVALID_ARGUMENT, like every other malformed field (with
//! `google.rpc.BadRequest` naming it).
//!
//! # Lifecycle
//!
//! Capture: AUTHORIZED -> CAPTURED, of all or part of the hold; the rest is released by a
//! VOID entry. A later Capture answers the payment unchanged (its current status and
//! captured amount). Void: AUTHORIZED -> VOIDED; a VOIDED payment answers unchanged.
//! Refund: CAPTURED / PARTIALLY_REFUNDED -> PARTIALLY_REFUNDED / REFUNDED while the amount
//! fits what is left. Amounts in another currency than the authorization's are
//! FAILED_PRECONDITION.
//!
//! The counter `holdfast_payments_money_movements_total{kind, outcome}` counts money calls
//! (see [`metrics`]).

pub mod authz;
pub mod db;
pub mod error;
pub mod metrics;
pub mod service;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use holdfast_platform::config::parse_duration;
use holdfast_platform::{Context, Needs, Service, ServiceParts};

pub use db::PspDatabase;
pub use error::PaymentsError;
use holdfast_proto::payments::v1::payments_service_server::PaymentsServiceServer;
pub use service::Payments;

/// How the simulated PSP behaves.
#[derive(Debug, Clone)]
pub struct PaymentsOptions {
    /// The SQLite file to keep the books in, created if missing; `None` keeps them in
    /// memory (gone when the service is dropped).
    pub database: Option<PathBuf>,
    /// Added before answering every Authorize, Capture, Void and Refund (while the
    /// idempotency key is held), like a real provider's round trip. Default zero.
    pub latency: Duration,
    /// How long `pm_card_timeout` stalls when the request carries no `grpc-timeout`
    /// header. Default 30 s. (The server stack's own request timeout, 10 s by default,
    /// ends any longer stall first, also as DEADLINE_EXCEEDED.)
    pub timeout_hold: Duration,
}

impl Default for PaymentsOptions {
    fn default() -> Self {
        Self {
            database: None,
            latency: Duration::ZERO,
            timeout_hold: Duration::from_secs(30),
        }
    }
}

/// Opens the database (migrating its schema) and builds the gRPC service, ready for
/// `GrpcServer::add_service("payments", ...)`.
pub async fn start(options: PaymentsOptions) -> Result<PaymentsServiceServer<Payments>, PaymentsError> {
    let db = PspDatabase::open(options.database).await?;
    Ok(PaymentsServiceServer::new(Payments::new(
        db,
        options.latency,
        options.timeout_hold,
    )))
}

/// The simulated PSP's section of the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentsArgs {
    /// Simulated PSP: latency added to every money movement (Authorize, Capture, Void, Refund).
    #[arg(long = "payments-latency", env = "HOLDFAST_PAYMENTS_LATENCY", default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,
}

impl<S: Send + Sync + 'static> Service<S> for PaymentsArgs {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Keeps its books in `payments.db` under the data directory.
    fn build<'a>(&'a self, ctx: &'a Context<S>) -> BoxFuture<'a, anyhow::Result<ServiceParts>> {
        Box::pin(async move {
            std::fs::create_dir_all(&ctx.data_dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", ctx.data_dir.display()))?;
            let service = start(PaymentsOptions {
                database: Some(ctx.data_dir.join("payments.db")),
                latency: self.latency,
                ..PaymentsOptions::default()
            })
            .await?;
            Ok(ServiceParts::new("payments", service).authz(&authz::TABLE))
        })
    }
}
