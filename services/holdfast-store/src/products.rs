//! The product aggregate: what a SKU is and what it costs (the catalog's source of truth).

use std::collections::BTreeMap;
use std::future::Future;

use crate::{StoreError, cursor};

/// Largest page `list_products_by_category` returns; larger requests are served this many.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Most SKUs one `get_products` call may name.
pub const MAX_BATCH_GET: usize = 1000;

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Product {
    /// Stock-keeping unit: the product's key.
    pub sku: String,
    /// Display title.
    pub title: String,
    /// Long description.
    pub description: String,
    /// Price in minor units of `currency` (cents for USD, yen for JPY).
    pub price_minor: i64,
    /// ISO-4217 code of the price.
    pub currency: String,
    /// Category the product is listed under.
    pub category: String,
    /// Brand name.
    pub brand: String,
    /// Free-form attributes (size, colour...).
    pub attributes: BTreeMap<String, String>,
    /// Whether the product may be sold.
    pub active: bool,
    /// Set by the store: 1 on creation, +1 on every upsert.
    pub version: u64,
    /// Set by the store: when the product was first written (Unix ms).
    pub created_at_ms: i64,
    /// Set by the store: when the product was last written (Unix ms).
    pub updated_at_ms: i64,
}

/// One page of a category listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductPage {
    /// Products in ascending SKU order (byte order of the UTF-8 SKU).
    pub products: Vec<Product>,
    /// Pass this back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Durable storage of products.
///
/// Writes are optimistic: `expected_version` is
/// - `None`: write unconditionally (last writer wins; admin imports),
/// - `Some(0)`: create only; refused with `VersionConflict` if the SKU exists,
/// - `Some(n)`: update only if the stored version is `n`; `NotFound` if the SKU does not
///   exist, `VersionConflict` if it moved on.
///
/// A refused write changes nothing.
pub trait ProductStore: Send + Sync {
    /// Writes `product` and returns it as stored. `version`, `created_at_ms` and
    /// `updated_at_ms` of the argument are ignored: the store sets them.
    fn upsert_product(
        &self,
        product: Product,
        expected_version: Option<u64>,
    ) -> impl Future<Output = Result<Product, StoreError>> + Send {
        self.upsert_product_announced(product, expected_version, Vec::new())
    }

    /// [`upsert_product`](Self::upsert_product) that also appends `outbox` events announcing
    /// the change. SQLite writes them in the same transaction as the product (none if the
    /// write is refused). ScyllaDB, which has no multi-partition transactions, writes them
    /// before the product marked as announcing a write under way (not listed as pending),
    /// and rewrites them plain once the product is written: on both, an announcement is
    /// never listed before the write it announces, and a refused write announces nothing.
    /// A ScyllaDB writer that dies between its writes (or whose write timed out) leaves
    /// announcements that are listed after a grace period whether or not the product was
    /// written: the events must therefore say "re-read this SKU", never carry state a
    /// reader trusts.
    fn upsert_product_announced(
        &self,
        product: Product,
        expected_version: Option<u64>,
        outbox: Vec<crate::OutboxMessage>,
    ) -> impl Future<Output = Result<Product, StoreError>> + Send;

    /// Every product (inactive ones included) in ascending SKU order for SQLite, token order
    /// for ScyllaDB, starting after `after_sku` (`None` for the first page), at most `limit`
    /// (1..=[`MAX_PAGE_SIZE`]). An empty page means the scan is over. For rebuilding read
    /// models such as the search index.
    fn scan_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Product>, StoreError>> + Send;

    /// The product with this SKU, if any (inactive products included).
    fn get_product(&self, sku: &str) -> impl Future<Output = Result<Option<Product>, StoreError>> + Send;

    /// The products among `skus` that exist, in the order first requested; unknown SKUs are
    /// skipped and repeated ones returned once. At most [`MAX_BATCH_GET`] SKUs.
    fn get_products(&self, skus: &[String]) -> impl Future<Output = Result<Vec<Product>, StoreError>> + Send;

    /// A page of `category` in SKU order, starting after `cursor` (from the previous page's
    /// `next_cursor`; `None` for the first page). `limit` must be at least 1 and is capped at
    /// [`MAX_PAGE_SIZE`]. Inactive products are listed too: filtering is the caller's call.
    fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<ProductPage, StoreError>> + Send;
}

/// Refuses products no backend can key.
pub(crate) fn validate_product(product: &Product) -> Result<(), StoreError> {
    if product.sku.is_empty() {
        return Err(StoreError::InvalidArgument("product sku is empty".into()));
    }
    if product.category.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "product {:?} has an empty category",
            product.sku
        )));
    }
    Ok(())
}

