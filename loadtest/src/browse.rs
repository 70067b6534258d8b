//! `holdfast-load browse-mix`: what shoppers do most of the time — about 300 reads to 1 write
//! across availability, product and cart reads, with an occasional AddItem.
//!
//! Reads include free-text searches (`Search` for a product's title words within the browse
//! category: every hit must carry the searched number).
//!
//! Every read is checked against what the run wrote (prices, stock levels, cart lines); at the
//! end browsing must have held nothing and every acknowledged AddItem must be in its cart.
//! `soak` runs this same workload (plus holds and checkouts) at a fixed rate for a duration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_proto::cart::v1::cart_owner::Owner;
use holdfast_proto::cart::v1::{AddItemRequest, CartOwner, GetCartRequest, ItemOutcome};
use holdfast_proto::catalog::v1::{BatchGetProductsRequest, GetProductRequest, SearchRequest};
use holdfast_proto::inventory::v1::{GetAvailabilityRequest, SetStockRequest};

use crate::engine::{self, Sample};
use crate::mesh::Mesh;
use crate::report::{Check, RunReport};
use crate::scenario::{RunArgs, for_each_concurrent, request, run_id, sample_list, splitmix, unix_ms};

/// Flags of the browse workload.
#[derive(Debug, Clone, clap::Args)]
pub struct BrowseArgs {
    /// Products in the catalog, each with stock.
    #[arg(long, default_value_t = 200)]
    pub products: u64,
    /// Shoppers with carts (GetCart reads them, AddItem writes them).
    #[arg(long, default_value_t = 100)]
    pub shoppers: u64,
    /// Reads per write.
    #[arg(long, default_value_t = 300)]
    pub reads_per_write: u64,
}

/// Flags of `browse-mix`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrowseMixArgs {
    /// Target, load shape and output.
    #[command(flatten)]
    pub run: RunArgs,
    /// The workload.
    #[command(flatten)]
    pub browse: BrowseArgs,
    /// Attempts (reads and writes).
    #[arg(long, default_value_t = 20_000)]
    pub attempts: u64,
}

/// The category browse products are listed (and searched) in.
const BROWSE_CATEGORY: &str = "load/browse";

