//! CatalogService against a real redis-server and a real SQLite store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fred::prelude::{HashesInterface, KeysInterface};
use futures::future::join_all;
use holdfast_platform::{GrpcServer, ServerOptions, redis};
use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::*;
use holdfast_proto::common::v1::{Money, PageRequest};
use holdfast_store::{Product as StoredProduct, ProductPage, ProductStore, SqliteStore, StoreError};
use holdfast_testkit::{RedisServer, SpawnedServer, TempDir};
use tonic::Code;
use tonic::transport::Channel;

/// The real SQLite store, counting single-product reads (to see the miss storm collapse).
#[derive(Clone)]
struct CountingStore {
    inner: SqliteStore,
    reads: Arc<AtomicUsize>,
}

impl ProductStore for CountingStore {
    async fn upsert_product_announced(
        &self,
        product: StoredProduct,
        expected: Option<u64>,
        outbox: Vec<holdfast_store::OutboxMessage>,
    ) -> Result<StoredProduct, StoreError> {
        self.inner
            .upsert_product_announced(product, expected, outbox)
            .await
    }
    async fn scan_products(&self, after: Option<&str>, limit: u32) -> Result<Vec<StoredProduct>, StoreError> {
        self.inner.scan_products(after, limit).await
    }
    async fn get_product(&self, sku: &str) -> Result<Option<StoredProduct>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_product(sku).await
    }
    async fn get_products(&self, skus: &[String]) -> Result<Vec<StoredProduct>, StoreError> {
        self.inner.get_products(skus).await
    }
    async fn list_products_by_category(
        &self,
        category: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        self.inner
            .list_products_by_category(category, cursor, limit)
            .await
    }
}

struct Fixture {
    redis: RedisServer,
    store: CountingStore,
    servers: Vec<SpawnedServer>,
    _dir: TempDir,
}

impl Fixture {
    /// Two catalog instances sharing one Redis and one store, like two replicas.
    async fn start() -> Self {
        let dir = TempDir::new("catalog").expect("dir");
        let store = CountingStore {
            inner: SqliteStore::open(dir.path().join("catalog.db"))
                .await
                .expect("sqlite"),
            reads: Arc::default(),
        };
        let redis_server = RedisServer::start().expect("redis");
        let mut servers = Vec::new();
        for _ in 0..2 {
            let pool = redis::connect(&redis_server.url(), 2).await.expect("connect");
            let service = holdfast_catalog::start(pool, store.clone())
                .await
                .expect("catalog");
            let mut grpc = GrpcServer::new(ServerOptions::default());
            grpc.add_service("catalog", service);
            servers.push(SpawnedServer::start(grpc).await.expect("server"));
        }
        Self {
            redis: redis_server,
            store,
            servers,
            _dir: dir,
        }
    }

    async fn client(&self, replica: usize) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.servers[replica].channel().await.expect("connect"))
    }
}

fn product(sku: &str, price: i64) -> Product {
    Product {
        sku: sku.into(),
        title: format!("{sku} title"),
        price: Some(Money {
            amount_minor: price,
            currency: "EUR".into(),
        }),
        category: "kitchen".into(),
        brand: "Acme".into(),
        active: true,
        ..Default::default()
    }
}

async fn upsert(
    client: &mut CatalogServiceClient<Channel>,
    p: Product,
    expected: u64,
) -> Result<Product, tonic::Status> {
    client
        .upsert_product(UpsertProductRequest {
            product: Some(p),
            expected_version: expected,
        })
        .await
        .map(|r| r.into_inner().product.expect("product"))
}

async fn get(client: &mut CatalogServiceClient<Channel>, sku: &str) -> Result<Product, tonic::Status> {
    client
        .get_product(GetProductRequest { sku: sku.into() })
        .await
        .map(|r| r.into_inner().product.expect("product"))
}

#[tokio::test]
async fn upsert_then_get_and_unknown_is_not_found() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    let created = upsert(&mut c, product("MUG", 1299), 0).await.expect("upsert");
    assert_eq!(created.version, 1);
    let got = get(&mut c, "MUG").await.expect("get");
    assert_eq!(
        (got.title.as_str(), got.price.expect("price").amount_minor),
        ("MUG title", 1299)
    );
    assert_eq!(
        get(&mut c, "NOPE").await.expect_err("unknown").code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn stale_expected_version_is_aborted_and_identical_upsert_changes_nothing() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    let v1 = upsert(&mut c, product("MUG", 1299), 0).await.expect("create");
    let v2 = upsert(&mut c, product("MUG", 1499), v1.version)
        .await
        .expect("update");
    assert_eq!(v2.version, 2);
    let stale = upsert(&mut c, product("MUG", 999), v1.version)
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(
        get(&mut c, "MUG")
            .await
            .expect("get")
            .price
            .expect("price")
            .amount_minor,
        1499
    );
    let again = upsert(&mut c, product("MUG", 1499), 0)
        .await
        .expect("same content");
    assert_eq!(
        (again.version, again.updated_at_unix_ms),
        (v2.version, v2.updated_at_unix_ms)
    );
}

