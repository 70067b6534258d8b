//! The API's view of a cart: current prices from the catalog, out-of-stock flags from
//! inventory, and totals per currency. Pure functions over a live cart and a lookup, so
//! the handlers in `service.rs` fetch and this file renders.

use std::collections::{BTreeMap, HashMap};

use holdfast_proto::cart::v1 as pb;
use holdfast_proto::catalog::v1::Product;
use holdfast_proto::common::v1::Money;

use crate::live::{LiveCart, LiveLine, Owner};

/// What a cart shows of a catalog product: its title, price and whether it is sold. Decoded
/// straight from a `Product`'s protobuf (the catalog cache's value) with the same tags: the
/// description (up to 10,000 characters), attributes and the rest are skipped, not copied,
/// on every cart read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Priced {
    /// `Product.title`.
    #[prost(string, tag = "2")]
    pub title: String,
    /// `Product.price`.
    #[prost(message, optional, tag = "4")]
    pub price: Option<Money>,
    /// `Product.active`.
    #[prost(bool, tag = "8")]
    pub active: bool,
}

impl From<Product> for Priced {
    fn from(product: Product) -> Self {
        Self {
            title: product.title,
            price: product.price,
            active: product.active,
        }
    }
}

/// What the catalog and inventory say about a cart's SKUs right now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lookup {
    /// Catalog products by SKU; unknown SKUs are absent.
    pub(crate) products: HashMap<String, Priced>,
    /// Units available by SKU.
    pub(crate) available: HashMap<String, i64>,
}

/// The API's view of `live`: current prices, flags and totals from `lookup`, or without
/// them (snapshot prices, no flags) when there is none.
pub(crate) fn render(owner: &Owner, live: &LiveCart, lookup: Option<&Lookup>, ttl_ms: i64) -> pb::Cart {
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let lines = live
        .lines
        .iter()
        .map(|line| {
            let cart_line = render_line(line, lookup);
            if let Some(total) = &cart_line.line_total {
                let sum = totals.entry(total.currency.clone()).or_default();
                *sum = sum.saturating_add(total.amount_minor);
            }
            cart_line
        })
        .collect();
    pb::Cart {
        owner: Some(owner.to_wire()),
        lines,
        totals: totals
            .into_iter()
            .map(|(currency, amount_minor)| Money {
                amount_minor,
                currency,
            })
            .collect(),
        version: live.version,
        updated_at_unix_ms: live.updated_at_ms,
        expires_at_unix_ms: if live.lines.is_empty() {
            0
        } else {
            live.updated_at_ms.saturating_add(ttl_ms)
        },
    }
}

fn render_line(line: &LiveLine, lookup: Option<&Lookup>) -> pb::CartLine {
    let snapshot = Money {
        amount_minor: line.unit_price_minor,
        currency: line.currency.clone(),
    };
    let product = lookup.and_then(|lookup| lookup.products.get(&line.sku));
    let current = product.and_then(|product| product.price.clone());
    let out_of_stock = lookup.is_some_and(|lookup| {
        let available = lookup.available.get(&line.sku).copied().unwrap_or(0);
        // Gone from the catalog or deactivated: checkout would refuse it as surely.
        !product.is_some_and(|product| product.active) || available < line.quantity
    });
    let priced = current.as_ref().unwrap_or(&snapshot);
    pb::CartLine {
        sku: line.sku.clone(),
        quantity: line.quantity,
        line_total: Some(Money {
            amount_minor: priced.amount_minor.saturating_mul(line.quantity),
            currency: priced.currency.clone(),
        }),
        price_changed: current.as_ref().is_some_and(|current| *current != snapshot),
        current_unit_price: current,
        snapshot_unit_price: Some(snapshot),
        out_of_stock,
        title: product.map(|product| product.title.clone()).unwrap_or_default(),
        added_at_unix_ms: line.added_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64, price: i64, currency: &str) -> LiveLine {
        LiveLine {
            sku: sku.into(),
            quantity,
            unit_price_minor: price,
            currency: currency.into(),
            added_at_ms: 1,
        }
    }

    fn product(sku: &str, price: i64, currency: &str, active: bool) -> Product {
        Product {
            sku: sku.into(),
            title: format!("{sku} title"),
            price: Some(Money {
                amount_minor: price,
                currency: currency.into(),
            }),
            active,
            ..Default::default()
        }
    }

    fn cart() -> LiveCart {
        LiveCart {
            version: 4,
            updated_at_ms: 1_000,
            lines: vec![
                line("MUG", 2, 1299, "EUR"),
                line("TEA", 3, 450, "EUR"),
                line("HAT", 1, 2000, "USD"),
                line("OLD", 1, 100, "EUR"),
            ],
        }
    }

    /// The catalog cache holds whole `Product`s: the cart's slim decoding must read the same
    /// title, price and flag (the tags agree), whatever else the product carries.
    #[test]
    fn a_whole_product_decodes_as_what_the_cart_shows() {
        use prost::Message;
        let mut full = product("MUG", 1299, "EUR", true);
        full.description = "d".repeat(10_000);
        full.category = "kitchen/mugs".into();
        full.brand = "Acme".into();
        full.attributes = [("color".to_string(), "red".to_string())].into();
        full.version = 3;
        let priced = Priced::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(priced, Priced::from(full.clone()));
        assert_eq!(
            (priced.title.as_str(), priced.price, priced.active),
            ("MUG title", full.price, true)
        );
        let inactive = product("OLD", 100, "EUR", false);
        assert!(
            !Priced::decode(inactive.encode_to_vec().as_slice())
                .expect("decodes")
                .active
        );
    }

    #[test]
    fn render_reprices_flags_and_totals_per_currency() {
        let lookup = Lookup {
            products: [
                product("MUG", 1499, "EUR", true),
                product("TEA", 450, "EUR", true),
                product("HAT", 2000, "USD", true),
                product("OLD", 100, "EUR", false),
            ]
            .into_iter()
            .map(|p| (p.sku.clone(), Priced::from(p)))
            .collect(),
            available: [("MUG", 5), ("TEA", 2), ("HAT", 1), ("OLD", 9)]
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
        };
        let view = render(&Owner::Customer("a".into()), &cart(), Some(&lookup), 10);
        let flags: Vec<(&str, bool, bool)> = view
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.price_changed, l.out_of_stock))
            .collect();
        assert_eq!(
            flags,
            [
                ("MUG", true, false),
                ("TEA", false, true),
                ("HAT", false, false),
                ("OLD", false, true)
            ]
        );
        assert_eq!(
            view.lines[0].line_total.as_ref().map(|m| m.amount_minor),
            Some(2998)
        );
        let totals: Vec<(&str, i64)> = view
            .totals
            .iter()
            .map(|m| (m.currency.as_str(), m.amount_minor))
            .collect();
        assert_eq!(totals, [("EUR", 2998 + 1350 + 100), ("USD", 2000)]);
        assert_eq!((view.version, view.expires_at_unix_ms), (4, 1_010));
    }

    #[test]
    fn render_without_lookup_uses_snapshots_and_raises_no_flags() {
        let view = render(&Owner::Session("s".into()), &cart(), None, 10);
        assert!(
            view.lines
                .iter()
                .all(|l| l.current_unit_price.is_none() && !l.price_changed && !l.out_of_stock)
        );
        assert_eq!(view.totals[0].amount_minor, 2598 + 1350 + 100);
        let empty = render(&Owner::Session("s".into()), &LiveCart::default(), None, 10);
        assert_eq!(
            (empty.version, empty.expires_at_unix_ms, empty.totals.len()),
            (0, 0, 0)
        );
    }
}
