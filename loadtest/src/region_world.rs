//! The regions a multi-region flash sale loads (`flash-sale --regions`): running regional
//! stacks (`--target na=URL,eu=URL`), or, with `--local`, a world this process starts on
//! loopback: one Apache Kafka broker (from `make deps`) and one `holdfast dev --region R
//! --regions ...` per region, each with its own data dir and embedded redis-server. Only
//! processes started here are stopped, by pid, when the world is dropped.
//!
//! Each region also gets a watcher ([`Watch`]) polling its `GetRegionalAvailability` while
//! the sale runs: whether the world is sold out as that region sees it (what tells a
//! refused buyer to stop) and the age of its views of the other regions (the reconciliation
//! lag). One [`Tracker`] polls every region's `GetReconciliation` through the sale (drift
//! must be 0 at every instant) and after it, until the world settles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use holdfast_proto::inventory::v1::{
    GetReconciliationRequest, GetRegionalAvailabilityRequest, RegionalAvailability, SkuReconciliation,
};
use holdfast_testkit::KafkaBroker;
use tokio::time::Instant;

use crate::mesh::{Mesh, TargetArgs, holdfast_bin, start_dev_with};

/// One region and the connections to it.
pub struct Region {
    /// Its name (`--region`).
    pub name: String,
    /// Its mesh (and the `holdfast dev` behind it, with `--local`).
    pub mesh: Arc<Mesh>,
}

/// Every region of the sale; stops what it started when dropped (regions first, then the
/// broker).
pub struct World {
    /// In `--regions` order.
    pub regions: Vec<Region>,
    /// Where each region is served, `na=http://...,eu=http://...`.
    pub target: String,
    /// The broker `--local` started.
    pub broker: Option<KafkaBroker>,
}

/// Parses `na=URL,eu=URL`: every region of `names` exactly once, nothing else.
pub fn parse_targets(raw: &str, names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut urls: Vec<Option<String>> = vec![None; names.len()];
    for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
        let (region, url) = part
            .split_once('=')
            .with_context(|| format!("--target with --regions is REGION=URL,...; got {part:?}"))?;
        let i = names
            .iter()
            .position(|n| n == region.trim())
            .with_context(|| format!("--target names region {region:?}, not one of --regions"))?;
        anyhow::ensure!(urls[i].is_none(), "--target names region {region} twice");
        urls[i] = Some(url.trim().trim_end_matches('/').to_string());
    }
    names
        .iter()
        .zip(urls)
        .map(|(name, url)| url.with_context(|| format!("--target has no URL for region {name}")))
        .collect()
}

impl World {
    /// Connects to `--target`'s regions, or starts them (`--local`, with `--dev-arg`s passed
    /// to every region).
    pub async fn connect(args: &TargetArgs, names: &[String]) -> anyhow::Result<Self> {
        if !args.local {
            let raw = args.target.as_deref().context("--target or --local")?;
            let mut regions = Vec::new();
            for (name, url) in names.iter().zip(parse_targets(raw, names)?) {
                let one = TargetArgs {
                    target: Some(url),
                    local: false,
                    ..args.clone()
                };
                regions.push(Region {
                    name: name.clone(),
                    mesh: Arc::new(Mesh::connect(&one).await?),
                });
            }
            return Ok(Self::of(regions, None));
        }
        let bin = holdfast_bin(args.holdfast_bin.as_ref())?;
        // Started on this (the main) thread: its kill-with-parent signal is bound to it.
        let broker = KafkaBroker::start().context("starting Apache Kafka (run `make deps`)")?;
        let brokers = broker.bootstrap();
        let list = names.join(",");
        let mut regions = Vec::new();
        for name in names {
            let mut extra = vec!["--region", name, "--regions", &list, "--kafka-brokers", &brokers];
            extra.extend(args.dev_args.iter().map(String::as_str));
            let dev = start_dev_with(&bin, &extra).with_context(|| format!("starting region {name}"))?;
            regions.push(Region {
                name: name.clone(),
                mesh: Arc::new(Mesh::over_dev(dev, args.connections).await?),
            });
        }
        Ok(Self::of(regions, Some(broker)))
    }

    fn of(regions: Vec<Region>, broker: Option<KafkaBroker>) -> Self {
        let target = regions
            .iter()
            .map(|r| format!("{}={}", r.name, r.mesh.endpoint))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            regions,
            target,
            broker,
        }
    }
}

