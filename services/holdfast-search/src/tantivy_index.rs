//! [`TantivyIndex`]: the embedded [`SearchIndex`], one Tantivy index in a directory.
//!
//! One writer (behind a mutex) applies batches and commits each with a payload recording
//! the schema version and the checkpoint (newest product `updated_at_ms` applied), then
//! reloads the reader, so a batch is searchable and durable when `apply` returns. A batch that
//! changes no document and moves no checkpoint (stock events that flip no `in_stock` flag:
//! most of them, under checkout load) commits nothing once the index has a commit of this
//! schema: a commit costs fsyncs and a reader reload.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use holdfast_store::Product;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term, doc};

use crate::collect::{PriceCounts, PriceHistogram, Ranked, TermCounts, TopSorted};
use crate::model::{DEFAULT_PRICE_EDGES, IndexChange, PriceBucket, SearchHit, SearchPage, SearchQuery};
use crate::query::{self, Filters, Without};
use crate::schema::{self, Fields, SCHEMA_VERSION};
use crate::{SearchError, SearchIndex};

/// Writer heap across its threads.
const WRITER_HEAP: usize = 96 * 1024 * 1024;
/// Writer threads (the machine this runs on is small; indexing shares it with serving).
const WRITER_THREADS: usize = 2;

/// What a commit records.
#[derive(Debug, Serialize, Deserialize)]
struct CommitPayload {
    schema: u32,
    checkpoint_ms: i64,
}

/// The product as stored in the index (so a hit or a stock change needs no store read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredProduct {
    sku: String,
    title: String,
    description: String,
    price_minor: i64,
    currency: String,
    category: String,
    brand: String,
    attributes: BTreeMap<String, String>,
    version: u64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<&Product> for StoredProduct {
    fn from(p: &Product) -> Self {
        Self {
            sku: p.sku.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            price_minor: p.price_minor,
            currency: p.currency.clone(),
            category: p.category.clone(),
            brand: p.brand.clone(),
            attributes: p.attributes.clone(),
            version: p.version,
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        }
    }
}

impl From<StoredProduct> for Product {
    fn from(p: StoredProduct) -> Self {
        Product {
            sku: p.sku,
            title: p.title,
            description: p.description,
            price_minor: p.price_minor,
            currency: p.currency,
            category: p.category,
            brand: p.brand,
            attributes: p.attributes,
            active: true,
            version: p.version,
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        }
    }
}

/// How [`TantivyIndex::open`] found the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A usable index with this checkpoint.
    Existing,
    /// Nothing usable was there (missing, or another schema version): a new empty index.
    Created,
}

struct Inner {
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    checkpoint: AtomicI64,
    docs: AtomicU64,
    /// Whether the index holds a commit of this schema (its payload): until then even an
    /// empty batch commits, to record the schema version.
    committed: AtomicBool,
}

