//! Did every state change reach its consumer, once? The events `chaos` can check end to end
//! through the services' APIs are the order events the notifications service turns into one
//! record per (event, channel):
//!
//! | state change (in the order's `status_history`) | event | expected downstream |
//! |---|---|---|
//! | PAID -> FULFILLING (dispatch) | `order.confirmed` | one notification per channel (email, push) |
//! | -> CANCELLED | `order.cancelled` | one notification per channel |
//!
//! **Lost**: an expected (order, event type, channel) with no notification, or one that was
//! dead-lettered or still pending when the deadline passed. **Applied twice**: more than one
//! notification for the same (order, event type, channel) — the change was published twice
//! under different event ids, or the consumer recorded one event twice. **Phantom**: a
//! notification for a change the order never made.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use holdfast_proto::common::v1::PageRequest;
use holdfast_proto::notifications::v1::{
    Channel, ListNotificationsRequest, Notification, NotificationStatus,
};
use holdfast_proto::orders::v1::{Order, OrderStatus};
use tokio::time::Instant;

use crate::audit::{orders_of, read_back};
use crate::mesh::Mesh;
use crate::report::Check;
use crate::scenario::{for_each_concurrent, sample_list};

/// The event types checked.
pub const CONFIRMED: &str = "order.confirmed";
/// See [`CONFIRMED`].
pub const CANCELLED: &str = "order.cancelled";
/// The topic they are published on.
pub const ORDERS_TOPIC: &str = "holdfast.orders.v1";
const CHANNELS: [Channel; 2] = [Channel::Email, Channel::Push];

/// What the read-back found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EventFindings {
    /// Orders read back.
    pub orders: usize,
    /// (order, event type, channel) deliveries expected.
    pub expected: usize,
    /// Notifications read back for those orders.
    pub notifications: usize,
    /// Expected deliveries missing, dead-lettered or still pending.
    pub lost: Vec<String>,
    /// Deliveries made more than once.
    pub twice: Vec<String>,
    /// Notifications of changes no order made.
    pub phantom: Vec<String>,
}

impl EventFindings {
    /// The checks `events-lost`, `events-applied-twice`, `events-phantom`.
    pub fn checks(&self) -> Vec<Check> {
        vec![
            Check::new(
                "events-lost",
                "every order.confirmed / order.cancelled state change reached the notifications consumer on every channel",
                self.lost.is_empty(),
                if self.lost.is_empty() {
                    format!(
                        "{} deliveries expected for {} orders, all sent",
                        self.expected, self.orders
                    )
                } else {
                    format!(
                        "{} of {} expected deliveries lost: {}",
                        self.lost.len(),
                        self.expected,
                        sample_list(&self.lost, 5)
                    )
                },
            ),
            Check::new(
                "events-applied-twice",
                "no state change was delivered twice on a channel",
                self.twice.is_empty(),
                if self.twice.is_empty() {
                    format!("{} notifications, none twice", self.notifications)
                } else {
                    format!(
                        "{} applied twice: {}",
                        self.twice.len(),
                        sample_list(&self.twice, 5)
                    )
                },
            ),
            Check::new(
                "events-phantom",
                "no notification for a change the order never made",
                self.phantom.is_empty(),
                if self.phantom.is_empty() {
                    "none".into()
                } else {
                    format!("{}: {}", self.phantom.len(), sample_list(&self.phantom, 5))
                },
            ),
        ]
    }

    fn clean(&self) -> bool {
        self.lost.is_empty() && self.twice.is_empty() && self.phantom.is_empty()
    }
}

fn entered(order: &Order, status: OrderStatus) -> bool {
    order.status == status as i32 || order.status_history.iter().any(|c| c.status == status as i32)
}

/// The event types `order`'s history says were published.
fn expected_types(order: &Order) -> Vec<&'static str> {
    let mut types = Vec::new();
    if entered(order, OrderStatus::Fulfilling) {
        types.push(CONFIRMED);
    }
    if entered(order, OrderStatus::Cancelled) {
        types.push(CANCELLED);
    }
    types
}

/// Compares the orders' histories with the notifications read back. Pure, unit-tested.
pub(crate) fn compare(orders: &[Order], notifications: &[Notification]) -> EventFindings {
    let mut findings = EventFindings {
        orders: orders.len(),
        notifications: notifications.len(),
        ..Default::default()
    };
    // (order, type, channel) -> the notifications.
    let mut got: BTreeMap<(&str, &str, i32), Vec<&Notification>> = BTreeMap::new();
    for n in notifications {
        got.entry((n.order_id.as_str(), n.event_type.as_str(), n.channel))
            .or_default()
            .push(n);
    }
    let mut expected: BTreeSet<(&str, &str, i32)> = BTreeSet::new();
    for order in orders {
        for event_type in expected_types(order) {
            for channel in CHANNELS {
                expected.insert((order.id.as_str(), event_type, channel as i32));
            }
        }
    }
    findings.expected = expected.len();
    for key @ (order, event_type, channel) in &expected {
        let channel_name = Channel::try_from(*channel).map_or("?", |c| c.as_str_name());
        match got.get(key).map(Vec::as_slice) {
            None | Some([]) => findings
                .lost
                .push(format!("{order} {event_type} {channel_name}: none")),
            Some(found) => {
                if !found.iter().any(|n| n.status == NotificationStatus::Sent as i32) {
                    let status =
                        NotificationStatus::try_from(found[0].status).map_or("?", |s| s.as_str_name());
                    findings
                        .lost
                        .push(format!("{order} {event_type} {channel_name}: {status}"));
                }
            }
        }
    }
    for ((order, event_type, channel), found) in &got {
        let channel_name = Channel::try_from(*channel).map_or("?", |c| c.as_str_name());
        if found.len() > 1 {
            let events: BTreeSet<&str> = found.iter().map(|n| n.event_id.as_str()).collect();
            findings.twice.push(format!(
                "{order} {event_type} {channel_name}: {} notifications of {} event ids",
                found.len(),
                events.len()
            ));
        }
        let checked = *event_type == CONFIRMED || *event_type == CANCELLED;
        if checked && !expected.contains(&(*order, *event_type, *channel)) {
            findings
                .phantom
                .push(format!("{order} {event_type} {channel_name}"));
        }
    }
    findings
}