/// `sku` as region `mesh` sees it now.
pub async fn availability(mesh: &Mesh, sku: &str) -> anyhow::Result<RegionalAvailability> {
    let mut answer = mesh
        .inventory(0)
        .get_regional_availability(GetRegionalAvailabilityRequest {
            skus: vec![sku.to_string()],
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetRegionalAvailability {sku}: {s}"))?
        .into_inner();
    answer
        .skus
        .pop()
        .context("GetRegionalAvailability answered no SKU")
}

/// `sku`'s reconciliation as region `mesh` computes it now.
pub async fn reconciliation(mesh: &Mesh, sku: &str) -> anyhow::Result<SkuReconciliation> {
    let mut answer = mesh
        .inventory(0)
        .get_reconciliation(GetReconciliationRequest {
            skus: vec![sku.to_string()],
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetReconciliation {sku}: {s}"))?
        .into_inner();
    answer.skus.pop().context("GetReconciliation answered no SKU")
}

/// What a region's watcher saw while the sale ran.
#[derive(Debug, Default)]
pub struct Watched {
    /// Age of this region's view of each other region, ms, one per poll.
    pub view_ages_ms: Vec<i64>,
    /// Local levels that broke `0 <= reserved <= on_hand`.
    pub broken_levels: Vec<String>,
}

/// How often the watchers and the tracker poll.
const POLL: Duration = Duration::from_millis(200);

/// A region's watcher; [`Watch::stop`] ends it and answers what it saw.
pub struct Watch {
    sold_out: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Watched>,
}

impl Watch {
    /// Starts watching `sku` in `mesh`, a region of a world of `regions` regions.
    pub fn start(mesh: Arc<Mesh>, sku: String, regions: usize) -> Self {
        let sold_out = Arc::new(AtomicBool::new(false));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let flag = sold_out.clone();
        let task = tokio::spawn(async move {
            let mut seen = Watched::default();
            let mut empty_since: Option<Instant> = None;
            let mut every = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = &mut stopped => break,
                }
                let Ok(world) = availability(&mesh, &sku).await else {
                    continue;
                };
                let local = world.local.clone().unwrap_or_default();
                if local.reserved < 0 || local.reserved > local.on_hand {
                    seen.broken_levels
                        .push(format!("on_hand {} reserved {}", local.on_hand, local.reserved));
                }
                seen.view_ages_ms.extend(
                    world
                        .regions
                        .iter()
                        .filter(|r| r.region != local.region)
                        .map(|r| r.age_ms),
                );
                let empty = world.world_available == 0
                    && world.in_flight == 0
                    && world.regions.len() == regions
                    && world.regions.iter().all(|r| !r.stale);
                match (empty, empty_since) {
                    (false, _) => empty_since = None,
                    (true, None) => empty_since = Some(Instant::now()),
                    (true, Some(since)) if since.elapsed() >= Duration::from_millis(600) => {
                        flag.store(true, Ordering::Release);
                    }
                    (true, Some(_)) => {}
                }
            }
            seen
        });
        Self { sold_out, stop, task }
    }

    /// Set once this region saw the world sold out: no unit available anywhere, none in
    /// flight, every region's view fresh, at two polls at least 600 ms apart.
    pub fn sold_out(&self) -> Arc<AtomicBool> {
        self.sold_out.clone()
    }

    /// Stops the watcher; answers what it saw.
    pub async fn stop(self) -> Watched {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// What the tracker saw: every region's reconciliation, polled through the sale and after.
#[derive(Debug, Default)]
pub struct Tracked {
    /// Reconciliations read.
    pub samples: u64,
    /// Those not consistent (drift, a problem), described.
    pub inconsistent: Vec<String>,
    /// Start of the last poll round from which every region showed zero drift, nothing in
    /// flight and sold = the buyers' wins so far (None: never, or not since the last win).
    pub settled_at: Option<Instant>,
    /// Each region's reconciliation at the last round: (region, reconciliation).
    pub last: Vec<(String, holdfast_proto::inventory::v1::SkuReconciliation)>,
}

/// Polls every region's reconciliation of `sku` until told the sale ended, then until the
/// world settles (zero drift, nothing in flight, sold = `won`) or the deadline passes.
pub struct Tracker {
    end: tokio::sync::watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<Tracked>,
}

impl Tracker {
    /// Starts polling `regions` (name, mesh); `won` counts the units buyers won so far.
    pub fn start(
        regions: Vec<(String, Arc<Mesh>)>,
        sku: String,
        won: Arc<std::sync::atomic::AtomicI64>,
    ) -> Self {
        let (end, ended) = tokio::sync::watch::channel(None::<Instant>);
        let task = tokio::spawn(async move {
            let mut seen = Tracked::default();
            let mut every = tokio::time::interval(POLL);
            loop {
                every.tick().await;
                let round = Instant::now();
                let before = won.load(Ordering::Acquire);
                let mut last = Vec::new();
                for (name, mesh) in &regions {
                    if let Ok(report) = reconciliation(mesh, &sku).await {
                        seen.samples += 1;
                        if report.drift != 0 || !report.problems.is_empty() {
                            seen.inconsistent
                                .push(format!("{name}: drift {} {:?}", report.drift, report.problems));
                        }
                        last.push((name.clone(), report));
                    }
                }
                let settled = last.len() == regions.len()
                    && won.load(Ordering::Acquire) == before
                    && last.iter().all(|(_, r)| {
                        r.drift == 0 && r.problems.is_empty() && r.in_flight == 0 && r.sold == before
                    });
                seen.settled_at = if settled {
                    seen.settled_at.or(Some(round))
                } else {
                    None
                };
                seen.last = last;
                let deadline = *ended.borrow();
                if deadline.is_some_and(|d| settled || Instant::now() >= d) {
                    break;
                }
            }
            seen
        });
        Self { end, task }
    }

    /// The sale ended: waits until the world settles or `deadline`; answers what it saw.
    pub async fn finish(self, deadline: Instant) -> Tracked {
        let _ = self.end.send(Some(deadline));
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_every_region_once() {
        let names = vec!["na".to_string(), "eu".to_string()];
        assert_eq!(
            parse_targets("eu=http://b:2/, na=http://a:1", &names).unwrap(),
            vec!["http://a:1", "http://b:2"]
        );
        assert!(parse_targets("na=http://a:1", &names).is_err(), "eu missing");
        assert!(parse_targets("na=x,na=y,eu=z", &names).is_err(), "twice");
        assert!(parse_targets("na=x,eu=z,apac=w", &names).is_err(), "not a region");
        assert!(parse_targets("http://a:1", &names).is_err(), "no region");
    }
}
