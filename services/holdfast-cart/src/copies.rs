//! The catalog products this process has read through the view scripts, kept while the
//! catalog's epoch (`cat:epoch`, replaced by every invalidation on a standalone Redis) is the
//! one they were read under. A view names the epoch it keeps; when that is still the
//! catalog's, the script reads no product and the copies answer (docs/cart.md, "Products kept
//! between views"). A copy is never used under another epoch, nor after [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::scripts::{Cached, Seen};
use crate::view::Priced;

/// The longest a copy is used: a product changed in the store without the catalog's
/// invalidation (by hand) shows in carts within this, after the catalog's own cache.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Most products kept: a catalog larger than this is read as before for the SKUs beyond it.
const MAX_PRODUCTS: usize = 100_000;

/// Products by SKU, under one catalog epoch.
#[derive(Debug, Default)]
pub(crate) struct Copies {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The epoch the copies were read under; `None`: none kept.
    epoch: Option<String>,
    /// The copies, with when each was read.
    products: HashMap<String, (Priced, Instant)>,
}

impl State {
    fn put(&mut self, sku: &str, product: &Priced, at: Instant) {
        if self.products.len() < MAX_PRODUCTS || self.products.contains_key(sku) {
            self.products.insert(sku.to_string(), (product.clone(), at));
        }
    }
}

impl Copies {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch to name in the next view script: '' when none is kept.
    pub(crate) fn epoch(&self) -> String {
        self.state().epoch.clone().unwrap_or_default()
    }

    /// Settles what a view script answered under the catalog's epoch `now`: products it read
    /// are kept, and every [`Cached::Current`] (answered only when the epoch named was `now`)
    /// becomes the copy, or [`Cached::Miss`] when there is no fresh one: the catalog is then
    /// asked, and its answer kept ([`Self::keep`]).
    pub(crate) fn settle(&self, now: Option<&str>, seen: &mut [Seen]) {
        let at = Instant::now();
        let mut state = self.state();
        if state.epoch.as_deref() != now {
            // The catalog changed (or Redis lost its epoch): nothing kept is current.
            state.epoch = now.map(str::to_string);
            state.products.clear();
        }
        for seen in seen.iter_mut() {
            match &seen.product {
                Cached::Read(product) if now.is_some() => state.put(&seen.sku, product, at),
                Cached::Current => {
                    seen.product = match state.products.get(&seen.sku) {
                        Some((product, read)) if at.duration_since(*read) < MAX_AGE => {
                            Cached::Read(product.clone())
                        }
                        _ => Cached::Miss,
                    };
                }
                Cached::Read(_) | Cached::Miss => {}
            }
        }
    }

    /// Keeps `products`, which the catalog answered after a view script ran under `epoch`,
    /// if that is still the epoch kept: a product the script could not read, or had no copy
    /// of, is then not asked again while the epoch stands. What the catalog answers after the
    /// script ran is at least as new as what the script would have read.
    pub(crate) fn keep(&self, epoch: Option<&str>, products: &HashMap<String, Priced>) {
        let Some(epoch) = epoch else { return };
        let at = Instant::now();
        let mut state = self.state();
        if state.epoch.as_deref() == Some(epoch) {
            for (sku, product) in products {
                state.put(sku, product, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::common::v1::Money;

    fn priced(price: i64) -> Priced {
        Priced {
            title: "Mug".into(),
            price: Some(Money {
                amount_minor: price,
                currency: "EUR".into(),
            }),
            active: true,
        }
    }

    fn seen(sku: &str, product: Cached) -> Seen {
        Seen {
            sku: sku.into(),
            product,
            available: Some(1),
        }
    }

    fn current(copies: &Copies, epoch: &str, sku: &str) -> Cached {
        let mut seen = [seen(sku, Cached::Current)];
        copies.settle(Some(epoch), &mut seen);
        seen[0].product.clone()
    }

    #[test]
    fn a_copy_answers_only_under_the_epoch_it_was_read_under() {
        let copies = Copies::default();
        assert_eq!(copies.epoch(), "", "nothing kept: name no epoch");
        copies.settle(Some("e1"), &mut [seen("MUG", Cached::Read(priced(100)))]);
        assert_eq!(copies.epoch(), "e1");
        assert_eq!(current(&copies, "e1", "MUG"), Cached::Read(priced(100)));
        assert_eq!(
            current(&copies, "e1", "TEA"),
            Cached::Miss,
            "never read: ask the catalog"
        );

        // The catalog invalidated something: the script read the product again.
        copies.settle(Some("e2"), &mut [seen("MUG", Cached::Read(priced(120)))]);
        assert_eq!(current(&copies, "e2", "MUG"), Cached::Read(priced(120)));
    }

    #[test]
    fn what_the_catalog_answers_is_kept_only_under_the_epoch_kept() {
        let copies = Copies::default();
        copies.settle(Some("e1"), &mut [seen("MUG", Cached::Miss)]);
        let asked: HashMap<String, Priced> = [("MUG".to_string(), priced(100))].into();
        copies.keep(Some("e0"), &asked);
        assert_eq!(
            current(&copies, "e1", "MUG"),
            Cached::Miss,
            "asked under another epoch"
        );
        copies.keep(Some("e1"), &asked);
        assert_eq!(current(&copies, "e1", "MUG"), Cached::Read(priced(100)));
    }

    #[test]
    fn without_an_epoch_nothing_is_kept() {
        let copies = Copies::default();
        copies.settle(Some("e1"), &mut [seen("MUG", Cached::Read(priced(100)))]);
        // Redis lost the epoch (a restart without persistence, a flush).
        copies.settle(None, &mut [seen("MUG", Cached::Read(priced(130)))]);
        assert_eq!(copies.epoch(), "");
        assert_eq!(
            current(&copies, "e1", "MUG"),
            Cached::Miss,
            "the old copy is gone"
        );
    }
}
