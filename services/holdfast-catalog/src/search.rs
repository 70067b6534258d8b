//! `Search` over a [`SearchHandle`], and the `catalog.product_upserted` event every upsert
//! writes to the store's outbox (which feeds the search indexers).

use std::sync::Arc;

use holdfast_platform::events::EventBus;
use holdfast_platform::status::FieldViolations;
use holdfast_proto::catalog::v1::{
    FacetValueCount, PriceFacetBucket, PriceRange, SearchHighlight, SearchRequest, SearchResponse, SearchSort,
};
use holdfast_proto::common::v1::{Money, PageResponse};
use holdfast_proto::events::v1::{CatalogEvent, ProductUpserted, catalog_event};
use holdfast_search::indexer::{CATALOG_TOPIC, PRODUCT_UPSERTED};
use holdfast_search::{PriceEdges, PriceFilter, SearchError, SearchHandle, SearchQuery, SortOrder, cursor};
use holdfast_store::{OutboxMessage, OutboxStore, relay};
use prost::Message;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::convert::to_wire;
use crate::validate;

/// Longest free-text query, in characters.
pub const MAX_QUERY: usize = 256;
/// Most categories or brands one search may filter on.
pub const MAX_FILTER_VALUES: usize = 50;
/// Most price facet edges.
pub const MAX_EDGES: usize = 20;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const DEFAULT_FACETS: u32 = 20;
const MAX_FACETS: u32 = 100;

/// The outbox row announcing an upsert of `sku` (a UUID v7 id; payload [`CatalogEvent`]).
pub fn product_upserted(sku: &str, region: &str, now_ms: i64) -> OutboxMessage {
    let id = uuid::Uuid::now_v7().to_string();
    let payload = CatalogEvent {
        event_id: id.clone(),
        event: Some(catalog_event::Event::ProductUpserted(ProductUpserted {
            sku: sku.to_string(),
            occurred_at_unix_ms: now_ms,
        })),
    }
    .encode_to_vec();
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("region".to_string(), region.to_string());
    if let Some(traceparent) = holdfast_platform::telemetry::current_traceparent() {
        headers.insert("traceparent".to_string(), traceparent);
    }
    OutboxMessage {
        id,
        topic: CATALOG_TOPIC.to_string(),
        key: sku.to_string(),
        event_type: PRODUCT_UPSERTED.to_string(),
        payload,
        headers,
        created_at_ms: now_ms,
    }
}

/// Runs an outbox relay over `store` publishing to `bus`, woken by `wake` (the catalog
/// notifies it after each upsert). Only for processes where no other service's relay
/// drains this store's outbox (one relay per outbox is enough; two are safe).
pub fn spawn_relay<S>(store: S, bus: Arc<dyn EventBus>, region: String, wake: Arc<Notify>) -> JoinHandle<()>
where
    S: OutboxStore + 'static,
{
    tokio::spawn(async move {
        let options = relay::RelayOptions::default();
        relay::run_to_bus(&store, &wake, &options, &*bus, &region, |_| |_| {}).await;
    })
}

fn sort_of(value: i32) -> Option<SortOrder> {
    Some(match SearchSort::try_from(value).ok()? {
        SearchSort::Unspecified | SearchSort::Relevance => SortOrder::Relevance,
        SearchSort::PriceAscending => SortOrder::PriceAscending,
        SearchSort::PriceDescending => SortOrder::PriceDescending,
        SearchSort::Newest => SortOrder::Newest,
    })
}

