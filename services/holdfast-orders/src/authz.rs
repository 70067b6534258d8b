//! Who may call which OrderService RPC, and the ownership rules its handlers apply: a
//! customer checks out, lists, reads, cancels and returns only their own orders (the
//! request's `customer_id`, or the order's, must be the token's customer) and checks out
//! only a cart they own (their customer cart, or the session cart their token is bound
//! to); reads a checkout by key only when its order is theirs; receiving returns and marking them lost needs `admin`. Services and admins act for
//! any customer.

use holdfast_platform::auth::{AuthzTable, Caller, Role, Rule, check_cart_owner};
use holdfast_proto::orders::v1::CheckoutRequest;
use holdfast_proto::orders::v1::checkout_request::Source;
use tonic::Status;

use crate::context::{OrdersStore, StepContext};
use crate::{order, validate};

/// The table the server enforces (the ownership half is checked in the handlers).
pub static TABLE: AuthzTable = AuthzTable {
    service: "holdfast.orders.v1.OrderService",
    rows: &[
        ("Checkout", Rule::Owner),
        ("GetCheckout", Rule::Owner),
        ("GetOrder", Rule::Owner),
        ("ListOrders", Rule::Owner),
        ("CancelOrder", Rule::Owner),
        ("RequestReturn", Rule::Owner),
        ("ReceiveReturn", Rule::Admin),
        ("MarkReturnLost", Rule::Admin),
    ],
};

/// Checkout's ownership: the customer is the caller, and so is the cart's owner.
pub fn check_checkout(caller: Option<&Caller>, request: &CheckoutRequest) -> Result<(), Status> {
    Caller::check_customer(caller, &request.customer_id)?;
    match &request.source {
        Some(Source::Cart(owner)) => check_cart_owner(caller, Some(owner)),
        _ => Ok(()),
    }
}

/// OK if `caller` may act on order `order_id`: only a customer's token is checked (against
/// the order's customer), after loading the order; an id that does not validate is left
/// to the handler's INVALID_ARGUMENT.
pub async fn check_order<S: OrdersStore>(
    ctx: &StepContext<S>,
    caller: Option<&Caller>,
    order_id: &str,
) -> Result<(), Status> {
    let Some(caller) = caller.filter(|c| c.role == Role::Customer) else {
        return Ok(());
    };
    if validate::order_id(order_id).is_err() {
        return Ok(());
    }
    let (order, _) = order::load(ctx, order_id).await?;
    Caller::check_customer(Some(caller), &order.customer_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_as_intended_and_every_rpc_has_one() {
        let (anyone, admin) = ([true, true, true], [false, false, true]);
        let expected = [
            ("Checkout", anyone),
            ("GetCheckout", anyone),
            ("GetOrder", anyone),
            ("ListOrders", anyone),
            ("CancelOrder", anyone),
            ("RequestReturn", anyone),
            ("ReceiveReturn", admin),
            ("MarkReturnLost", admin),
        ];
        TABLE
            .check(&expected, holdfast_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
