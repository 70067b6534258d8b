//! From an order or shipment event to sent notifications, exactly once per (event, channel).
//!
//! 1. Render one notification per channel and **record the intent** (`pending`, or
//!    `suppressed` if the customer opted out) under the unique key (event id, channel).
//!    A redelivered event records nothing new.
//! 2. **Send** every still-pending notification of the event, retrying transient failures
//!    with exponential backoff; a permanent failure (or running out of attempts) marks it
//!    `dead_lettered`.
//! 3. **Mark it sent**: once every notification of the event was sent (or dead-lettered),
//!    the notifier makes the sends durable (one `fdatasync` of the outbox file for all of
//!    them) and one transaction marks them all sent.
//!
//! Per event that is three store calls (who it is for, record and read back what is
//! pending, mark sent) and one sync, whatever the number of channels.
//!
//! A crash between 2 and 3 leaves the notification pending: on restart
//! [`Engine::recover`] sends every pending one again, with the same notification id. The
//! file notifier drops an id it already wrote, so the outbox file holds it once; an SMTP
//! sink sees the same `Message-ID` twice and can drop the repeat (SMTP itself cannot be
//! exactly-once: the relay may accept a message whose acceptance we never learn of).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use holdfast_platform::events::{Event, HandleError};
use holdfast_proto::common::v1::Money;
use holdfast_proto::events::v1::{OrderEvent, ShipmentEvent, order_event, shipment_event};
use prometheus::{IntCounterVec, register_int_counter_vec};
use prost::Message;

use crate::model::{Channel, Notification, Status, notification_id};
use crate::notifier::{Notifier, SendError};
use crate::store::{Audience, NotificationStore, StoreError};
use crate::templates::{Kind, render, template};

/// Topic of order lifecycle events.
pub const ORDERS_TOPIC: &str = "holdfast.orders.v1";
/// Topic of shipment events.
pub const SHIPMENTS_TOPIC: &str = "holdfast.shipments.v1";

#[allow(clippy::expect_used)] // registering a static metric can only fail on a duplicate name.
static OUTCOMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "holdfast_notifications_total",
        "Notifications by channel and outcome (sent, dead_lettered, suppressed, retried).",
        &["channel", "outcome"]
    )
    .expect("metric registers once")
});

/// What to do right after a successful send, before recording it (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashHook {
    /// Nothing (production).
    Off,
    /// After this many successful sends, stop: the send is not recorded and every later
    /// call fails, as if the process had died there (in-process tests).
    HaltAfter(u32),
    /// After this many successful sends, abort the process (end-to-end tests; set by
    /// `HOLDFAST_NOTIFICATIONS_ABORT_AFTER_SENDS`).
    AbortAfter(u32),
}

/// Retry and rendering knobs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most send attempts per notification before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Email recipients are `<customer id>@<email_domain>` (there is no customer profile
    /// service yet).
    pub email_domain: String,
    /// Fault injection.
    pub crash: CrashHook,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            email_domain: "customers.holdfast.invalid".into(),
            crash: CrashHook::Off,
        }
    }
}

/// Why handling stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed (retry the event).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The crash hook fired.
    #[error("halted by the crash hook")]
    Halted,
    /// The notifier could not make the event's sends durable: none is marked sent (retry
    /// the event; the resend is dropped as a repeat).
    #[error("notifier: {0}")]
    Unsynced(SendError),
}

/// Renders, records and sends.
pub struct Engine {
    store: Arc<dyn NotificationStore>,
    notifier: Arc<dyn Notifier>,
    options: EngineOptions,
    sends: AtomicU32,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn money(m: Option<&Money>) -> String {
    match m {
        Some(m) => format!(
            "{}.{:02} {}",
            m.amount_minor / 100,
            (m.amount_minor % 100).abs(),
            m.currency
        ),
        None => "0.00".into(),
    }
}

/// What an event says, for templates.
struct Told {
    kind: Kind,
    order_id: String,
    customer_id: Option<String>,
    values: BTreeMap<&'static str, String>,
}

impl Engine {
    /// An engine over `store`, sending through `notifier`.
    pub fn new(
        store: Arc<dyn NotificationStore>,
        notifier: Arc<dyn Notifier>,
        options: EngineOptions,
    ) -> Self {
        Self {
            store,
            notifier,
            options,
            sends: AtomicU32::new(0),
        }
    }

