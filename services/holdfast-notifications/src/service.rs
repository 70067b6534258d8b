//! `holdfast.notifications.v1.NotificationService`: read the records, set opt-outs.

use std::sync::Arc;

use holdfast_platform::auth::{self, Caller};
use holdfast_platform::status::FieldViolations;
use holdfast_proto::common::v1::PageResponse;
use holdfast_proto::notifications::v1 as pb;
use holdfast_proto::notifications::v1::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use crate::model::{Channel, Notification, Status as NotificationStatus};
use crate::store::NotificationStore;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const MAX_CUSTOMER_ID: usize = 128;

/// The gRPC service over a notification store.
#[derive(Clone)]
pub struct Notifications {
    store: Arc<dyn NotificationStore>,
}

impl Notifications {
    /// The service over `store`.
    pub fn new(store: Arc<dyn NotificationStore>) -> Self {
        Self { store }
    }
}

fn channel_to_wire(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Email => pb::Channel::Email,
        Channel::Push => pb::Channel::Push,
    }
}

fn to_wire(n: Notification) -> pb::Notification {
    pb::Notification {
        id: n.id,
        customer_id: n.customer_id,
        order_id: n.order_id,
        event_id: n.event_id,
        event_type: n.event_type,
        channel: channel_to_wire(n.channel) as i32,
        status: match n.status {
            NotificationStatus::Pending => pb::NotificationStatus::Pending,
            NotificationStatus::Sent => pb::NotificationStatus::Sent,
            NotificationStatus::DeadLettered => pb::NotificationStatus::DeadLettered,
            NotificationStatus::Suppressed => pb::NotificationStatus::Suppressed,
        } as i32,
        recipient: n.recipient,
        subject: n.subject,
        body: n.body,
        attempts: n.attempts,
        last_error: n.last_error,
        created_at_unix_ms: n.created_at_ms,
        sent_at_unix_ms: n.sent_at_ms,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Page token: the customer, then the last row's (created_at, id), so a token only
/// resumes the listing it came from.
fn encode_token(customer_id: &str, last: &Notification) -> String {
    hex(format!("{customer_id}\n{}\n{}", last.created_at_ms, last.id).as_bytes())
}

fn decode_token(customer_id: &str, token: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(unhex(token)?).ok()?;
    let mut parts = text.splitn(3, '\n');
    let (owner, at, id) = (parts.next()?, parts.next()?, parts.next()?);
    (owner == customer_id).then_some(())?;
    Some((at.parse().ok()?, id.to_string()))
}

fn customer(violations: &mut FieldViolations, id: &str) {
    if id.is_empty() || id.len() > MAX_CUSTOMER_ID || id.chars().any(char::is_control) {
        violations.add(
            "customer_id",
            format!("must be 1..{MAX_CUSTOMER_ID} bytes without control characters"),
        );
    }
}

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let (caller, request) = auth::split(request);
        Caller::check_customer(caller.as_ref(), &request.customer_id)?;
        let page = request.page.unwrap_or_default();
        let mut v = FieldViolations::new();
        customer(&mut v, &request.customer_id);
        if page.page_size > MAX_PAGE {
            v.add("page.page_size", format!("must be at most {MAX_PAGE}"));
        }
        let after = if page.page_token.is_empty() {
            None
        } else {
            let decoded = decode_token(&request.customer_id, &page.page_token);
            if decoded.is_none() {
                v.add(
                    "page.page_token",
                    "not issued by ListNotifications for this customer",
                );
            }
            decoded
        };
        v.into_result()?;
        let limit = if page.page_size == 0 {
            DEFAULT_PAGE
        } else {
            page.page_size
        } as usize;
        let mut rows = self
            .store
            .list(&request.customer_id, after, limit + 1)
            .await
            .map_err(unavailable)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(&request.customer_id, last),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(to_wire).collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn set_preference(
        &self,
        request: Request<pb::SetPreferenceRequest>,
    ) -> Result<Response<pb::SetPreferenceResponse>, Status> {
        let (caller, request) = auth::split(request);
        Caller::check_customer(caller.as_ref(), &request.customer_id)?;
        let mut v = FieldViolations::new();
        customer(&mut v, &request.customer_id);
        let channel = match pb::Channel::try_from(request.channel) {
            Ok(pb::Channel::Email) => Some(Channel::Email),
            Ok(pb::Channel::Push) => Some(Channel::Push),
            _ => {
                v.add("channel", "must be CHANNEL_EMAIL or CHANNEL_PUSH");
                None
            }
        };
        v.into_result()?;
        let Some(channel) = channel else {
            return Err(Status::invalid_argument("channel"));
        };
        let opted = self
            .store
            .set_opt_out(&request.customer_id, channel, request.opted_out)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(pb::SetPreferenceResponse {
            opted_out: opted.into_iter().map(|c| channel_to_wire(c) as i32).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_resume_only_their_customer() {
        let last = Notification {
            id: "e:email".into(),
            customer_id: "c".into(),
            order_id: "o".into(),
            event_id: "e".into(),
            event_type: "order.confirmed".into(),
            channel: Channel::Email,
            status: NotificationStatus::Sent,
            recipient: String::new(),
            subject: String::new(),
            body: String::new(),
            attempts: 1,
            last_error: String::new(),
            created_at_ms: 42,
            sent_at_ms: 43,
        };
        let token = encode_token("c", &last);
        assert_eq!(decode_token("c", &token), Some((42, "e:email".into())));
        assert_eq!(decode_token("d", &token), None);
        assert_eq!(decode_token("c", "zz"), None);
        assert_eq!(decode_token("c", "abc"), None);
    }
}
