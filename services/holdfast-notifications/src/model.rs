//! Notifications as recorded: one per (event, channel).

use serde::{Deserialize, Serialize};

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Email.
    Email,
    /// Push.
    Push,
}

impl Channel {
    /// Every channel, in the order they are sent.
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Push];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Push => "push",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "email" => Some(Channel::Email),
            "push" => Some(Channel::Push),
            _ => None,
        }
    }
}

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Recorded, not confirmed sent.
    Pending,
    /// The notifier accepted it.
    Sent,
    /// Failed permanently or ran out of retries.
    DeadLettered,
    /// The customer opted out of the channel.
    Suppressed,
}

impl Status {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::DeadLettered => "dead_lettered",
            Status::Suppressed => "suppressed",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Status::Pending),
            "sent" => Some(Status::Sent),
            "dead_lettered" => Some(Status::DeadLettered),
            "suppressed" => Some(Status::Suppressed),
            _ => None,
        }
    }
}

/// One message to one customer on one channel about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Derived from (event id, channel): the same on every resend.
    pub id: String,
    /// The customer.
    pub customer_id: String,
    /// The order.
    pub order_id: String,
    /// The event.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The channel.
    pub channel: Channel,
    /// Its state.
    pub status: Status,
    /// Email address or push address.
    pub recipient: String,
    /// Subject or push title.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Send attempts.
    pub attempts: u32,
    /// Last send error.
    pub last_error: String,
    /// Recorded at (Unix ms).
    pub created_at_ms: i64,
    /// Sent at (Unix ms), 0 if not sent.
    pub sent_at_ms: i64,
}

/// The id of the notification of `event_id` on `channel`: stable, so resends share it.
pub fn notification_id(event_id: &str, channel: Channel) -> String {
    format!("{event_id}:{}", channel.as_str())
}