/// Checks `request` and turns it into a query (cursor included).
pub fn to_query(request: &SearchRequest) -> Result<SearchQuery, Status> {
    let mut v = FieldViolations::new();
    if request.query.chars().count() > MAX_QUERY {
        v.add("query", format!("must be at most {MAX_QUERY} characters"));
    } else if request.query.chars().any(char::is_control) {
        v.add("query", "must not contain control characters");
    }
    if request.categories.len() > MAX_FILTER_VALUES {
        v.add("categories", format!("at most {MAX_FILTER_VALUES} values"));
    }
    for (i, c) in request.categories.iter().enumerate() {
        holdfast_platform::validate::text(&mut v, &format!("categories[{i}]"), c, validate::MAX_LABEL);
    }
    if request.brands.len() > MAX_FILTER_VALUES {
        v.add("brands", format!("at most {MAX_FILTER_VALUES} values"));
    }
    for (i, b) in request.brands.iter().enumerate() {
        holdfast_platform::validate::text(&mut v, &format!("brands[{i}]"), b, 100);
    }
    let price = request.price_range.as_ref().and_then(|range| {
        let (min, max) = (range.min.as_ref(), range.max.as_ref());
        for (field, money) in [("price_range.min", min), ("price_range.max", max)] {
            if let Some(money) = money {
                validate::currency(&mut v, &format!("{field}.currency"), &money.currency);
                if money.amount_minor < 0 {
                    v.add(format!("{field}.amount_minor"), "must not be negative");
                }
            }
        }
        match (min, max) {
            (None, None) => None,
            (Some(a), Some(b)) if a.currency != b.currency => {
                v.add("price_range.max.currency", "must equal price_range.min.currency");
                None
            }
            (Some(a), Some(b)) if b.amount_minor <= a.amount_minor => {
                v.add("price_range.max.amount_minor", "must be greater than min");
                None
            }
            (a, b) => Some(PriceFilter {
                currency: a.or(b).map(|m| m.currency.clone()).unwrap_or_default(),
                min: a.map(|m| m.amount_minor),
                max: b.map(|m| m.amount_minor),
            }),
        }
    });
    let sort = sort_of(request.sort);
    if sort.is_none() {
        v.add("sort", "unknown sort");
    }
    if request.facet_limit > MAX_FACETS {
        v.add("facet_limit", format!("must be at most {MAX_FACETS}"));
    }
    let edges = &request.price_facet_edges;
    if edges.len() > MAX_EDGES {
        v.add("price_facet_edges", format!("at most {MAX_EDGES} edges"));
    }
    let price_edges = match edges.first() {
        None => None,
        Some(first) => {
            validate::currency(&mut v, "price_facet_edges[0].currency", &first.currency);
            if edges.iter().any(|e| e.currency != first.currency) {
                v.add("price_facet_edges", "must all be in one currency");
            }
            if edges.windows(2).any(|w| w[1].amount_minor <= w[0].amount_minor) {
                v.add("price_facet_edges", "must be strictly ascending");
            }
            Some(PriceEdges {
                currency: first.currency.clone(),
                edges: edges.iter().map(|e| e.amount_minor).collect(),
            })
        }
    };
    let page = request.page.clone().unwrap_or_default();
    if page.page_size > MAX_PAGE {
        v.add("page.page_size", format!("must be at most {MAX_PAGE}"));
    }
    let mut query = SearchQuery {
        text: request.query.clone(),
        categories: request.categories.clone(),
        brands: request.brands.clone(),
        price,
        in_stock_only: request.in_stock_only,
        sort: sort.unwrap_or_default(),
        facet_limit: if request.facet_limit == 0 {
            DEFAULT_FACETS
        } else {
            request.facet_limit
        } as usize,
        price_edges,
        page_size: if page.page_size == 0 {
            DEFAULT_PAGE
        } else {
            page.page_size
        } as usize,
        after: None,
    };
    if !page.page_token.is_empty() {
        match cursor::decode(&query, &page.page_token) {
            Ok(after) => query.after = Some(after),
            Err(error) => {
                v.add("page.page_token", error.to_string());
            }
        }
    }
    v.into_result().map(|()| query)
}

/// Runs `request` on `handle`.
pub async fn search(handle: Option<&SearchHandle>, request: SearchRequest) -> Result<SearchResponse, Status> {
    let query = to_query(&request)?;
    let Some(handle) = handle else {
        return Err(Status::unimplemented(
            "search is not enabled on this catalog replica",
        ));
    };
    let page = handle.search(query.clone()).await.map_err(|e| match e {
        SearchError::InvalidArgument(message) => Status::invalid_argument(message),
        SearchError::Engine(message) => Status::unavailable(format!("search index: {message}")),
    })?;
    let money = |currency: &str, amount: i64| Money {
        amount_minor: amount,
        currency: currency.to_string(),
    };
    let facets = |values: Vec<(String, u64)>| {
        values
            .into_iter()
            .map(|(value, count)| FacetValueCount { value, count })
            .collect()
    };
    Ok(SearchResponse {
        highlights: page
            .hits
            .iter()
            .map(|h| SearchHighlight {
                sku: h.product.sku.clone(),
                title: h.title_html.clone(),
                description: h.description_html.clone(),
            })
            .collect(),
        products: page.hits.iter().map(|h| to_wire(&h.product)).collect(),
        total_hits: page.total_hits,
        category_facets: facets(page.category_facets),
        brand_facets: facets(page.brand_facets),
        price_facets: page
            .price_facets
            .into_iter()
            .map(|b| PriceFacetBucket {
                range: Some(PriceRange {
                    min: Some(money(&b.currency, b.min)),
                    max: b.max.map(|max| money(&b.currency, max)),
                }),
                count: b.count,
            })
            .collect(),
        page: Some(PageResponse {
            next_page_token: page
                .next
                .map(|(key, sku)| cursor::encode(&query, key, &sku))
                .unwrap_or_default(),
        }),
        index_lag_ms: page.lag_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_query_refuses_control_characters_in_text_and_filters() {
        let refused = |request: SearchRequest| to_query(&request).is_err();
        assert!(refused(SearchRequest {
            query: "a\u{0}b".into(),
            ..SearchRequest::default()
        }));
        assert!(refused(SearchRequest {
            categories: vec!["a\u{1b}[31mred".into()],
            ..SearchRequest::default()
        }));
        assert!(refused(SearchRequest {
            brands: vec!["acme\n".into()],
            ..SearchRequest::default()
        }));
        assert!(!refused(SearchRequest {
            query: "red mug".into(),
            categories: vec!["mugs".into()],
            brands: vec!["Acme".into()],
            ..SearchRequest::default()
        }));
    }
}