#[tokio::test]
async fn a_price_change_is_seen_at_once_by_every_replica() {
    let fx = Fixture::start().await;
    let redis = fred_client(&fx).await;
    let started: Option<String> = redis.get(holdfast_catalog::cache::EPOCH_KEY).await.expect("get");
    let started = started.expect("a started catalog has an epoch, before any upsert");
    let (mut a, mut b) = (fx.client(0).await, fx.client(1).await);
    upsert(&mut a, product("MUG", 1299), 0).await.expect("create");
    assert_eq!(
        get(&mut b, "MUG")
            .await
            .expect("warm b")
            .price
            .expect("p")
            .amount_minor,
        1299
    );
    let cached: Option<String> = redis.hget("cat:{MUG}", "v").await.expect("hget");
    assert_eq!(cached.as_deref(), Some("1"), "the read filled the shared cache");
    let epoch: Option<String> = redis.get(holdfast_catalog::cache::EPOCH_KEY).await.expect("get");
    let epoch = epoch.expect("an epoch");
    assert_ne!(epoch, started, "the create replaced the catalog's epoch");

    upsert(&mut a, product("MUG", 1599), 0)
        .await
        .expect("price change");
    // The cart's kept products are read again once the epoch changes (docs/cart.md).
    let changed: Option<String> = redis.get(holdfast_catalog::cache::EPOCH_KEY).await.expect("get");
    assert!(
        changed.as_ref().is_some_and(|changed| *changed != epoch),
        "the price change replaced the catalog's epoch: {epoch} then {changed:?}"
    );
    assert_eq!(
        get(&mut b, "MUG")
            .await
            .expect("b")
            .price
            .expect("p")
            .amount_minor,
        1599,
        "no stale price"
    );
    assert_eq!(
        get(&mut a, "MUG")
            .await
            .expect("a")
            .price
            .expect("p")
            .amount_minor,
        1599
    );
}

#[tokio::test]
async fn a_slow_reader_cannot_put_an_old_price_back() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    let old = upsert(&mut c, product("MUG", 1299), 0).await.expect("create");
    upsert(&mut c, product("MUG", 1599), 0)
        .await
        .expect("price change");
    // A reader that loaded version 1 before the change now tries to fill the cache with it.
    let pool = redis::connect(&fx.redis.url(), 1).await.expect("pool");
    let stale = StoredProduct {
        version: old.version,
        ..holdfast_catalog::convert::from_wire(product("MUG", 1299))
    };
    // The fill script is what any reader runs after a store read.
    let fill = holdfast_catalog::cache::scripts::all()[0];
    let payload = prost::Message::encode_to_vec(&holdfast_catalog::convert::to_wire(&stale));
    let filled: i64 = fill
        .run(
            pool.next(),
            vec!["cat:{MUG}".into()],
            vec![
                1.into(),
                payload.as_slice().into(),
                300_000.into(),
                "1|1299|EUR".into(),
            ],
        )
        .await
        .expect("fill");
    assert_eq!(filled, 0, "the tombstone of version 2 refuses version 1");
    assert_eq!(
        get(&mut c, "MUG")
            .await
            .expect("get")
            .price
            .expect("p")
            .amount_minor,
        1599
    );
}

#[tokio::test]
async fn a_miss_storm_on_one_sku_is_one_store_read() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    upsert(&mut c, product("HOT", 100), 0).await.expect("create");
    let before = fx.store.reads.load(Ordering::SeqCst);
    let answers = join_all((0..100).map(|_| {
        let mut c = c.clone();
        async move { get(&mut c, "HOT").await }
    }))
    .await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(
        fx.store.reads.load(Ordering::SeqCst) - before,
        1,
        "100 concurrent misses, one store read"
    );
}

#[tokio::test]
async fn batch_get_returns_found_in_order_and_lists_missing() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    for (sku, price) in [("A", 1), ("B", 2), ("C", 3)] {
        upsert(&mut c, product(sku, price), 0).await.expect("upsert");
    }
    get(&mut c, "B").await.expect("warm B only");
    let reply = c
        .batch_get_products(BatchGetProductsRequest {
            skus: vec!["C".into(), "X".into(), "B".into(), "A".into()],
        })
        .await
        .expect("batch")
        .into_inner();
    let skus: Vec<&str> = reply.products.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus, ["C", "B", "A"]);
    assert_eq!(reply.missing_skus, ["X"]);
}

#[tokio::test]
async fn list_pages_through_a_category_once_and_hides_inactive() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    for i in 0..7 {
        let mut p = product(&format!("K{i}"), 100);
        p.active = i != 3;
        upsert(&mut c, p, 0).await.expect("upsert");
    }
    let mut other = product("Z-OTHER", 1);
    other.category = "garden".into();
    upsert(&mut c, other, 0).await.expect("other category");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let reply = c
            .list_products(ListProductsRequest {
                category: "kitchen".into(),
                include_inactive: false,
                page: Some(PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        seen.extend(reply.products.into_iter().map(|p| p.sku));
        token = reply.page.expect("page").next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["K0", "K1", "K2", "K4", "K5", "K6"]);

    let bad = c
        .list_products(ListProductsRequest {
            category: "garden".into(),
            include_inactive: false,
            page: Some(PageRequest {
                page_size: 2,
                page_token: "not-a-token".into(),
            }),
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let no_category = c
        .list_products(ListProductsRequest {
            category: String::new(),
            include_inactive: false,
            page: None,
        })
        .await
        .expect_err("category is required");
    assert_eq!(no_category.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_products_are_invalid_argument_and_store_nothing() {
    let fx = Fixture::start().await;
    let mut c = fx.client(0).await;
    let mut p = product("bad sku", -5);
    p.price = Some(Money {
        amount_minor: -5,
        currency: "euro".into(),
    });
    let status = upsert(&mut c, p, 0).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    use tonic_types::StatusExt;
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "product.sku",
            "product.price.amount_minor",
            "product.price.currency"
        ]
    );
    assert!(fx.store.get_product("bad sku").await.expect("read").is_none());
}

async fn fred_client(fx: &Fixture) -> fred::prelude::Client {
    let pool = redis::connect(&fx.redis.url(), 1).await.expect("pool");
    pool.next().clone()
}
