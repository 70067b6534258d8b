//! Known-answer checks over the [`crate::generate`]d catalog, shared by the test suite
//! (a 20,000-product index in debug builds) and `holdfast-load bench search` (100,000 and
//! more, release). Each check counts the expected answer from the generator, not the index.

use std::collections::HashSet;

use crate::generate::{self, BRANDS, CATEGORIES, DESCRIPTION_WORD, MARKER_MODULI, MARKERS};
use crate::model::{IndexChange, PriceEdges, PriceFilter, SearchPage, SearchQuery, SortOrder};
use crate::{SearchError, SearchIndex};

/// Indexes products `0..n` into `index` in batches of `batch`.
pub async fn load(index: &dyn SearchIndex, n: usize, batch: usize) -> Result<(), SearchError> {
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let changes = (start..end)
            .map(|i| IndexChange::Upsert {
                product: generate::product(i),
                in_stock: Some(i % 2 == 0),
            })
            .collect();
        index
            .apply(changes, generate::product(end - 1).updated_at_ms)
            .await?;
        start = end;
    }
    Ok(())
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        facet_limit: 20,
        page_size: 50,
        ..SearchQuery::default()
    }
}

fn marker_count(k: usize, n: usize) -> u64 {
    (0..n).filter(|i| i % MARKER_MODULI[k] == k).count() as u64
}

fn expect(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got}, want {want}"))
    }
}

