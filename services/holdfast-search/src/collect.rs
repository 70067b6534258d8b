//! Collectors: the top hits in (sort key, SKU) order after a cursor, and facet counts read
//! from fast fields.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::model::SortOrder;

/// One hit: its sort key, SKU and address.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// Smaller sorts first.
    pub key: f64,
    /// Tie-break.
    pub sku: String,
    /// Where the document is.
    pub address: DocAddress,
}

impl Ranked {
    fn cmp_key(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then_with(|| self.sku.cmp(&other.sku))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_key(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_key(other)
    }
}

fn str_column(reader: &SegmentReader, field: &str) -> tantivy::Result<Option<StrColumn>> {
    reader.fast_fields().str(field)
}

/// The best `limit` hits strictly after `after` in (key, SKU) order.
pub struct TopSorted {
    /// The order.
    pub sort: SortOrder,
    /// Whether the query has text (relevance uses scores only then).
    pub scored: bool,
    /// Page size.
    pub limit: usize,
    /// Cursor.
    pub after: Option<(f64, String)>,
}

/// [`TopSorted`] for one segment. Within a segment the SKU column's term ordinals are in
/// SKU order, so ties are broken by ordinal (no string reads per document); SKUs are read
/// only for the hits kept.
pub struct SegmentTop {
    segment: SegmentOrdinal,
    sort: SortOrder,
    scored: bool,
    limit: usize,
    /// Cursor key and the first SKU ordinal after the cursor's SKU in this segment.
    after: Option<(f64, u64)>,
    price: Column<i64>,
    created: Column<i64>,
    sku: Option<StrColumn>,
    heap: BinaryHeap<SegmentEntry>,
}

#[derive(Debug, Clone, Copy)]
struct SegmentEntry {
    key: f64,
    ord: u64,
    doc: DocId,
}

impl PartialEq for SegmentEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SegmentEntry {}
impl PartialOrd for SegmentEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SegmentEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then_with(|| self.ord.cmp(&other.ord))
    }
}

