//! Product search for the catalog: a [`SearchIndex`] trait, its embedded Tantivy
//! implementation ([`TantivyIndex`], one index per replica under the data dir), and the
//! [`Indexer`] that keeps it current from `catalog.product_upserted` and inventory stock
//! events, rebuilding from the store on start when the index is missing or behind.
//!
//! The catalog's `Search` RPC converts its request into a [`SearchQuery`] and asks a
//! [`SearchHandle`]; nothing here knows gRPC. A cluster engine (OpenSearch) would be another
//! [`SearchIndex`]; none exists yet (see docs/search.md).

pub mod collect;
pub mod cursor;
pub mod generate;
pub mod indexer;
pub mod model;
pub mod query;
pub mod relevance;
pub mod schema;
pub mod tantivy_index;

use std::sync::Arc;

use futures::future::BoxFuture;

pub use indexer::{CATALOG_TOPIC, Indexer, IndexerOptions, LagTracker, RunningIndexer};
pub use model::{
    IndexChange, PriceBucket, PriceEdges, PriceFilter, SearchHit, SearchPage, SearchQuery, SortOrder,
};
pub use tantivy_index::TantivyIndex;

/// Why a search or an index write failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query cannot be answered as asked (bad cursor, bad edges...).
    #[error("invalid search: {0}")]
    InvalidArgument(String),
    /// The engine failed (I/O, a corrupt index, a closed writer).
    #[error("search engine: {0}")]
    Engine(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::Engine(error.to_string())
    }
}

/// A full-text index of active products: what the catalog searches.
///
/// `apply` makes changes searchable and durable (an `Ok` survives a restart); `search`
/// answers from the last applied state. Implementations are shared across tasks.
pub trait SearchIndex: Send + Sync + 'static {
    /// Applies `changes` in order and returns once they are searchable and durable.
    /// `checkpoint_ms` is the newest `updated_at_ms` among the products they came from; the
    /// index keeps the largest it has seen ([`SearchIndex::checkpoint_ms`]).
    fn apply(&self, changes: Vec<IndexChange>, checkpoint_ms: i64) -> BoxFuture<'_, Result<(), SearchError>>;

    /// One page of results with facet counts.
    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<SearchPage, SearchError>>;

    /// The newest product `updated_at_ms` applied so far (0 for an empty index): a restart
    /// re-reads the store from a little before it.
    fn checkpoint_ms(&self) -> i64;

    /// Number of indexed (active) products.
    fn num_docs(&self) -> u64;
}

/// What the catalog's Search handler holds: the index and how far behind it is.
#[derive(Clone)]
pub struct SearchHandle {
    /// The index answering searches.
    pub index: Arc<dyn SearchIndex>,
    /// The indexer's lag, reported on every response.
    pub lag: Arc<LagTracker>,
}

impl SearchHandle {
    /// Searches, stamping the page with the current index lag.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchPage, SearchError> {
        let mut page = self.index.search(query).await?;
        page.lag_ms = self.lag.lag_ms();
        Ok(page)
    }
}