/// The embedded search index. Cheap to clone.
#[derive(Clone)]
pub struct TantivyIndex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TantivyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TantivyIndex")
            .field("docs", &self.inner.docs.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TantivyIndex {
    /// Opens the index in `dir`, or creates one there if it is missing or was built with
    /// another schema version (the caller then rebuilds it from the store).
    pub fn open(dir: &Path) -> Result<(Self, Opened), SearchError> {
        let io = |e: std::io::Error| SearchError::Engine(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        if let Ok(index) = Index::open_in_dir(dir) {
            let payload = index.load_metas().ok().and_then(|m| m.payload);
            let payload: Option<CommitPayload> = payload.and_then(|p| serde_json::from_str(&p).ok());
            if let Some(payload) = payload.filter(|p| p.schema == SCHEMA_VERSION) {
                let opened = Self::from_index(index, payload.checkpoint_ms, true)?;
                return Ok((opened, Opened::Existing));
            }
            drop(index);
            tracing::info!(dir = %dir.display(), "search index has another schema version or no commit; rebuilding");
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, _) = schema::build();
        let index = Index::create_in_dir(dir, schema)?;
        Ok((Self::from_index(index, 0, false)?, Opened::Created))
    }

    /// A fresh index in memory (tests, benchmarks).
    pub fn in_memory() -> Result<Self, SearchError> {
        let (schema, _) = schema::build();
        Self::from_index(Index::create_in_ram(schema), 0, false)
    }

    fn from_index(index: Index, checkpoint_ms: i64, committed: bool) -> Result<Self, SearchError> {
        let (_, fields) = schema::build();
        let writer = index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let docs = reader.searcher().num_docs();
        Ok(Self {
            inner: Arc::new(Inner {
                fields,
                reader,
                writer: Mutex::new(writer),
                checkpoint: AtomicI64::new(checkpoint_ms),
                docs: AtomicU64::new(docs),
                committed: AtomicBool::new(committed),
            }),
        })
    }

    fn document(&self, product: &Product, in_stock: bool) -> Result<TantivyDocument, SearchError> {
        let f = &self.inner.fields;
        let payload = serde_json::to_string(&StoredProduct::from(product))
            .map_err(|e| SearchError::Engine(format!("encoding {}: {e}", product.sku)))?;
        let attributes = product.attributes.values().cloned().collect::<Vec<_>>().join(" ");
        Ok(doc!(
            f.sku => product.sku.as_str(),
            f.title => product.title.as_str(),
            f.description => product.description.as_str(),
            f.brand_text => product.brand.as_str(),
            f.attributes => attributes,
            f.category => product.category.as_str(),
            f.brand => product.brand.as_str(),
            f.currency => product.currency.as_str(),
            f.price => product.price_minor,
            f.created => product.created_at_ms,
            f.in_stock => u64::from(in_stock),
            f.payload => payload,
        ))
    }

    /// The indexed product and stock flag of `sku`, if it is indexed.
    fn lookup(&self, searcher: &Searcher, sku: &str) -> Result<Option<(Product, bool)>, SearchError> {
        let f = &self.inner.fields;
        let query = TermQuery::new(Term::from_field_text(f.sku, sku), IndexRecordOption::Basic);
        let top = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        match top.first() {
            Some((_, address)) => Ok(Some(self.load(searcher, *address)?)),
            None => Ok(None),
        }
    }

    fn load(
        &self,
        searcher: &Searcher,
        address: tantivy::DocAddress,
    ) -> Result<(Product, bool), SearchError> {
        let f = &self.inner.fields;
        let doc: TantivyDocument = searcher.doc(address)?;
        let payload = doc
            .get_first(f.payload)
            .and_then(|v| v.as_str())
            .ok_or_else(|| SearchError::Engine("indexed document without payload".into()))?;
        let stored: StoredProduct = serde_json::from_str(payload)
            .map_err(|e| SearchError::Engine(format!("indexed payload: {e}")))?;
        let in_stock = doc.get_first(f.in_stock).and_then(|v| v.as_u64()) == Some(1);
        Ok((stored.into(), in_stock))
    }

    /// [`SearchIndex::apply`], blocking.
    pub fn apply_blocking(&self, changes: Vec<IndexChange>, checkpoint_ms: i64) -> Result<(), SearchError> {
        let f = &self.inner.fields;
        let searcher = self.inner.reader.searcher();
        let mut writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // State written in this batch, not yet visible to `searcher`.
        let mut written: HashMap<String, Option<(Product, bool)>> = HashMap::new();
        for change in changes {
            match change {
                IndexChange::Upsert { product, in_stock } => {
                    let in_stock = match in_stock {
                        Some(flag) => flag,
                        None => match written.get(&product.sku) {
                            Some(state) => state.as_ref().is_some_and(|(_, flag)| *flag),
                            None => self
                                .lookup(&searcher, &product.sku)?
                                .is_some_and(|(_, flag)| flag),
                        },
                    };
                    writer.delete_term(Term::from_field_text(f.sku, &product.sku));
                    if product.active {
                        writer.add_document(self.document(&product, in_stock)?)?;
                        written.insert(product.sku.clone(), Some((product, in_stock)));
                    } else {
                        written.insert(product.sku.clone(), None);
                    }
                }
                IndexChange::Stock { sku, in_stock } => {
                    let current = match written.get(&sku) {
                        Some(state) => state.clone(),
                        None => self.lookup(&searcher, &sku)?,
                    };
                    if let Some((product, was)) = current
                        && was != in_stock
                    {
                        writer.delete_term(Term::from_field_text(f.sku, &sku));
                        writer.add_document(self.document(&product, in_stock)?)?;
                        written.insert(sku, Some((product, in_stock)));
                    }
                }
            }
        }
        let stored = self.inner.checkpoint.load(Ordering::SeqCst);
        let checkpoint = stored.max(checkpoint_ms);
        if written.is_empty() && checkpoint == stored && self.inner.committed.load(Ordering::SeqCst) {
            // Nothing to make searchable or durable: the last commit already says all this.
            return Ok(());
        }
        let payload = serde_json::to_string(&CommitPayload {
            schema: SCHEMA_VERSION,
            checkpoint_ms: checkpoint,
        })
        .map_err(|e| SearchError::Engine(e.to_string()))?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        drop(writer);
        self.inner.reader.reload()?;
        self.inner.checkpoint.store(checkpoint, Ordering::SeqCst);
        self.inner.committed.store(true, Ordering::SeqCst);
        self.inner
            .docs
            .store(self.inner.reader.searcher().num_docs(), Ordering::SeqCst);
        Ok(())
    }

    /// [`SearchIndex::search`], blocking.
    pub fn search_blocking(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let searcher = self.inner.reader.searcher();
        let f = &self.inner.fields;
        let text = query::text(&searcher, f, &query.text)?;
        let filters = Filters::of(f, query);
        let main = filters.combine(text.as_deref(), Without::Nothing);
        let top = TopSorted {
            sort: query.sort,
            scored: text.is_some(),
            // One more than the page, to know whether another page follows.
            limit: query.page_size.max(1) + 1,
            after: query.after.clone(),
        };
        let category = TermCounts { field: "category" };
        let brand = TermCounts { field: "brand" };
        let (fixed, default_edges) = match &query.price_edges {
            Some(edges) => (
                Some((edges.currency.clone(), edges.edges.clone())),
                edges.edges.clone(),
            ),
            None => (None, DEFAULT_PRICE_EDGES.to_vec()),
        };
        let prices = PriceCounts {
            fixed: fixed.clone(),
            default_edges: default_edges.clone(),
        };
        // Facets whose own filter is unset count over the main matches, in the same pass.
        let (total, ranked, (categories, brands), histogram) = searcher.search(
            &main,
            &(
                Count,
                top,
                (
                    (!filters.has(Without::Category)).then_some(category),
                    (!filters.has(Without::Brand)).then_some(brand),
                ),
                (!filters.has(Without::Price)).then_some(prices),
            ),
        )?;
        let categories = match categories {
            Some(counts) => counts,
            None => searcher.search(
                &filters.combine(text.as_deref(), Without::Category),
                &TermCounts { field: "category" },
            )?,
        };
        let brands = match brands {
            Some(counts) => counts,
            None => searcher.search(
                &filters.combine(text.as_deref(), Without::Brand),
                &TermCounts { field: "brand" },
            )?,
        };
        let histogram = match histogram {
            Some(histogram) => histogram,
            None => searcher.search(
                &filters.combine(text.as_deref(), Without::Price),
                &PriceCounts {
                    fixed,
                    default_edges: default_edges.clone(),
                },
            )?,
        };
        let mut ranked = ranked;
        let more = ranked.len() > query.page_size.max(1);
        ranked.truncate(query.page_size.max(1));
        let hits = self.hits(&searcher, text.as_deref(), &ranked)?;
        let next = if more {
            ranked.last().map(|r| (r.key, r.sku.clone()))
        } else {
            None
        };
        Ok(SearchPage {
            hits,
            total_hits: total as u64,
            category_facets: top_values(categories, query.facet_limit),
            brand_facets: top_values(
                brands
                    .into_iter()
                    .filter(|(brand, _)| !brand.is_empty())
                    .collect(),
                query.facet_limit,
            ),
            price_facets: buckets(
                histogram,
                &query
                    .price_edges
                    .as_ref()
                    .map(|e| e.edges.clone())
                    .unwrap_or(default_edges),
            ),
            next,
            lag_ms: 0,
        })
    }

    fn hits(
        &self,
        searcher: &Searcher,
        text: Option<&dyn Query>,
        ranked: &[Ranked],
    ) -> Result<Vec<SearchHit>, SearchError> {
        let f = &self.inner.fields;
        let generators = match text {
            Some(text) => {
                let title = SnippetGenerator::create(searcher, text, f.title)?;
                let mut description = SnippetGenerator::create(searcher, text, f.description)?;
                description.set_max_num_chars(150);
                Some((title, description))
            }
            None => None,
        };
        ranked
            .iter()
            .map(|r| {
                let doc: TantivyDocument = searcher.doc(r.address)?;
                let (product, in_stock) = self.load(searcher, r.address)?;
                let (title_html, description_html) = match &generators {
                    Some((title, description)) => {
                        let t = title.snippet_from_doc(&doc);
                        let d = description.snippet_from_doc(&doc);
                        (
                            if t.highlighted().is_empty() {
                                String::new()
                            } else {
                                t.to_html()
                            },
                            if d.highlighted().is_empty() {
                                String::new()
                            } else {
                                d.to_html()
                            },
                        )
                    }
                    None => (String::new(), String::new()),
                };
                Ok(SearchHit {
                    product,
                    in_stock,
                    title_html,
                    description_html,
                    key: r.key,
                })
            })
            .collect()
    }
}

/// Top `limit` (value, count) by count descending, then value.
fn top_values(counts: HashMap<String, u64>, limit: usize) -> Vec<(String, u64)> {
    let mut values: Vec<(String, u64)> = counts.into_iter().collect();
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(limit);
    values
}

fn buckets(histogram: PriceHistogram, edges: &[i64]) -> Vec<PriceBucket> {
    let mut out = Vec::new();
    for (currency, counts) in histogram {
        for (i, count) in counts.into_iter().enumerate() {
            out.push(PriceBucket {
                currency: currency.clone(),
                min: edges[i],
                max: edges.get(i + 1).copied(),
                count,
            });
        }
    }
    out
}

impl SearchIndex for TantivyIndex {
    fn apply(&self, changes: Vec<IndexChange>, checkpoint_ms: i64) -> BoxFuture<'_, Result<(), SearchError>> {
        let this = self.clone();
        async move {
            tokio::task::spawn_blocking(move || this.apply_blocking(changes, checkpoint_ms))
                .await
                .map_err(|e| SearchError::Engine(format!("index writer task: {e}")))?
        }
        .boxed()
    }

    fn search(&self, query: SearchQuery) -> BoxFuture<'_, Result<SearchPage, SearchError>> {
        let this = self.clone();
        async move {
            tokio::task::spawn_blocking(move || this.search_blocking(&query))
                .await
                .map_err(|e| SearchError::Engine(format!("search task: {e}")))?
        }
        .boxed()
    }

    fn checkpoint_ms(&self) -> i64 {
        self.inner.checkpoint.load(Ordering::SeqCst)
    }

    fn num_docs(&self) -> u64 {
        self.inner.docs.load(Ordering::SeqCst)
    }
}