    /// The store (for the gRPC service).
    pub fn store(&self) -> &Arc<dyn NotificationStore> {
        &self.store
    }

    fn halted(&self) -> bool {
        matches!(self.options.crash, CrashHook::HaltAfter(n) if self.sends.load(Ordering::SeqCst) >= n)
    }

    fn told(event: &Event) -> Result<Option<Told>, HandleError> {
        let poison = |e: prost::DecodeError| HandleError::Poison(format!("{}: {e}", event.event_type));
        let mut values = BTreeMap::new();
        let told = if event.topic == ORDERS_TOPIC {
            match OrderEvent::decode(event.payload.as_slice())
                .map_err(poison)?
                .event
            {
                Some(order_event::Event::Confirmed(e)) => {
                    values.insert("total", money(e.total.as_ref()));
                    Told {
                        kind: Kind::Placed,
                        order_id: e.order_id,
                        customer_id: Some(e.customer_id),
                        values,
                    }
                }
                Some(order_event::Event::Cancelled(e)) => {
                    values.insert(
                        "reason",
                        if e.reason.is_empty() {
                            "at your request".into()
                        } else {
                            e.reason
                        },
                    );
                    Told {
                        kind: Kind::Cancelled,
                        order_id: e.order_id,
                        customer_id: Some(e.customer_id),
                        values,
                    }
                }
                Some(order_event::Event::ReturnReceived(e)) => {
                    values.insert("return_id", e.return_id);
                    values.insert(
                        "refund_note",
                        if e.inspection_passed {
                            "It passed inspection: your refund is on its way.".into()
                        } else {
                            "It did not pass inspection; we will contact you about a refund.".into()
                        },
                    );
                    Told {
                        kind: Kind::ReturnReceived,
                        order_id: e.order_id,
                        customer_id: None,
                        values,
                    }
                }
                None => return Ok(None),
            }
        } else if event.topic == SHIPMENTS_TOPIC {
            match ShipmentEvent::decode(event.payload.as_slice())
                .map_err(poison)?
                .event
            {
                Some(shipment_event::Event::Shipped(e)) => {
                    values.insert("carrier", e.carrier);
                    values.insert("tracking_number", e.tracking_number);
                    Told {
                        kind: Kind::Shipped,
                        order_id: e.order_id,
                        customer_id: None,
                        values,
                    }
                }
                Some(shipment_event::Event::Delivered(e)) => Told {
                    kind: Kind::Delivered,
                    order_id: e.order_id,
                    customer_id: None,
                    values,
                },
                _ => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(told))
    }

    /// Handles one event (see the module docs).
    pub async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        if self.halted() {
            return Err(HandleError::Retry("halted by the crash hook".into()));
        }
        let Some(mut told) = Self::told(event)? else {
            return Ok(());
        };
        if event.id.is_empty() || told.order_id.is_empty() {
            return Err(HandleError::Poison(format!(
                "{} without an event or order id",
                event.event_type
            )));
        }
        let retry = |e: StoreError| HandleError::Retry(e.to_string());
        let customer_id = told.customer_id.take().filter(|c| !c.is_empty());
        let Some(Audience {
            customer_id,
            opted_out,
        }) = self
            .store
            .audience(&told.order_id, customer_id.as_deref())
            .await
            .map_err(retry)?
        else {
            tracing::warn!(order_id = %told.order_id, event_type = %event.event_type,
                "no notification: the order's customer is unknown (its order.confirmed was never seen)");
            return Ok(());
        };
        told.values.insert("order_id", told.order_id.clone());
        let mut intents = Vec::new();
        for channel in Channel::ALL {
            let (subject, body) = template(told.kind, channel);
            let rendered = render(subject, &told.values).and_then(|s| Ok((s, render(body, &told.values)?)));
            let (subject, body, status, last_error) = match rendered {
                Ok((subject, body)) if opted_out.contains(&channel) => {
                    (subject, body, Status::Suppressed, String::new())
                }
                Ok((subject, body)) => (subject, body, Status::Pending, String::new()),
                Err(error) => (String::new(), String::new(), Status::DeadLettered, error),
            };
            if status != Status::Pending {
                OUTCOMES
                    .with_label_values(&[channel.as_str(), status.as_str()])
                    .inc();
            }
            intents.push(Notification {
                id: notification_id(&event.id, channel),
                customer_id: customer_id.clone(),
                order_id: told.order_id.clone(),
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                channel,
                status,
                recipient: match channel {
                    Channel::Email => format!("{customer_id}@{}", self.options.email_domain),
                    Channel::Push => format!("push:{customer_id}"),
                },
                subject,
                body,
                attempts: 0,
                last_error,
                created_at_ms: now_ms(),
                sent_at_ms: 0,
            });
        }
        let pending = self.store.record(intents).await.map_err(retry)?;
        // Every way delivery stops leaves the event's notifications pending: redeliver it.
        self.deliver(pending)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))
    }

    /// Sends pending notifications, each until it is sent or dead-lettered, then makes the
    /// sends durable and marks them sent, all in one transaction.
    pub async fn deliver(&self, pending: Vec<Notification>) -> Result<(), EngineError> {
        let mut sent = Vec::with_capacity(pending.len());
        for n in pending {
            if let Some(n) = self.send(n).await? {
                sent.push(n);
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        self.notifier.sync().await.map_err(EngineError::Unsynced)?;
        let marks = sent.iter().map(|n| (n.id.clone(), n.attempts)).collect();
        self.store.mark_sent(marks, now_ms()).await?;
        for n in &sent {
            OUTCOMES.with_label_values(&[n.channel.as_str(), "sent"]).inc();
        }
        Ok(())
    }

    /// Sends one notification, retrying transient failures: `Some` (with its attempts) once
    /// the notifier took it, not yet recorded; `None` once it is dead-lettered (recorded).
    async fn send(&self, mut n: Notification) -> Result<Option<Notification>, EngineError> {
        let mut delay = self.options.backoff;
        loop {
            if self.halted() {
                return Err(EngineError::Halted);
            }
            n.attempts += 1;
            match self.notifier.send(&n).await {
                Ok(()) => {
                    let sent = self.sends.fetch_add(1, Ordering::SeqCst) + 1;
                    match self.options.crash {
                        CrashHook::AbortAfter(k) if sent >= k => {
                            tracing::error!(id = %n.id, "crash hook: aborting between send and record");
                            std::process::abort();
                        }
                        CrashHook::HaltAfter(k) if sent >= k => return Err(EngineError::Halted),
                        _ => {}
                    }
                    return Ok(Some(n));
                }
                Err(SendError::Transient(error)) if n.attempts < self.options.max_attempts => {
                    tracing::warn!(id = %n.id, attempts = n.attempts, %error, "notification send failed; retrying");
                    OUTCOMES.with_label_values(&[n.channel.as_str(), "retried"]).inc();
                    self.store
                        .update(&n.id, Status::Pending, n.attempts, &error, 0)
                        .await?;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.options.max_backoff);
                }
                Err(SendError::Transient(error) | SendError::Permanent(error)) => {
                    tracing::error!(id = %n.id, attempts = n.attempts, %error, "notification dead-lettered");
                    OUTCOMES
                        .with_label_values(&[n.channel.as_str(), "dead_lettered"])
                        .inc();
                    self.store
                        .update(&n.id, Status::DeadLettered, n.attempts, &error, 0)
                        .await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Sends every pending notification again (after a restart); returns how many.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let pending = self.store.pending().await?;
        let count = pending.len();
        self.deliver(pending).await?;
        Ok(count)
    }
}
