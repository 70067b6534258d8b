//! Validate: the lines (from the cart or the request), re-priced from the catalog. A moved
//! price, an unknown or inactive SKU, mixed currencies or an oversized total end the
//! checkout with an answer; nothing is held yet, so nothing is undone.

use std::collections::HashMap;

use holdfast_proto::cart::v1::{GetCartRequest, cart_owner};
use holdfast_proto::catalog::v1::BatchGetProductsRequest;
use holdfast_proto::common::v1::Money;
use holdfast_proto::orders::v1::checkout_request;
use tonic::Code;

use super::state::{CheckoutState, Outcome, PricedLine, RepricedLine, Step};
use crate::context::{OrdersStore, StepContext};
use crate::error::OrdersError;
use crate::upstream::transient;

/// Validate: re-price every line from the catalog; on to reserve.
pub async fn validate<S: OrdersStore>(
    ctx: &StepContext<S>,
    state: &mut CheckoutState,
) -> Result<Step, OrdersError> {
    let request = state.request()?;
    // (sku, quantity, expected price), first-seen order, duplicates summed.
    let mut wanted: Vec<(String, i64, Option<Money>)> = Vec::new();
    let mut push = |sku: &str, quantity: i64, expected: Option<Money>| {
        if let Some(line) = wanted.iter_mut().find(|(s, _, _)| s == sku) {
            line.1 = line.1.saturating_add(quantity);
            if line.2.is_none() {
                line.2 = expected;
            }
        } else {
            wanted.push((sku.to_string(), quantity, expected));
        }
    };
    match &request.source {
        Some(checkout_request::Source::Cart(owner)) => {
            if let Some(cart_owner::Owner::CustomerId(id)) = &owner.owner
                && id != &request.customer_id
            {
                return Ok(state.refuse(Code::FailedPrecondition, "the cart belongs to another customer"));
            }
            let cart = match ctx
                .clients
                .cart
                .clone()
                .get_cart(ctx.clients.request(GetCartRequest {
                    owner: Some(owner.clone()),
                }))
                .await
            {
                Ok(response) => response.into_inner().cart.unwrap_or_default(),
                Err(status) if transient(&status) => return Err(OrdersError::upstream("cart", &status)),
                Err(status) => return Ok(state.refused_by("cart", &status, "the cart could not be read")),
            };
            if cart.lines.is_empty() {
                return Ok(state.refuse(Code::FailedPrecondition, "the cart is empty"));
            }
            state.cart_version = Some(cart.version);
            for line in &cart.lines {
                push(&line.sku, line.quantity, line.snapshot_unit_price.clone());
            }
        }
        Some(checkout_request::Source::Lines(lines)) => {
            for line in &lines.lines {
                push(&line.sku, line.quantity, line.expected_unit_price.clone());
            }
        }
        None => {
            return Ok(state.refuse(Code::InvalidArgument, "source: a cart or lines is required"));
        }
    }
    let skus: Vec<String> = wanted.iter().map(|(sku, _, _)| sku.clone()).collect();
    let products = match ctx
        .clients
        .catalog
        .clone()
        .batch_get_products(ctx.clients.request(BatchGetProductsRequest { skus }))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) if transient(&status) => return Err(OrdersError::upstream("catalog", &status)),
        Err(status) => {
            return Ok(state.refused_by("catalog", &status, "the catalog refused the lines"));
        }
    };
    if !products.missing_skus.is_empty() {
        return Ok(state.refuse(
            Code::FailedPrecondition,
            format!("unknown SKU: {}", products.missing_skus.join(", ")),
        ));
    }
    let by_sku: HashMap<&str, _> = products.products.iter().map(|p| (p.sku.as_str(), p)).collect();
    let mut lines = Vec::with_capacity(wanted.len());
    let mut repriced = Vec::new();
    let mut currency: Option<String> = None;
    let mut total: i64 = 0;
    for (sku, quantity, expected) in &wanted {
        let Some(product) = by_sku.get(sku.as_str()) else {
            return Ok(state.refuse(Code::FailedPrecondition, format!("unknown SKU: {sku}")));
        };
        if !product.active {
            return Ok(state.refuse(Code::FailedPrecondition, format!("SKU {sku} is not for sale")));
        }
        let price = product.price.clone().unwrap_or_default();
        match &currency {
            None => currency = Some(price.currency.clone()),
            Some(c) if c != &price.currency => {
                return Ok(state.refuse(
                    Code::FailedPrecondition,
                    format!(
                        "lines are priced in different currencies ({c} and {})",
                        price.currency
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(expected) = expected
            && (expected.amount_minor != price.amount_minor || expected.currency != price.currency)
        {
            repriced.push(RepricedLine {
                sku: sku.clone(),
                expected_minor: expected.amount_minor,
                expected_currency: expected.currency.clone(),
                current_minor: price.amount_minor,
                current_currency: price.currency.clone(),
            });
        }
        let Some(line_total) = price.amount_minor.checked_mul(*quantity) else {
            return Ok(state.refuse(Code::FailedPrecondition, "order total is too large"));
        };
        let Some(sum) = total.checked_add(line_total) else {
            return Ok(state.refuse(Code::FailedPrecondition, "order total is too large"));
        };
        total = sum;
        lines.push(PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_minor: price.amount_minor,
            title: product.title.clone(),
        });
    }
    if !repriced.is_empty() && !request.accept_price_changes {
        state.outcome = Some(Outcome::PriceChanged { lines: repriced });
        return Ok(Step::Finish);
    }
    state.lines = lines;
    state.currency = currency.unwrap_or_default();
    state.total_minor = total;
    Ok(Step::Reserve)
}
