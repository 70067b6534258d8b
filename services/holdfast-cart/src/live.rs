//! The live cart in Redis: whose it is, its key, and its hash decoded (layout in
//! `docs/cart.md`).

use holdfast_proto::cart::v1::{CartOwner, cart_owner};
use holdfast_store::{StoredCart, StoredCartLine};

/// Whose cart: a signed-in customer or an anonymous session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A signed-in customer's id.
    Customer(String),
    /// An anonymous session's id.
    Session(String),
}

impl Owner {
    /// `c:<customer_id>` or `s:<session_id>`: the owner in Redis keys and in the store, so a
    /// customer and a session with the same id never share a cart.
    pub fn key(&self) -> String {
        match self {
            Self::Customer(id) => format!("c:{id}"),
            Self::Session(id) => format!("s:{id}"),
        }
    }

    /// The live cart's Redis key.
    pub fn redis_key(&self) -> String {
        redis_key(&self.key())
    }

    /// The owner as the API names it.
    pub fn to_wire(&self) -> CartOwner {
        CartOwner {
            owner: Some(match self {
                Self::Customer(id) => cart_owner::Owner::CustomerId(id.clone()),
                Self::Session(id) => cart_owner::Owner::SessionId(id.clone()),
            }),
        }
    }
}

/// `cart:{<owner key>}`: one hash tag per cart, so every script touches one cluster slot.
pub fn redis_key(owner_key: &str) -> String {
    format!("cart:{{{owner_key}}}")
}

/// One line of a live cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLine {
    /// The SKU.
    pub sku: String,
    /// Units, >= 1.
    pub quantity: i64,
    /// Price snapshot taken when the line was first added, minor units of `currency`.
    pub unit_price_minor: i64,
    /// ISO-4217 code of the snapshot.
    pub currency: String,
    /// When the line was first added, Unix ms (Redis clock).
    pub added_at_ms: i64,
}

/// A cart as it is in Redis. The default is the empty cart of an owner who never had one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveCart {
    /// Incremented by every change; never goes back, not even when the cart is emptied.
    pub version: u64,
    /// When the cart last changed, Unix ms (Redis clock); 0 if never.
    pub updated_at_ms: i64,
    /// Lines in the order they were first added (ties by SKU).
    pub lines: Vec<LiveLine>,
}

impl LiveCart {
    /// Decodes an HGETALL reply; `None` when the key does not exist (no `_v`).
    pub fn from_hash<F: AsRef<str>, V: AsRef<str>>(
        fields: impl IntoIterator<Item = (F, V)>,
    ) -> Result<Option<Self>, String> {
        let mut version = None;
        let mut updated_at_ms = 0;
        let mut lines = Vec::new();
        for (field, value) in fields {
            let (field, value) = (field.as_ref(), value.as_ref());
            if field == "_v" {
                version = Some(value.parse::<u64>().map_err(|_| format!("_v is {value:?}"))?);
            } else if field == "_u" {
                updated_at_ms = value.parse::<i64>().map_err(|_| format!("_u is {value:?}"))?;
            } else if let Some(sku) = field.strip_prefix("l:") {
                lines.push(parse_line(sku, value).ok_or_else(|| format!("{field} is {value:?}"))?);
            }
            // `_m:<session>` merge markers matter to cart_merge.lua only.
        }
        let Some(version) = version else {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err("lines without a version".into())
            };
        };
        lines.sort_by(|a, b| (a.added_at_ms, &a.sku).cmp(&(b.added_at_ms, &b.sku)));
        Ok(Some(Self {
            version,
            updated_at_ms,
            lines,
        }))
    }

    /// The durable copy of this cart for `owner_key`.
    pub fn to_stored(&self, owner_key: &str) -> StoredCart {
        StoredCart {
            owner: owner_key.to_string(),
            lines: self
                .lines
                .iter()
                .map(|line| StoredCartLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_minor: line.unit_price_minor,
                    currency: line.currency.clone(),
                    added_at_ms: line.added_at_ms,
                })
                .collect(),
            version: self.version,
            updated_at_ms: self.updated_at_ms,
        }
    }

    /// The SKUs of the lines, in line order.
    pub fn skus(&self) -> Vec<String> {
        self.lines.iter().map(|line| line.sku.clone()).collect()
    }
}

/// `qty|unit_price_minor|currency|added_at_ms`.
fn parse_line(sku: &str, value: &str) -> Option<LiveLine> {
    let mut parts = value.split('|');
    let quantity = parts.next()?.parse().ok()?;
    let unit_price_minor = parts.next()?.parse().ok()?;
    let currency = parts.next()?.to_string();
    let added_at_ms = parts.next()?.parse().ok()?;
    if parts.next().is_some() || sku.is_empty() {
        return None;
    }
    Some(LiveLine {
        sku: sku.to_string(),
        quantity,
        unit_price_minor,
        currency,
        added_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn owner_keys_keep_customers_and_sessions_apart() {
        let customer = Owner::Customer("42".into());
        let session = Owner::Session("42".into());
        assert_eq!(customer.redis_key(), "cart:{c:42}");
        assert_eq!(session.redis_key(), "cart:{s:42}");
        assert_ne!(customer.key(), session.key());
    }

    #[test]
    fn from_hash_orders_lines_by_first_add_and_skips_markers() {
        let cart = LiveCart::from_hash(hash(&[
            ("_v", "7"),
            ("_u", "1700000000500"),
            ("l:TEA", "1|450|EUR|1700000000300"),
            ("_m:sess-1", "3"),
            ("l:MUG", "2|1299|EUR|1700000000100"),
            ("l:a:b|c", "1|5|USD|1700000000300"),
        ]))
        .expect("decodes")
        .expect("exists");
        assert_eq!((cart.version, cart.updated_at_ms), (7, 1_700_000_000_500));
        assert_eq!(cart.skus(), ["MUG", "TEA", "a:b|c"]);
        assert_eq!(
            cart.lines[0],
            LiveLine {
                sku: "MUG".into(),
                quantity: 2,
                unit_price_minor: 1299,
                currency: "EUR".into(),
                added_at_ms: 1_700_000_000_100,
            }
        );
        let stored = cart.to_stored("c:42");
        assert_eq!(
            (stored.owner.as_str(), stored.version, stored.lines.len()),
            ("c:42", 7, 3)
        );
    }

    #[test]
    fn from_hash_is_none_for_a_missing_key_and_refuses_corrupt_lines() {
        assert_eq!(LiveCart::from_hash(Vec::<(String, String)>::new()), Ok(None));
        assert!(LiveCart::from_hash(hash(&[("_v", "1"), ("l:MUG", "2|x|EUR|1")])).is_err());
        assert!(LiveCart::from_hash(hash(&[("_v", "1"), ("l:MUG", "2|1|EUR|1|9")])).is_err());
        assert!(LiveCart::from_hash(hash(&[("l:MUG", "2|1|EUR|1")])).is_err());
        assert!(LiveCart::from_hash(hash(&[("_v", "-1")])).is_err());
    }
}