/// Waits until the catalog's search index holds at least `products` browse products
/// (it follows upserts through events, so it lags them a little).
async fn wait_until_searchable(
    mesh: &Mesh,
    products: u64,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout.max(std::time::Duration::from_secs(30));
    loop {
        let reply = mesh
            .catalog(0)
            .search(SearchRequest {
                categories: vec![BROWSE_CATEGORY.into()],
                ..SearchRequest::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("Search: {e}"))?
            .into_inner();
        if reply.total_hits >= products {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the search index holds {} of {products} browse products",
            reply.total_hits
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Units of each browse product in stock.
const STOCK: i64 = 1_000_000;
/// Lines each shopper's cart starts with.
const INITIAL_LINES: u64 = 3;
/// Writes cycle through this many products, so carts stay far below the 100-line limit.
const WRITE_SKUS: u64 = 50;

/// The browse workload of one run: what it wrote, so every read can be checked.
pub struct Browse {
    skus: Vec<String>,
    shoppers: Vec<String>,
    reads_per_write: u64,
    seed: u64,
    timeout: std::time::Duration,
    writes: AtomicU64,
    applied: Vec<AtomicU64>,
    uncertain: Vec<AtomicU64>,
    wrong: Mutex<(u64, Vec<String>)>,
}

fn price_of(index: usize) -> i64 {
    500 + index as i64 * 7
}

fn owner(shopper: &str) -> Option<CartOwner> {
    Some(CartOwner {
        owner: Some(Owner::CustomerId(shopper.to_string())),
    })
}

impl Browse {
    /// Creates the products (priced, stocked) and the shoppers' carts.
    pub async fn setup(
        mesh: &Mesh,
        run_id: &str,
        args: &BrowseArgs,
        run: &RunArgs,
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(args.products >= 10, "--products must be at least 10");
        anyhow::ensure!(args.shoppers > 0, "--shoppers must be positive");
        let skus: Vec<String> = (0..args.products).map(|i| format!("{run_id}-P{i:05}")).collect();
        for_each_concurrent(skus.iter().enumerate(), 8, |(i, sku)| async move {
            crate::scenario::upsert_product(
                &mut mesh.catalog(i as u64),
                sku,
                &format!("Browse product {i}"),
                price_of(i),
                BROWSE_CATEGORY,
            )
            .await?;
            mesh.inventory(i as u64)
                .set_stock(SetStockRequest {
                    sku: sku.clone(),
                    on_hand: STOCK,
                    buckets: 1,
                })
                .await
                .map_err(|e| anyhow::anyhow!("SetStock {sku}: {e}"))?;
            Ok(())
        })
        .await?;
        wait_until_searchable(mesh, args.products, run.timeout).await?;
        let shoppers: Vec<String> = (0..args.shoppers)
            .map(|i| format!("{run_id}-shopper-{i}"))
            .collect();
        for_each_concurrent(shoppers.iter().enumerate(), 16, |(i, shopper)| {
            let skus = &skus;
            async move {
                for k in 0..INITIAL_LINES {
                    let sku = &skus[((i as u64 * 13 + k * 17) % args.products) as usize];
                    let reply = mesh
                        .cart(i as u64)
                        .add_item(AddItemRequest {
                            owner: owner(shopper),
                            sku: sku.clone(),
                            quantity: 1,
                            expected_version: 0,
                        })
                        .await
                        .map_err(|e| anyhow::anyhow!("AddItem {shopper} {sku}: {e}"))?
                        .into_inner();
                    anyhow::ensure!(
                        reply.outcome == ItemOutcome::Applied as i32,
                        "AddItem {shopper} {sku} was not applied"
                    );
                }
                Ok(())
            }
        })
        .await?;
        Ok(Arc::new(Self {
            applied: (0..args.shoppers).map(|_| AtomicU64::new(0)).collect(),
            uncertain: (0..args.shoppers).map(|_| AtomicU64::new(0)).collect(),
            skus,
            shoppers,
            reads_per_write: args.reads_per_write,
            seed: run.seed,
            timeout: run.timeout,
            writes: AtomicU64::new(0),
            wrong: Mutex::new((0, Vec::new())),
        }))
    }

    fn wrong(&self, op: &'static str, what: String) -> Sample {
        let mut wrong = self.wrong.lock().expect("lock");
        wrong.0 += 1;
        if wrong.1.len() < 10 {
            wrong.1.push(format!("{op}: {what}"));
        }
        Sample::wrong(op, "wrong answer")
    }

    fn pick(&self, i: u64, salt: u64) -> usize {
        (splitmix(self.seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ salt) % self.skus.len() as u64) as usize
    }

    /// Attempt `i`: one write every `reads_per_write + 1` attempts, else a read.
    pub async fn call(&self, mesh: &Mesh, i: u64) -> Sample {
        if i % (self.reads_per_write + 1) == self.reads_per_write {
            return self.add_item(mesh, i).await;
        }
        match splitmix(self.seed.wrapping_add(i)) % 5 {
            0 => self.get_availability(mesh, i).await,
            1 => self.get_product(mesh, i).await,
            2 => self.batch_get_products(mesh, i).await,
            3 => self.search(mesh, i).await,
            _ => self.get_cart(mesh, i).await,
        }
    }

    async fn add_item(&self, mesh: &Mesh, i: u64) -> Sample {
        let w = self.writes.fetch_add(1, Ordering::Relaxed);
        let shopper = (w % self.shoppers.len() as u64) as usize;
        let sku =
            &self.skus[((w / self.shoppers.len() as u64) % WRITE_SKUS.min(self.skus.len() as u64)) as usize];
        let reply = mesh
            .cart(i)
            .add_item(request(
                AddItemRequest {
                    owner: owner(&self.shoppers[shopper]),
                    sku: sku.clone(),
                    quantity: 1,
                    expected_version: 0,
                },
                self.timeout,
            ))
            .await;
        match reply {
            Ok(reply) if reply.get_ref().outcome == ItemOutcome::Applied as i32 => {
                self.applied[shopper].fetch_add(1, Ordering::Relaxed);
                Sample::answer("AddItem", "applied")
            }
            Ok(reply) => self.wrong(
                "AddItem",
                format!(
                    "{sku} refused with {} of {STOCK} available",
                    reply.get_ref().available_quantity
                ),
            ),
            Err(status) => {
                // It may or may not have applied.
                self.uncertain[shopper].fetch_add(1, Ordering::Relaxed);
                Sample::error("AddItem", &status)
            }
        }
    }

    async fn search(&self, mesh: &Mesh, i: u64) -> Sample {
        let index = self.pick(i, 7);
        match mesh
            .catalog(i)
            .search(request(
                SearchRequest {
                    query: format!("browse product {index}"),
                    categories: vec![BROWSE_CATEGORY.into()],
                    ..SearchRequest::default()
                },
                self.timeout,
            ))
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                let number = index.to_string();
                // The last word is also a prefix: "12" finds "12", "120"... never "21".
                let bad = reply.total_hits == 0
                    || reply.products.iter().any(|p| {
                        p.category != BROWSE_CATEGORY
                            || !p.title.split_whitespace().any(|w| w.starts_with(&number))
                    });
                if bad {
                    self.wrong(
                        "Search",
                        format!(
                            "{} hits for {number}: {:?}",
                            reply.total_hits,
                            reply.products.first()
                        ),
                    )
                } else {
                    Sample::answer("Search", "ok")
                }
            }
            Err(status) => Sample::error("Search", &status),
        }
    }

    async fn get_availability(&self, mesh: &Mesh, i: u64) -> Sample {
        let skus: Vec<String> = (0..5).map(|k| self.skus[self.pick(i, k)].clone()).collect();
        match mesh
            .inventory(i)
            .get_availability(request(
                GetAvailabilityRequest { skus: skus.clone() },
                self.timeout,
            ))
            .await
        {
            Ok(reply) => {
                let levels = reply.into_inner().levels;
                let bad = levels.len() != skus.len()
                    || levels.iter().zip(&skus).any(|(l, sku)| {
                        &l.sku != sku || l.on_hand != STOCK || l.reserved != 0 || l.available != STOCK
                    });
                if bad {
                    self.wrong("GetAvailability", format!("{levels:?} for {skus:?}"))
                } else {
                    Sample::answer("GetAvailability", "ok")
                }
            }
            Err(status) => Sample::error("GetAvailability", &status),
        }
    }

    async fn get_product(&self, mesh: &Mesh, i: u64) -> Sample {
        let index = self.pick(i, 99);
        match mesh
            .catalog(i)
            .get_product(request(
                GetProductRequest {
                    sku: self.skus[index].clone(),
                },
                self.timeout,
            ))
            .await
        {
            Ok(reply) => {
                let price = reply
                    .into_inner()
                    .product
                    .and_then(|p| p.price)
                    .map(|m| m.amount_minor);
                if price == Some(price_of(index)) {
                    Sample::answer("GetProduct", "ok")
                } else {
                    self.wrong(
                        "GetProduct",
                        format!(
                            "{} priced {price:?}, expected {}",
                            self.skus[index],
                            price_of(index)
                        ),
                    )
                }
            }
            Err(status) => Sample::error("GetProduct", &status),
        }
    }

    async fn batch_get_products(&self, mesh: &Mesh, i: u64) -> Sample {
        let indexes: Vec<usize> = (0..10).map(|k| self.pick(i, 100 + k)).collect();
        let skus: Vec<String> = indexes.iter().map(|&k| self.skus[k].clone()).collect();
        match mesh
            .catalog(i)
            .batch_get_products(request(
                BatchGetProductsRequest { skus: skus.clone() },
                self.timeout,
            ))
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                let bad = !reply.missing_skus.is_empty()
                    || indexes.iter().any(|&k| {
                        !reply.products.iter().any(|p| {
                            p.sku == self.skus[k]
                                && p.price.as_ref().map(|m| m.amount_minor) == Some(price_of(k))
                        })
                    });
                if bad {
                    self.wrong(
                        "BatchGetProducts",
                        format!(
                            "{} products, missing {:?}",
                            reply.products.len(),
                            reply.missing_skus
                        ),
                    )
                } else {
                    Sample::answer("BatchGetProducts", "ok")
                }
            }
            Err(status) => Sample::error("BatchGetProducts", &status),
        }
    }

    async fn get_cart(&self, mesh: &Mesh, i: u64) -> Sample {
        let shopper = &self.shoppers[(splitmix(i ^ 0x5eed) % self.shoppers.len() as u64) as usize];
        match mesh
            .cart(i)
            .get_cart(request(
                GetCartRequest {
                    owner: owner(shopper),
                },
                self.timeout,
            ))
            .await
        {
            Ok(reply) => {
                let lines = reply.into_inner().cart.map_or(0, |c| c.lines.len());
                if lines as u64 >= INITIAL_LINES.min(self.skus.len() as u64) {
                    Sample::answer("GetCart", "ok")
                } else {
                    self.wrong("GetCart", format!("{shopper} has {lines} lines"))
                }
            }
            Err(status) => Sample::error("GetCart", &status),
        }
    }

    /// The checks: reads consistent, stock untouched, no acknowledged cart write lost.
    pub async fn audit(&self, mesh: &Mesh) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        let (wrong, examples) = self.wrong.lock().expect("lock").clone();
        checks.push(Check::new(
            "reads-consistent",
            "every read answered what the run wrote (prices, stock levels, cart lines)",
            wrong == 0,
            if wrong == 0 {
                "no wrong answer".to_string()
            } else {
                format!("{wrong} wrong answers: {}", sample_list(&examples, 3))
            },
        ));
        let levels = crate::audit::availability(mesh, &self.skus).await?;
        let touched: Vec<String> = levels
            .iter()
            .filter(|l| l.on_hand != STOCK || l.reserved != 0 || l.sold != 0)
            .map(|l| {
                format!(
                    "{} on_hand {} reserved {} sold {}",
                    l.sku, l.on_hand, l.reserved, l.sold
                )
            })
            .collect();
        checks.push(Check::new(
            "stock-untouched",
            "browsing and carts hold and sell nothing",
            touched.is_empty() && levels.len() == self.skus.len(),
            if touched.is_empty() {
                format!("{} SKUs at on_hand {STOCK}, reserved 0, sold 0", levels.len())
            } else {
                format!("{} SKUs changed: {}", touched.len(), sample_list(&touched, 3))
            },
        ));
        let lost = std::sync::Mutex::new(Vec::new());
        for_each_concurrent(self.shoppers.iter().enumerate(), 16, |(i, shopper)| {
            let lost = &lost;
            async move {
                let cart = mesh
                    .cart(i as u64)
                    .get_cart(GetCartRequest {
                        owner: owner(shopper),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("GetCart {shopper}: {e}"))?
                    .into_inner()
                    .cart
                    .unwrap_or_default();
                let units: i64 = cart.lines.iter().map(|l| l.quantity).sum();
                let applied = INITIAL_LINES as i64 + self.applied[i].load(Ordering::Relaxed) as i64;
                let maybe = self.uncertain[i].load(Ordering::Relaxed) as i64;
                if units < applied || units > applied + maybe {
                    lost.lock().expect("lock").push(format!(
                        "{shopper}: {units} units, {applied} acknowledged (+{maybe} unknown)"
                    ));
                }
                Ok(())
            }
        })
        .await?;
        let lost = lost.into_inner().expect("lock");
        let writes = self.writes.load(Ordering::Relaxed);
        checks.push(Check::new(
            "no-lost-cart-writes",
            "every acknowledged AddItem is in its cart, and nothing else",
            lost.is_empty(),
            if lost.is_empty() {
                format!(
                    "{} carts hold exactly their {} acknowledged adds",
                    self.shoppers.len(),
                    writes
                )
            } else {
                format!("{} carts differ: {}", lost.len(), sample_list(&lost, 3))
            },
        ));
        Ok(checks)
    }
}

