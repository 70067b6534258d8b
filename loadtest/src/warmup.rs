//! `--warmup N`: checkouts before the clock starts, so a gate times the sale rather than a
//! process's first requests.
//!
//! A fresh `holdfast dev` on a fresh Cassandra node answered its first checkouts in 2.2-2.8 s
//! and the same checkouts a minute later in 0.1-0.2 s (README, "Flash sale under
//! admission"). The warm-up buys one unit each of a SKU of its own, with customers and keys
//! outside the run's prefix, so no figure, check or audit of the run counts them; what it
//! took is printed and kept in the report.

use std::sync::Mutex;
use std::time::Duration;

use holdfast_proto::inventory::v1::SetStockRequest;
use tokio::time::Instant;

use crate::mesh::Mesh;

/// Checkouts of the warm-up running at once.
const CONCURRENCY: usize = 4;

/// What the warm-up took.
#[derive(Debug, Clone, Default)]
pub struct Warmup {
    /// Checkouts placed.
    pub checkouts: u64,
    /// Wall time of the whole warm-up.
    pub elapsed: Duration,
    /// The slowest checkout.
    pub slowest: Duration,
}

impl Warmup {
    /// The report's `warmup` object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "checkouts": self.checkouts,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "slowest_ms": self.slowest.as_secs_f64() * 1e3,
        })
    }
}

/// The run id the warm-up's customers, keys and SKU are named after: not a prefix match of
/// `run_id`, so the run's audit (customers starting with `run_id`) never sees them.
pub fn run_id(run_id: &str) -> String {
    format!("warmup-{run_id}")
}

/// Stocks `{warmup run id}-FLASH` with `n` units and checks each out once through `buy`
/// (the scenario's own buyer), `CONCURRENCY` at a time. Fails if a checkout is not placed:
/// a mesh that cannot sell before the sale would only make the sale's figures meaningless.
pub async fn checkouts<F, Fut>(
    mesh: &Mesh,
    warmup_id: &str,
    n: u64,
    price_minor: i64,
    buy: F,
) -> anyhow::Result<Warmup>
where
    F: Fn(u64, String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let sku = format!("{warmup_id}-FLASH");
    crate::scenario::upsert_product(
        &mut mesh.catalog(0),
        &sku,
        "Warm-up item",
        price_minor,
        "load/warmup",
    )
    .await?;
    let on_hand = i64::try_from(n).map_err(|_| anyhow::anyhow!("--warmup {n} is too large"))?;
    mesh.inventory(0)
        .set_stock(SetStockRequest {
            sku: sku.clone(),
            on_hand,
            buckets: 1,
        })
        .await
        .map_err(|e| anyhow::anyhow!("SetStock {sku}: {e}"))?;
    let started = Instant::now();
    let slowest = Mutex::new(Duration::ZERO);
    let (buy, sku_ref, slowest_ref) = (&buy, &sku, &slowest);
    crate::scenario::for_each_concurrent(0..n, CONCURRENCY, |i| async move {
        let t = Instant::now();
        buy(i, sku_ref.clone())
            .await
            .map_err(|e| anyhow::anyhow!("warm-up checkout {i} of {sku_ref} was not placed: {e}"))?;
        let took = t.elapsed();
        let mut slowest = slowest_ref.lock().expect("lock");
        *slowest = (*slowest).max(took);
        Ok(())
    })
    .await?;
    let warmup = Warmup {
        checkouts: n,
        elapsed: started.elapsed(),
        slowest: slowest.into_inner().expect("lock"),
    };
    println!(
        "warm-up: {n} checkouts of {sku} placed in {:.1} s (slowest {:.0} ms), not counted in the run",
        warmup.elapsed.as_secs_f64(),
        warmup.slowest.as_secs_f64() * 1e3
    );
    Ok(warmup)
}