/// Runs every check against an index holding products `0..n` (loaded by [`load`]).
pub async fn check(index: &dyn SearchIndex, n: usize) -> Result<(), String> {
    let run = |q: SearchQuery| async move { index.search(q).await.map_err(|e| e.to_string()) };

    // Exact word, typo, prefix and case: all find exactly the marked products.
    let zephyrs = marker_count(0, n);
    for text in ["zephyr", "ZEPHYR", "zephir", "zepyhr", "zeph"] {
        let page = run(query(text)).await?;
        expect(&format!("hits of {text:?}"), page.total_hits, zephyrs)?;
    }
    // Every word must match: the marker and a brand narrow it.
    let both = (0..n)
        .filter(|i| i % MARKER_MODULI[0] == 0 && BRANDS[generate::brand_of(*i)] == "Acme")
        .count() as u64;
    expect("zephyr acme", run(query("zephyr acme")).await?.total_hits, both)?;
    // Stemming: "runners" finds every "runner".
    let runners = (0..n).filter(|i| generate::category_of(*i) == 0).count() as u64;
    expect("runners", run(query("runners")).await?.total_hits, runners)?;
    // A description-only word.
    let waterproof = (0..n).filter(|i| i % 7 == 0).count() as u64;
    expect(
        DESCRIPTION_WORD,
        run(query(DESCRIPTION_WORD)).await?.total_hits,
        waterproof,
    )?;
    // Phrases: adjacent words only ("red runner" is a title phrase of red runners; the
    // words apart, "runner ... red", are not).
    let red_runners = (0..n)
        .filter(|i| generate::category_of(*i) == 0 && generate::COLOURS[(i / 3) % 8] == "red")
        .count() as u64;
    expect(
        "\"red runner\"",
        run(query("\"red runner\"")).await?.total_hits,
        red_runners,
    )?;
    expect(
        "\"runner red\"",
        run(query("\"runner red\"")).await?.total_hits,
        0,
    )?;
    // Nonsense finds nothing.
    expect("xqzvw", run(query("xqzvw")).await?.total_hits, 0)?;

    // Relevance: a title match outranks a description-only match. "quokka" is only in
    // titles; "skillet" appears in titles of cookware and nowhere else, so the first hit
    // of "quokka skillet" (if any) is a quokka skillet.
    let page = run(query("zephyr")).await?;
    let first = page.hits.first().ok_or("no hits for zephyr")?;
    if !first.product.title.contains("zephyr") || first.title_html.find("<b>").is_none() {
        return Err(format!(
            "zephyr's first hit is not highlighted: {:?}",
            first.title_html
        ));
    }

    // Facets over everything: the generator's counts.
    let mut all = query("");
    all.facet_limit = 100;
    let page = run(all.clone()).await?;
    expect("all", page.total_hits, n as u64)?;
    for (c, (category, _)) in CATEGORIES.iter().enumerate() {
        let want = (0..n).filter(|i| generate::category_of(*i) == c).count() as u64;
        let got = page
            .category_facets
            .iter()
            .find(|(v, _)| v == category)
            .map_or(0, |(_, c)| *c);
        expect(&format!("category facet {category}"), got, want)?;
    }
    // Disjunctive facets: filtering on one brand keeps the other brands' counts.
    let mut acme = all.clone();
    acme.brands = vec!["Acme".into()];
    let page = run(acme).await?;
    let acme_count = (0..n).filter(|i| generate::brand_of(*i) == 0).count() as u64;
    expect("brand Acme", page.total_hits, acme_count)?;
    let borealis = page
        .brand_facets
        .iter()
        .find(|(v, _)| v == "Borealis")
        .map_or(0, |(_, c)| *c);
    let want = (0..n).filter(|i| generate::brand_of(*i) == 1).count() as u64;
    expect("Borealis facet under an Acme filter", borealis, want)?;

    // Price range and buckets.
    let mut priced = all.clone();
    priced.price = Some(PriceFilter {
        currency: "USD".into(),
        min: Some(10_000),
        max: Some(20_000),
    });
    priced.price_edges = Some(PriceEdges {
        currency: "USD".into(),
        edges: vec![0, 10_000, 50_000],
    });
    let page = run(priced).await?;
    let in_range = (0..n)
        .filter(|i| (10_000..20_000).contains(&generate::price_of(*i)))
        .count() as u64;
    expect("price [100, 200) USD", page.total_hits, in_range)?;
    let middle = (0..n)
        .filter(|i| (10_000..50_000).contains(&generate::price_of(*i)))
        .count() as u64;
    let bucket = page.price_facets.get(1).map_or(0, |b| b.count);
    expect("bucket [100, 500) USD (disjunctive)", bucket, middle)?;

    // In stock only: the even products.
    let mut stocked = query("zephyr");
    stocked.in_stock_only = true;
    let want = (0..n).filter(|i| i % MARKER_MODULI[0] == 0 && i % 2 == 0).count() as u64;
    expect("zephyr in stock", run(stocked).await?.total_hits, want)?;

    // Sorts and paging: walk every page of a filtered query; the union is exactly the
    // expected set, in order, without repeats.
    // Relevance without text orders by SKU alone: every key ties, the cursor's SKU decides.
    for (sort, text) in [
        (SortOrder::PriceAscending, "waterproof"),
        (SortOrder::PriceDescending, "waterproof"),
        (SortOrder::Newest, "waterproof"),
        (SortOrder::Relevance, "waterproof"),
        (SortOrder::Relevance, ""),
    ] {
        let mut q = query(text);
        if text.is_empty() {
            q.in_stock_only = true;
        }
        q.categories = vec![CATEGORIES[3].0.into()];
        q.sort = sort;
        q.page_size = 37;
        let want: HashSet<String> = (0..n)
            .filter(|i| generate::category_of(*i) == 3)
            .filter(|i| if text.is_empty() { i % 2 == 0 } else { i % 7 == 0 })
            .map(generate::sku)
            .collect();
        let mut seen = Vec::new();
        loop {
            let page: SearchPage = run(q.clone()).await?;
            seen.extend(page.hits.iter().map(|h| (h.key, h.product.clone())));
            match page.next {
                Some(after) => q.after = Some(after),
                None => break,
            }
        }
        let got: HashSet<String> = seen.iter().map(|(_, p)| p.sku.clone()).collect();
        if got != want || seen.len() != want.len() {
            return Err(format!(
                "{sort:?}: paged {} hits ({} distinct), want {}",
                seen.len(),
                got.len(),
                want.len()
            ));
        }
        for pair in seen.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let ordered = match sort {
                SortOrder::PriceAscending => (a.1.price_minor, &a.1.sku) < (b.1.price_minor, &b.1.sku),
                SortOrder::PriceDescending => {
                    a.1.price_minor > b.1.price_minor
                        || (a.1.price_minor == b.1.price_minor && a.1.sku < b.1.sku)
                }
                SortOrder::Newest => a.1.created_at_ms > b.1.created_at_ms,
                SortOrder::Relevance => a.0 < b.0 || (a.0 == b.0 && a.1.sku < b.1.sku),
            };
            if !ordered {
                return Err(format!("{sort:?}: {} before {}", a.1.sku, b.1.sku));
            }
        }
    }
    let _ = MARKERS;
    Ok(())
}