/// Every notification of `customers`, all pages.
async fn notifications_of(mesh: &Mesh, customers: &[String]) -> anyhow::Result<Vec<Notification>> {
    let found = std::sync::Mutex::new(Vec::new());
    for_each_concurrent(customers.iter().enumerate(), 32, |(i, customer)| {
        let found = &found;
        async move {
            let client = mesh.notifications(i as u64);
            let mut token = String::new();
            loop {
                let reply = read_back(&format!("ListNotifications {customer}"), |_| {
                    let mut client = client.clone();
                    let request = ListNotificationsRequest {
                        customer_id: customer.clone(),
                        page: Some(PageRequest {
                            page_size: 500,
                            page_token: token.clone(),
                        }),
                    };
                    async move { client.list_notifications(request).await }
                })
                .await?;
                found.lock().expect("lock").extend(reply.notifications);
                token = reply.page.map(|p| p.next_page_token).unwrap_or_default();
                if token.is_empty() {
                    return Ok(());
                }
            }
        }
    })
    .await?;
    Ok(found.into_inner().expect("lock"))
}

/// Reads back the orders and notifications of `customers` and compares them, polling until
/// nothing is missing or `deadline` passes (consumers lag behind the sagas).
pub async fn check_events(
    mesh: &Mesh,
    customers: &[String],
    deadline: Instant,
) -> anyhow::Result<EventFindings> {
    loop {
        let orders: Vec<Order> = orders_of(mesh, customers)
            .await?
            .into_values()
            .flatten()
            .collect();
        let notifications = notifications_of(mesh, customers).await?;
        let findings = compare(&orders, &notifications);
        if findings.clean() || Instant::now() >= deadline {
            return Ok(findings);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::orders::v1::StatusChange;

    fn order(id: &str, history: &[OrderStatus]) -> Order {
        Order {
            id: id.into(),
            status: history.last().map_or(0, |s| *s as i32),
            status_history: history
                .iter()
                .map(|s| StatusChange {
                    status: *s as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn sent(order: &str, event_type: &str, event_id: &str, channel: Channel) -> Notification {
        Notification {
            id: format!("{event_id}/{}", channel as i32),
            order_id: order.into(),
            event_id: event_id.into(),
            event_type: event_type.into(),
            channel: channel as i32,
            status: NotificationStatus::Sent as i32,
            ..Default::default()
        }
    }

    fn both(order: &str, event_type: &str, event_id: &str) -> Vec<Notification> {
        CHANNELS
            .iter()
            .map(|c| sent(order, event_type, event_id, *c))
            .collect()
    }

    #[test]
    fn every_change_delivered_once_is_clean() {
        use OrderStatus::*;
        let orders = [
            order("o1", &[Placed, Paid, Fulfilling]),
            order("o2", &[Placed, Paid, Fulfilling, Cancelled]),
            order("o3", &[Placed, ManualReview]),
        ];
        let mut notes = both("o1", CONFIRMED, "e1");
        notes.extend(both("o2", CONFIRMED, "e2"));
        notes.extend(both("o2", CANCELLED, "e3"));
        let findings = compare(&orders, &notes);
        assert!(findings.clean(), "{findings:?}");
        assert_eq!(findings.expected, 6);
        assert!(findings.checks().iter().all(|c| !c.failed()));
    }

    #[test]
    fn lost_twice_and_phantom_deliveries_are_named() {
        use OrderStatus::*;
        let orders = [
            order("o1", &[Placed, Paid, Fulfilling]),
            order("o2", &[Placed, Paid, Fulfilling, Cancelled]),
            order("o3", &[Placed, Paid]),
        ];
        let mut notes = both("o1", CONFIRMED, "e1");
        // o1 confirmed again under another event id: published twice.
        notes.push(sent("o1", CONFIRMED, "e1-again", Channel::Email));
        // o2: confirmed only by email, the cancel still pending on push.
        notes.push(sent("o2", CONFIRMED, "e2", Channel::Email));
        notes.extend(both("o2", CANCELLED, "e3"));
        notes[5].status = NotificationStatus::Pending as i32;
        // o3 never dispatched, yet confirmed.
        notes.push(sent("o3", CONFIRMED, "e4", Channel::Push));
        let findings = compare(&orders, &notes);
        assert_eq!(findings.lost.len(), 2, "{:?}", findings.lost);
        assert_eq!(findings.twice.len(), 1, "{:?}", findings.twice);
        assert_eq!(findings.phantom.len(), 1, "{:?}", findings.phantom);
        let failed: Vec<&str> = findings
            .checks()
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["events-lost", "events-applied-twice", "events-phantom"]);
    }
}
