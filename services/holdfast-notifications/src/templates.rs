//! Message templates: one per event kind and channel, filled from the event.
//!
//! Templates are plain strings with `{name}` placeholders; [`render`] fills them from a
//! map and refuses a template that names a value the event does not have (a bug, so the
//! notification is dead-lettered rather than sent with a hole in it).

use std::collections::BTreeMap;

use crate::model::Channel;

/// What happened to the order, as customers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `order.confirmed`: placed and paid (the saga confirms only after the payment).
    Placed,
    /// `shipment.shipped`: a parcel left with a carrier (with tracking).
    Shipped,
    /// `shipment.delivered`.
    Delivered,
    /// `order.cancelled`: cancelled, and refunded if it was paid.
    Cancelled,
    /// `order.return_received`: the return arrived; refunded if it passed inspection.
    ReturnReceived,
}

/// (subject, body) templates for `kind` on `channel`.
pub fn template(kind: Kind, channel: Channel) -> (&'static str, &'static str) {
    match (kind, channel) {
        (Kind::Placed, Channel::Email) => (
            "Your order {order_id} is confirmed",
            "Thank you for your order {order_id}. We received your payment of {total} and will let you know when it ships.",
        ),
        (Kind::Placed, Channel::Push) => ("Order confirmed", "Order {order_id} is confirmed: {total} paid."),
        (Kind::Shipped, Channel::Email) => (
            "Your order {order_id} has shipped",
            "A parcel of order {order_id} is on its way with {carrier}. Tracking number: {tracking_number}.",
        ),
        (Kind::Shipped, Channel::Push) => (
            "On its way",
            "Order {order_id} shipped with {carrier}, tracking {tracking_number}.",
        ),
        (Kind::Delivered, Channel::Email) => (
            "Your order {order_id} was delivered",
            "A parcel of order {order_id} was delivered. Enjoy!",
        ),
        (Kind::Delivered, Channel::Push) => ("Delivered", "A parcel of order {order_id} was delivered."),
        (Kind::Cancelled, Channel::Email) => (
            "Your order {order_id} was cancelled",
            "Order {order_id} was cancelled ({reason}). Any payment taken is refunded in full.",
        ),
        (Kind::Cancelled, Channel::Push) => (
            "Order cancelled",
            "Order {order_id} was cancelled; any payment is refunded.",
        ),
        (Kind::ReturnReceived, Channel::Email) => (
            "We received your return for order {order_id}",
            "Your return {return_id} for order {order_id} arrived. {refund_note}",
        ),
        (Kind::ReturnReceived, Channel::Push) => (
            "Return received",
            "Return {return_id} for order {order_id} arrived. {refund_note}",
        ),
    }
}

/// Fills `{name}` placeholders from `values`; `Err` names a missing value or an unclosed brace.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {template:?}"))?;
        let name = &after[..close];
        let value = values
            .get(name)
            .ok_or_else(|| format!("template needs {{{name}}}, which the event does not carry"))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_template_and_refuses_missing_values() {
        let values: BTreeMap<&str, String> = [
            "order_id",
            "total",
            "carrier",
            "tracking_number",
            "reason",
            "return_id",
            "refund_note",
        ]
        .into_iter()
        .map(|k| (k, format!("<{k}>")))
        .collect();
        for kind in [
            Kind::Placed,
            Kind::Shipped,
            Kind::Delivered,
            Kind::Cancelled,
            Kind::ReturnReceived,
        ] {
            for channel in Channel::ALL {
                let (subject, body) = template(kind, channel);
                let body = render(body, &values).unwrap();
                assert!(render(subject, &values).is_ok());
                assert!(body.contains("<order_id>"), "{kind:?} {channel:?}: {body}");
                assert!(!body.contains('{'));
            }
        }
        assert_eq!(
            render("Shipped with {carrier}", &values).unwrap(),
            "Shipped with <carrier>"
        );
        assert!(render("{nope}", &values).is_err());
        assert!(render("{open", &values).is_err());
    }
}
