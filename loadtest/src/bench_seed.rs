//! The catalog the cart and checkout benchmarks buy from, on a plain (token-less) channel.

use holdfast_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use holdfast_proto::catalog::v1::{Product, UpsertProductRequest};
use holdfast_proto::common::v1::Money;
use holdfast_proto::inventory::v1::SetStockRequest;
use holdfast_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;

/// What to seed: product `i` of `0..count` is SKU `sku(i)`, titled `"{title} {i}"`, priced
/// `price_base + i` euro cents, with a billion units in one bucket.
pub struct Products<'a> {
    pub count: u64,
    pub sku: fn(u64) -> String,
    pub title: &'a str,
    pub price_base: i64,
}

/// Creates the products and their stock through the catalog and inventory RPCs.
pub async fn seed(channel: &Channel, products: &Products<'_>) -> anyhow::Result<()> {
    let mut catalog = CatalogServiceClient::new(channel.clone());
    let mut inventory = InventoryServiceClient::new(channel.clone());
    for i in 0..products.count {
        let sku = (products.sku)(i);
        catalog
            .upsert_product(UpsertProductRequest {
                product: Some(Product {
                    sku: sku.clone(),
                    title: format!("{} {i}", products.title),
                    price: Some(Money {
                        amount_minor: products.price_base + i as i64,
                        currency: "EUR".into(),
                    }),
                    category: "bench".into(),
                    active: true,
                    ..Default::default()
                }),
                expected_version: 0,
            })
            .await?;
        inventory
            .set_stock(SetStockRequest {
                sku,
                on_hand: 1_000_000_000,
                buckets: 1,
            })
            .await?;
    }
    Ok(())
}
