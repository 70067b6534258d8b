//! The gRPC face of the catalog: validate, go through the cache, map the answer.

use holdfast_platform::status::FieldViolations;
use holdfast_platform::validate::sku;
use holdfast_proto::catalog::v1::catalog_service_server::CatalogService;
use holdfast_proto::catalog::v1::{
    BatchGetProductsRequest, BatchGetProductsResponse, GetProductRequest, GetProductResponse,
    ListProductsRequest, ListProductsResponse, SearchRequest, SearchResponse, UpsertProductRequest,
    UpsertProductResponse,
};
use holdfast_proto::common::v1::PageResponse;
use holdfast_store::{ProductStore, StoreError};
use tonic::{Request, Response, Status};

use crate::cache::ProductCache;
use crate::convert::{from_wire, same_content, to_wire};
use crate::error::CatalogError;
use crate::validate::{self, MAX_BATCH};

/// Default and largest page sizes of ListProducts.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// `holdfast.catalog.v1.CatalogService` over a cached store.
#[derive(Clone)]
pub struct Catalog<S> {
    cache: ProductCache<S>,
    options: crate::CatalogOptions,
}

impl<S: ProductStore + Clone + 'static> Catalog<S> {
    /// The service over `cache`.
    pub fn new(cache: ProductCache<S>) -> Self {
        Self {
            cache,
            options: crate::CatalogOptions::default(),
        }
    }

    /// The service with search and an outbox wake-up.
    pub fn with_options(mut self, options: crate::CatalogOptions) -> Self {
        self.options = options;
        self
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn checked(violations: FieldViolations) -> Result<(), CatalogError> {
    violations.into_result().map_err(CatalogError::InvalidArgument)
}

#[tonic::async_trait]
impl<S: ProductStore + Clone + 'static> CatalogService for Catalog<S> {
    async fn upsert_product(
        &self,
        request: Request<UpsertProductRequest>,
    ) -> Result<Response<UpsertProductResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        validate::product(&mut violations, request.product.as_ref());
        checked(violations)?;
        let incoming = from_wire(request.product.unwrap_or_default());
        let sku = incoming.sku.clone();
        let expected = (request.expected_version != 0).then_some(request.expected_version);

        let stored = self
            .cache
            .store()
            .get_product(&sku)
            .await
            .map_err(CatalogError::from)?;
        if let Some(stored) = &stored {
            if let Some(expected) = expected
                && expected != stored.version
            {
                return Err(CatalogError::VersionConflict {
                    sku,
                    expected,
                    actual: stored.version,
                }
                .into());
            }
            // Idempotent: the same content again changes nothing, not even the version.
            if same_content(stored, &incoming) {
                return Ok(Response::new(UpsertProductResponse {
                    product: Some(to_wire(stored)),
                    created: false,
                }));
            }
        }
        // The change and its announcement (for the search indexers) commit together.
        let region = if self.options.region.is_empty() {
            "local"
        } else {
            &self.options.region
        };
        let announced = crate::search::product_upserted(&sku, region, now_ms());
        let written = match self
            .cache
            .store()
            .upsert_product_announced(incoming, expected, vec![announced])
            .await
        {
            Ok(product) => product,
            Err(StoreError::VersionConflict { expected, actual }) => {
                return Err(CatalogError::VersionConflict {
                    sku,
                    expected,
                    actual,
                }
                .into());
            }
            Err(StoreError::NotFound(_)) => return Err(CatalogError::NotFound(sku).into()),
            Err(other) => return Err(CatalogError::from(other).into()),
        };
        if let Some(wake) = &self.options.outbox_wake {
            wake.notify_one();
        }
        self.cache.invalidate(&written).await?;
        Ok(Response::new(UpsertProductResponse {
            created: stored.is_none(),
            product: Some(to_wire(&written)),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        sku(&mut violations, "sku", &request.sku);
        checked(violations)?;
        match self.cache.get(&request.sku).await? {
            Some(product) => Ok(Response::new(GetProductResponse {
                product: Some(to_wire(&product)),
            })),
            None => Err(CatalogError::NotFound(request.sku).into()),
        }
    }

    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        if request.skus.is_empty() || request.skus.len() > MAX_BATCH {
            violations.add("skus", format!("must name 1..{MAX_BATCH} SKUs"));
        }
        for (i, s) in request.skus.iter().enumerate() {
            sku(&mut violations, &format!("skus[{i}]"), s);
        }
        checked(violations)?;
        let mut unique = request.skus.clone();
        unique.dedup();
        let found = self.cache.get_many(&unique).await?;
        let missing_skus = unique
            .iter()
            .filter(|s| !found.iter().any(|p| &p.sku == *s))
            .cloned()
            .collect();
        Ok(Response::new(BatchGetProductsResponse {
            products: found.iter().map(to_wire).collect(),
            missing_skus,
        }))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let mut violations = FieldViolations::new();
        if request.category.is_empty()
            || request.category.chars().count() > validate::MAX_LABEL
            || request.category.chars().any(char::is_control)
        {
            violations.add(
                "category",
                format!(
                    "must be 1..{} characters, no control characters",
                    validate::MAX_LABEL
                ),
            );
        }
        let limit = holdfast_platform::validate::page_size(
            &mut violations,
            "page.page_size",
            page.page_size,
            DEFAULT_PAGE,
            MAX_PAGE,
        );
        checked(violations)?;
        let cursor = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let listed = self
            .cache
            .store()
            .list_products_by_category(&request.category, cursor, limit)
            .await
            .map_err(CatalogError::from)?;
        Ok(Response::new(ListProductsResponse {
            products: listed
                .products
                .iter()
                .filter(|p| p.active || request.include_inactive)
                .map(to_wire)
                .collect(),
            page: Some(PageResponse {
                next_page_token: listed.next_cursor.unwrap_or_default(),
            }),
        }))
    }

    async fn search(&self, request: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        crate::search::search(self.options.search.as_ref(), request.into_inner())
            .await
            .map(Response::new)
    }
}
