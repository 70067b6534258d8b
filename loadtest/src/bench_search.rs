//! `holdfast-load bench search`: the embedded search index on a generated catalog
//! (`holdfast_search::generate`, 1,000,000 products by default): index throughput
//! (products/s, one writer with two threads, committed every `--batch`), the known-answer
//! relevance checks at that size, then the latency of a query mix run one at a time
//! (p50/p99/max per kind and overall). Run it on a release build; `make test` never does.

use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;
use holdfast_search::model::{PriceFilter, SearchQuery, SortOrder};
use holdfast_search::{SearchIndex, TantivyIndex, generate, relevance};

/// Flags of `bench search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchBench {
    /// Products to generate and index.
    #[arg(long, default_value_t = 1_000_000)]
    pub products: usize,
    /// Products per index commit while loading.
    #[arg(long, default_value_t = 50_000)]
    pub batch: usize,
    /// Queries to time (spread over the kinds of the mix).
    #[arg(long, default_value_t = 3_000)]
    pub queries: u64,
    /// Where to build the index (default: a fresh directory under the temp dir, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip the known-answer checks.
    #[arg(long)]
    pub no_check: bool,
}

/// The query mix: (name, query for the i-th run).
fn mix(i: u64) -> (&'static str, SearchQuery) {
    let word = |k: u64| generate::BRANDS[(k % 25) as usize].to_lowercase();
    let base = SearchQuery {
        facet_limit: 20,
        page_size: 20,
        ..SearchQuery::default()
    };
    match i % 6 {
        0 => (
            "brand+noun",
            SearchQuery {
                text: format!("{} jacket", word(i)),
                ..base
            },
        ),
        1 => (
            "typo",
            SearchQuery {
                text: "zephir".into(),
                ..base
            },
        ),
        2 => (
            "prefix",
            SearchQuery {
                text: format!("{} ski", word(i)),
                ..base
            },
        ),
        3 => (
            "phrase",
            SearchQuery {
                text: "\"red runner\"".into(),
                ..base
            },
        ),
        4 => (
            "category+price sort",
            SearchQuery {
                categories: vec![generate::CATEGORIES[(i % 10) as usize].0.into()],
                price: Some(PriceFilter {
                    currency: "USD".into(),
                    min: Some(1_000),
                    max: Some(20_000),
                }),
                sort: SortOrder::PriceAscending,
                ..base
            },
        ),
        _ => (
            "everything+facets",
            SearchQuery {
                in_stock_only: i.is_multiple_of(2),
                ..base
            },
        ),
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the bench and returns its figures (also printed).
pub async fn run(args: &SearchBench) -> anyhow::Result<serde_json::Value> {
    let temporary = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("holdfast-search-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (index, _) = TantivyIndex::open(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    relevance::load(&index, args.products, args.batch)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_s = started.elapsed().as_secs_f64();
    let rate = args.products as f64 / load_s;
    let size = dir_size(&dir);
    println!(
        "indexed {} products in {load_s:.1} s: {rate:.0} products/s; index {:.0} MB",
        args.products,
        size as f64 / 1e6
    );
    if !args.no_check {
        let checked = Instant::now();
        relevance::check(&index, args.products)
            .await
            .map_err(|e| anyhow::anyhow!("known answers at {} products: {e}", args.products))?;
        println!(
            "known-answer checks passed at {} products ({:.1} s)",
            args.products,
            checked.elapsed().as_secs_f64()
        );
    }
    let mut kinds: std::collections::BTreeMap<&str, Histogram<u64>> = std::collections::BTreeMap::new();
    let mut all = Histogram::<u64>::new(3)?;
    for i in 0..args.queries {
        let (kind, query) = mix(i);
        let t = Instant::now();
        let page = index.search(query).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let us = t.elapsed().as_micros() as u64;
        anyhow::ensure!(page.total_hits > 0 || kind == "prefix", "{kind}: no hits");
        all.record(us.max(1))?;
        kinds
            .entry(kind)
            .or_insert_with(|| Histogram::new(3).expect("histogram"))
            .record(us.max(1))?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut per_kind = serde_json::Map::new();
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}",
        "query", "p50 ms", "p99 ms", "max ms", "n"
    );
    for (kind, h) in kinds.iter().chain(std::iter::once((&"all", &all))) {
        println!(
            "{kind:<22} {:>8.2} {:>8.2} {:>8.2} {:>8}",
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0,
            h.len()
        );
        per_kind.insert(
            (*kind).to_string(),
            serde_json::json!({ "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "max_ms": h.max() as f64 / 1000.0, "n": h.len() }),
        );
    }
    drop(index);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(serde_json::json!({
        "products": args.products,
        "index_seconds": load_s,
        "products_per_second": rate,
        "index_bytes": size,
        "queries": per_kind,
    }))
}