/// Whether a write based on `expected` may replace what is stored (`current`, the stored
/// version if the SKU exists).
pub(crate) fn check_expected_version(
    sku: &str,
    expected: Option<u64>,
    current: Option<u64>,
) -> Result<(), StoreError> {
    match (expected, current) {
        (None, _) | (Some(0), None) => Ok(()),
        (Some(expected), None) => Err(StoreError::NotFound(format!(
            "product {sku:?} (expected version {expected})"
        ))),
        (Some(expected), Some(actual)) if expected == actual => Ok(()),
        (Some(expected), Some(actual)) => Err(StoreError::VersionConflict { expected, actual }),
    }
}

/// Checks a batch request and drops repeats, keeping first-request order.
pub(crate) fn distinct_skus(skus: &[String]) -> Result<Vec<&str>, StoreError> {
    if skus.len() > MAX_BATCH_GET {
        return Err(StoreError::InvalidArgument(format!(
            "{} skus requested, at most {MAX_BATCH_GET} per call",
            skus.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(skus.len());
    Ok(skus
        .iter()
        .map(String::as_str)
        .filter(|sku| seen.insert(*sku))
        .collect())
}

/// A listing request, checked: where to start and how many rows to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// Return SKUs strictly greater than this ("" on the first page: SKUs are never empty).
    pub after_sku: String,
    /// Page size, 1..=MAX_PAGE_SIZE.
    pub limit: usize,
}

impl PageRequest {
    pub(crate) fn new(category: &str, cursor: Option<&str>, limit: u32) -> Result<Self, StoreError> {
        if category.is_empty() {
            return Err(StoreError::InvalidArgument("category is empty".into()));
        }
        if limit == 0 {
            return Err(StoreError::InvalidArgument("page size must be at least 1".into()));
        }
        let after_sku = match cursor {
            Some(cursor) => cursor::decode(category, cursor)?,
            None => String::new(),
        };
        Ok(Self {
            after_sku,
            limit: limit.min(MAX_PAGE_SIZE) as usize,
        })
    }

    /// Rows to read: one more than the page, to learn whether another page follows.
    pub(crate) fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The page from up to `fetch()` rows in SKU order.
    pub(crate) fn page(&self, category: &str, mut rows: Vec<Product>) -> ProductPage {
        let next_cursor = if rows.len() > self.limit {
            rows.truncate(self.limit);
            rows.last().map(|last| cursor::encode(category, &last.sku))
        } else {
            None
        };
        ProductPage {
            products: rows,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str) -> Product {
        Product {
            sku: sku.into(),
            category: "c".into(),
            ..Product::default()
        }
    }

    #[test]
    fn expected_version_rules() {
        assert_eq!(check_expected_version("a", None, None), Ok(()));
        assert_eq!(check_expected_version("a", None, Some(4)), Ok(()));
        assert_eq!(check_expected_version("a", Some(0), None), Ok(()));
        assert_eq!(
            check_expected_version("a", Some(0), Some(1)),
            Err(StoreError::VersionConflict {
                expected: 0,
                actual: 1
            })
        );
        assert_eq!(check_expected_version("a", Some(3), Some(3)), Ok(()));
        assert_eq!(
            check_expected_version("a", Some(2), Some(3)),
            Err(StoreError::VersionConflict {
                expected: 2,
                actual: 3
            })
        );
        assert!(matches!(
            check_expected_version("a", Some(2), None),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn distinct_skus_keeps_first_order_and_caps_size() {
        let skus: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).into();
        assert_eq!(distinct_skus(&skus), Ok(vec!["b", "a", "c"]));
        let too_many = vec!["x".to_string(); MAX_BATCH_GET + 1];
        assert!(matches!(
            distinct_skus(&too_many),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn validate_product_refuses_empty_keys() {
        assert_eq!(validate_product(&product("a")), Ok(()));
        assert!(validate_product(&product("")).is_err());
        let mut uncategorised = product("a");
        uncategorised.category.clear();
        assert!(validate_product(&uncategorised).is_err());
    }

    #[test]
    fn page_request_checks_and_caps() {
        assert!(PageRequest::new("c", None, 0).is_err());
        assert!(PageRequest::new("", None, 5).is_err());
        assert!(PageRequest::new("c", Some("nonsense"), 5).is_err());
        let capped = PageRequest::new("c", None, u32::MAX).unwrap();
        assert_eq!(capped.limit, MAX_PAGE_SIZE as usize);
        assert_eq!(capped.after_sku, "");
        let resumed = PageRequest::new("c", Some(&cursor::encode("c", "k")), 5).unwrap();
        assert_eq!(resumed.after_sku, "k");
    }

    #[test]
    fn page_has_cursor_only_when_more_rows_exist() {
        let request = PageRequest::new("c", None, 2).unwrap();
        let last = request.page("c", vec![product("a"), product("b")]);
        assert_eq!(last.products.len(), 2);
        assert_eq!(last.next_cursor, None);

        let more = request.page("c", vec![product("a"), product("b"), product("c")]);
        assert_eq!(
            more.products.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let next = PageRequest::new("c", more.next_cursor.as_deref(), 2).unwrap();
        assert_eq!(next.after_sku, "b");
    }
}
