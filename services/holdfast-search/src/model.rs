//! What goes into the index and what a search asks and answers, independent of the engine.

use holdfast_store::Product;

/// One change to the index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexChange {
    /// Index `product` (or drop it if it is inactive). `in_stock`: `None` keeps what the
    /// index has for the SKU (false for a new one).
    Upsert {
        /// The product as stored.
        product: Product,
        /// Whether units are available, if known.
        in_stock: Option<bool>,
    },
    /// Flip the in-stock flag of an indexed SKU (nothing if it is not indexed).
    Stock {
        /// The SKU.
        sku: String,
        /// Whether units are available.
        in_stock: bool,
    },
}

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum SortOrder {
    /// Best match first, ties by SKU; by SKU when there is no text.
    #[default]
    Relevance,
    /// Cheapest first, ties by SKU.
    PriceAscending,
    /// Most expensive first, ties by SKU.
    PriceDescending,
    /// Newest first (creation time), ties by SKU.
    Newest,
}

/// Keep products priced in `currency` within `[min, max)` (minor units).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PriceFilter {
    /// ISO-4217 code.
    pub currency: String,
    /// Inclusive lower bound.
    pub min: Option<i64>,
    /// Exclusive upper bound.
    pub max: Option<i64>,
}

/// Caller-chosen price facet edges, ascending, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PriceEdges {
    /// ISO-4217 code.
    pub currency: String,
    /// Ascending edges in minor units; buckets are [e0, e1), ..., [e_last, inf).
    pub edges: Vec<i64>,
}

/// A search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// Free text; empty matches every product.
    pub text: String,
    /// Keep these categories (any of); empty means all.
    pub categories: Vec<String>,
    /// Keep these brands (any of); empty means all.
    pub brands: Vec<String>,
    /// Keep this price range.
    pub price: Option<PriceFilter>,
    /// Keep only products in stock.
    pub in_stock_only: bool,
    /// Result order.
    pub sort: SortOrder,
    /// Most values per category and brand facet.
    pub facet_limit: usize,
    /// Price facet edges; `None` means default edges per currency among the matches.
    pub price_edges: Option<PriceEdges>,
    /// Page size, at least 1.
    pub page_size: usize,
    /// Resume after this (sort key, SKU), from the previous page.
    pub after: Option<(f64, String)>,
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The product as indexed.
    pub product: Product,
    /// Whether it is in stock as the index knows.
    pub in_stock: bool,
    /// Title with matched terms in `<b>`.
    pub title_html: String,
    /// Description snippet with matched terms in `<b>`.
    pub description_html: String,
    /// Its sort key (for the cursor).
    pub key: f64,
}

/// A price facet bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBucket {
    /// ISO-4217 code.
    pub currency: String,
    /// Inclusive lower edge.
    pub min: i64,
    /// Exclusive upper edge; `None` for the last bucket.
    pub max: Option<i64>,
    /// Matches in it.
    pub count: u64,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// The hits, in order.
    pub hits: Vec<SearchHit>,
    /// Matches across all pages.
    pub total_hits: u64,
    /// Category facet: (value, count), count descending then value.
    pub category_facets: Vec<(String, u64)>,
    /// Brand facet, likewise; empty brands not counted.
    pub brand_facets: Vec<(String, u64)>,
    /// Price buckets by currency, ascending.
    pub price_facets: Vec<PriceBucket>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<(f64, String)>,
    /// Index lag when answered (set by [`crate::SearchHandle`]).
    pub lag_ms: u64,
}

/// Default price facet edges in minor units (0, 10, 25, 50, 100, 250, 500 major units).
pub const DEFAULT_PRICE_EDGES: [i64; 7] = [0, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000];