/// The first ordinal of `column` whose term is greater than `sku` (binary search).
fn first_ord_after(column: &Option<StrColumn>, sku: &str) -> u64 {
    let Some(column) = column else { return 0 };
    let (mut lo, mut hi) = (0u64, column.num_terms() as u64);
    let mut term = String::new();
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        term.clear();
        let _ = column.ord_to_str(mid, &mut term);
        if term.as_str() <= sku {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Collector for TopSorted {
    type Fruit = Vec<Ranked>;
    type Child = SegmentTop;

    fn for_segment(&self, segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentTop> {
        let sku = str_column(reader, "sku")?;
        let after = self
            .after
            .as_ref()
            .map(|(key, after_sku)| (*key, first_ord_after(&sku, after_sku)));
        Ok(SegmentTop {
            segment,
            sort: self.sort,
            scored: self.scored,
            limit: self.limit,
            after,
            price: reader.fast_fields().i64("price")?,
            created: reader.fast_fields().i64("created")?,
            sku,
            heap: BinaryHeap::with_capacity(self.limit + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.scored && self.sort == SortOrder::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Ranked>>) -> tantivy::Result<Vec<Ranked>> {
        let mut all: Vec<Ranked> = fruits.into_iter().flatten().collect();
        all.sort();
        all.truncate(self.limit);
        Ok(all)
    }
}

impl SegmentTop {
    fn key(&self, doc: DocId, score: Score) -> f64 {
        match self.sort {
            SortOrder::Relevance if self.scored => -f64::from(score),
            SortOrder::Relevance => 0.0,
            SortOrder::PriceAscending => self.price.first(doc).unwrap_or(i64::MAX) as f64,
            SortOrder::PriceDescending => -(self.price.first(doc).unwrap_or(i64::MIN) as f64),
            SortOrder::Newest => -(self.created.first(doc).unwrap_or(0) as f64),
        }
    }

    fn ord(&self, doc: DocId) -> u64 {
        self.sku
            .as_ref()
            .and_then(|column| column.term_ords(doc).next())
            .unwrap_or(u64::MAX)
    }
}

impl SegmentCollector for SegmentTop {
    type Fruit = Vec<Ranked>;

    fn collect(&mut self, doc: DocId, score: Score) {
        let key = self.key(doc, score);
        if let Some((after_key, first_ord)) = self.after {
            match key.total_cmp(&after_key) {
                Ordering::Less => return,
                Ordering::Equal if self.ord(doc) < first_ord => return,
                _ => {}
            }
        }
        if self.heap.len() >= self.limit
            && let Some(worst) = self.heap.peek()
            && key.total_cmp(&worst.key) == Ordering::Greater
        {
            return;
        }
        let entry = SegmentEntry {
            key,
            ord: self.ord(doc),
            doc,
        };
        if self.heap.len() >= self.limit && self.heap.peek().is_some_and(|worst| entry >= *worst) {
            return;
        }
        self.heap.push(entry);
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    fn harvest(self) -> Vec<Ranked> {
        let mut term = String::new();
        self.heap
            .into_vec()
            .into_iter()
            .map(|entry| {
                term.clear();
                if let Some(column) = &self.sku {
                    let _ = column.ord_to_str(entry.ord, &mut term);
                }
                Ranked {
                    key: entry.key,
                    sku: term.clone(),
                    address: DocAddress::new(self.segment, entry.doc),
                }
            })
            .collect()
    }
}

/// Counts of each value of a string fast field among the matches.
pub struct TermCounts {
    /// The fast field.
    pub field: &'static str,
}

/// [`TermCounts`] for one segment: counts by term ordinal.
pub struct SegmentTermCounts {
    column: Option<StrColumn>,
    counts: Vec<u64>,
}

impl Collector for TermCounts {
    type Fruit = HashMap<String, u64>;
    type Child = SegmentTermCounts;

    fn for_segment(&self, _: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentTermCounts> {
        let column = str_column(reader, self.field)?;
        let terms = column.as_ref().map_or(0, |c| c.num_terms());
        Ok(SegmentTermCounts {
            column,
            counts: vec![0; terms],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<String, u64>>) -> tantivy::Result<HashMap<String, u64>> {
        let mut merged = HashMap::new();
        for fruit in fruits {
            for (value, count) in fruit {
                *merged.entry(value).or_insert(0) += count;
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for SegmentTermCounts {
    type Fruit = HashMap<String, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(column) = &self.column {
            for ord in column.term_ords(doc) {
                if let Some(count) = self.counts.get_mut(ord as usize) {
                    *count += 1;
                }
            }
        }
    }

    fn harvest(self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        let Some(column) = self.column else {
            return out;
        };
        for (ord, count) in self.counts.into_iter().enumerate() {
            if count > 0 {
                let mut value = String::new();
                if column.ord_to_str(ord as u64, &mut value).unwrap_or(false) {
                    out.insert(value, count);
                }
            }
        }
        out
    }
}

/// Price histogram per currency: `edges` per currency, or `default_edges` for any currency
/// not listed. Only currencies with matches appear.
pub struct PriceCounts {
    /// Edges for one currency (the caller's), if any.
    pub fixed: Option<(String, Vec<i64>)>,
    /// Edges for every other currency (when `fixed` is `None`).
    pub default_edges: Vec<i64>,
}

/// [`PriceCounts`] for one segment.
pub struct SegmentPriceCounts {
    price: Column<i64>,
    currency: Option<StrColumn>,
    fixed: Option<(String, Vec<i64>)>,
    default_edges: Vec<i64>,
    /// Bucket counts by currency ordinal.
    by_ord: HashMap<u64, Vec<u64>>,
}

/// Bucket counts by currency; bucket i is [edges[i], edges[i+1]), the last one open.
pub type PriceHistogram = BTreeMap<String, Vec<u64>>;

impl Collector for PriceCounts {
    type Fruit = PriceHistogram;
    type Child = SegmentPriceCounts;

    fn for_segment(&self, _: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentPriceCounts> {
        Ok(SegmentPriceCounts {
            price: reader.fast_fields().i64("price")?,
            currency: str_column(reader, "currency")?,
            fixed: self.fixed.clone(),
            default_edges: self.default_edges.clone(),
            by_ord: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<PriceHistogram>) -> tantivy::Result<PriceHistogram> {
        let mut merged = PriceHistogram::new();
        for fruit in fruits {
            for (currency, counts) in fruit {
                let into = merged.entry(currency).or_insert_with(|| vec![0; counts.len()]);
                for (slot, count) in into.iter_mut().zip(counts) {
                    *slot += count;
                }
            }
        }
        Ok(merged)
    }
}

/// The bucket of `price` among ascending `edges`, or `None` below the first edge.
pub fn bucket_of(edges: &[i64], price: i64) -> Option<usize> {
    edges.partition_point(|edge| *edge <= price).checked_sub(1)
}

impl SegmentCollector for SegmentPriceCounts {
    type Fruit = PriceHistogram;

    fn collect(&mut self, doc: DocId, _: Score) {
        let (Some(price), Some(currency)) = (self.price.first(doc), self.currency.as_ref()) else {
            return;
        };
        let Some(ord) = currency.term_ords(doc).next() else {
            return;
        };
        let edges = match &self.fixed {
            Some((_, edges)) => edges,
            None => &self.default_edges,
        };
        if let Some(bucket) = bucket_of(edges, price) {
            let counts = self.by_ord.entry(ord).or_insert_with(|| vec![0; edges.len()]);
            counts[bucket] += 1;
        }
    }

    fn harvest(self) -> PriceHistogram {
        let mut out = PriceHistogram::new();
        let Some(column) = self.currency else {
            return out;
        };
        for (ord, counts) in self.by_ord {
            let mut currency = String::new();
            if column.ord_to_str(ord, &mut currency).unwrap_or(false) {
                if let Some((wanted, _)) = &self.fixed
                    && *wanted != currency
                {
                    continue;
                }
                out.insert(currency, counts);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_of;

    #[test]
    fn buckets_are_half_open_and_the_last_is_unbounded() {
        let edges = [0, 100, 500];
        assert_eq!(bucket_of(&edges, -1), None);
        assert_eq!(bucket_of(&edges, 0), Some(0));
        assert_eq!(bucket_of(&edges, 99), Some(0));
        assert_eq!(bucket_of(&edges, 100), Some(1));
        assert_eq!(bucket_of(&edges, 10_000), Some(2));
    }
}