/// Runs `browse-mix`; answers the exit code.
pub async fn run(args: BrowseMixArgs) -> anyhow::Result<i32> {
    crate::scenario::check_rate(&args.run)?;
    let mesh = Arc::new(Mesh::connect(&args.run.target).await?);
    let run_id = run_id();
    let started_ms = unix_ms();
    println!(
        "browse-mix {run_id}: {} attempts, {} reads per write, {} products, {} shoppers, against {}",
        args.attempts, args.browse.reads_per_write, args.browse.products, args.browse.shoppers, mesh.endpoint
    );
    let browse = Browse::setup(&mesh, &run_id, &args.browse, &args.run).await?;
    let plan = args.run.plan("browse-mix", Some(args.attempts), None, 1_000.0);
    let result = {
        let (mesh, browse) = (mesh.clone(), browse.clone());
        engine::run(&plan, move |i| {
            let (mesh, browse) = (mesh.clone(), browse.clone());
            async move { browse.call(&mesh, i).await }
        })
        .await
    };
    let settle = std::time::Instant::now();
    let checks = browse.audit(&mesh).await?;
    let report = RunReport::new(
        "browse-mix",
        run_id,
        mesh.endpoint.clone(),
        args.run.target.local,
        started_ms,
        serde_json::json!({
            "attempts": args.attempts,
            "products": args.browse.products,
            "shoppers": args.browse.shoppers,
            "reads_per_write": args.browse.reads_per_write,
        }),
        &result,
        checks,
        &args.run.slos,
        settle.elapsed().as_secs_f64(),
    );
    args.run.finish(&report)
}
