//! The background work of a region: the region outbox relay (and the re-drive of debits
//! not acknowledged), the snapshot publisher, the requester (asks for units when low) and
//! the reconciler loop (metrics, and crediting here any transfer to this region that the
//! snapshots show debited but not credited). Each is safe on many replicas: every effect is
//! idempotent by id.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use fred::prelude::{HashesInterface, StreamsInterface, Value};
use holdfast_platform::clock::now_ms;
use holdfast_platform::events::Event;
use holdfast_proto::events::v1::{
    GlobalSkuPlaced, RegionSnapshot, SnapshotTransfer, TransferCredited, TransferDebited, region_event,
};
use holdfast_proto::inventory::v1::{GetReconciliationResponse, RegionAvailability, SkuReconciliation};
use prost::Message;

use super::flow::to_event;
use super::keys::RegionKeys;
use super::scripts::{self, Ledger, LedgerTransfer};
use super::{Regions, audit, metrics, policy, reconciliation_topic, transfers_topic};
use crate::error::InventoryError;

/// Outbox entries published per round trip.
const RELAY_BATCH: u64 = 200;
/// Fewest seconds between two warnings that a region running low cannot hear any other.
const BLIND_WARNING_EVERY: Duration = Duration::from_secs(10);

impl Regions {
    /// Publishes the region outbox when woken (and every 250 ms), and re-drives debits not
    /// acknowledged within `redrive_after` (and forced debits of operator moves a source back
    /// alive has not applied).
    pub async fn run_relay(self) {
        let mut last_redrive = Instant::now();
        loop {
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let skus = match self.skus().await {
                Ok(skus) => skus,
                Err(error) => {
                    tracing::warn!(%error, "region relay: listing skus failed");
                    continue;
                }
            };
            let redrive = last_redrive.elapsed() >= self.config().redrive_after / 2;
            for sku in &skus {
                if let Err(error) = self.drain(sku).await {
                    tracing::warn!(%error, %sku, "region outbox drain failed; retried");
                }
                if redrive && let Err(error) = self.redrive(sku).await {
                    tracing::warn!(%error, %sku, "transfer re-drive failed; retried");
                }
                if redrive && let Err(error) = self.redrive_moves(sku).await {
                    tracing::warn!(%error, %sku, "forced debit re-drive failed; retried");
                }
            }
            if redrive {
                last_redrive = Instant::now();
            }
        }
    }

    /// Publishes every entry of `sku`'s region outbox, then deletes what the bus took.
    pub async fn drain(&self, sku: &str) -> Result<usize, InventoryError> {
        let keys = RegionKeys::new(sku);
        let client = self.stock().client();
        let mut published = 0;
        loop {
            let entries: Value = client.xrange(keys.outbox(), "-", "+", Some(RELAY_BATCH)).await?;
            let entries = parse_entries(entries);
            if entries.is_empty() {
                return Ok(published);
            }
            let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
            let events: Vec<Event> = entries
                .iter()
                .flat_map(|(id, fields)| self.outbox_event(sku, id, fields))
                .collect();
            published += events.len();
            self.bus()
                .publish(events)
                .await
                .map_err(|e| InventoryError::Store(format!("publish region outbox: {e}")))?;
            let _: i64 = client.xdel(keys.outbox(), ids).await?;
        }
    }

    fn outbox_event(&self, sku: &str, id: &str, f: &HashMap<String, String>) -> Vec<Event> {
        let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let text = |k: &str| f.get(k).cloned().unwrap_or_default();
        let me = self.region().to_string();
        let event = match text("type").as_str() {
            "placed" => region_event::Event::Placed(GlobalSkuPlaced {
                sku: sku.to_string(),
                home_region: text("home"),
                global_total: int("total"),
                placement_id: text("placement_id"),
                allocations: parse_split(&text("allocations")),
            }),
            "debited" => region_event::Event::Debited(TransferDebited {
                transfer_id: text("transfer_id"),
                sku: sku.to_string(),
                from_region: me.clone(),
                to_region: text("to"),
                units: int("units"),
                debited_at_unix_ms: int("at"),
            }),
            "credited" => region_event::Event::Credited(TransferCredited {
                transfer_id: text("transfer_id"),
                sku: sku.to_string(),
                from_region: text("from"),
                to_region: me.clone(),
                units: int("units"),
                credited_at_unix_ms: int("at"),
                debited_at_unix_ms: int("debited_at"),
            }),
            "moved" => return self.moved_events(sku, id, f),
            other => {
                tracing::error!(%sku, kind = %other, "unknown region outbox entry dropped");
                return vec![];
            }
        };
        vec![to_event(
            &me,
            transfers_topic(&me),
            sku,
            format!("rg/{me}/{sku}/{id}"),
            event,
        )]
    }

    /// Publishes again every debit of `sku` not acknowledged within `redrive_after`.
    pub async fn redrive(&self, sku: &str) -> Result<usize, InventoryError> {
        let keys = RegionKeys::new(sku);
        let client = self.stock().client();
        let out: HashMap<String, String> = client.hgetall(keys.transfers_out()).await?;
        if out.is_empty() {
            return Ok(0);
        }
        let acked: HashMap<String, String> = client.hgetall(keys.acknowledged()).await?;
        let cutoff = now_ms() - i64::try_from(self.config().redrive_after.as_millis()).unwrap_or(i64::MAX);
        let me = self.region().to_string();
        let events: Vec<Event> = out
            .iter()
            .filter(|(id, _)| !acked.contains_key(*id))
            .filter_map(|(id, recorded)| scripts::parse_out(id, recorded))
            .filter(|t| t.debited_at < cutoff)
            .map(|t| {
                to_event(
                    &me,
                    transfers_topic(&me),
                    sku,
                    format!("rd/{me}/{}/{}", t.id, now_ms()),
                    region_event::Event::Debited(debit_of(sku, &me, &t)),
                )
            })
            .collect();
        let count = events.len();
        if count > 0 {
            tracing::info!(%sku, count, "re-driving unacknowledged transfers");
            self.bus()
                .publish(events)
                .await
                .map_err(|e| InventoryError::Store(format!("publish re-drive: {e}")))?;
        }
        Ok(count)
    }

    /// Reads this region's ledger of `sku` and stores it as this region's view.
    pub async fn take_snapshot(&self, sku: &str) -> Result<RegionSnapshot, InventoryError> {
        let keys = RegionKeys::new(sku);
        let ledger = scripts::snapshot(self.stock().client(), &keys).await?;
        let snapshot = to_snapshot(sku, self.region(), &ledger);
        let _: i64 = self
            .stock()
            .client()
            .hset(keys.views(), (self.region(), snapshot.encode_to_vec()))
            .await?;
        Ok(snapshot)
    }

    /// Publishes a snapshot of every region SKU every `snapshot_every`.
    pub async fn run_snapshots(self) {
        let mut tick = tokio::time::interval(self.config().snapshot_every);
        loop {
            tick.tick().await;
            if let Err(error) = self.publish_snapshots().await {
                tracing::warn!(%error, "region snapshot round failed");
            }
        }
    }

    /// One snapshot round.
    pub async fn publish_snapshots(&self) -> Result<usize, InventoryError> {
        let mut events = Vec::new();
        for sku in self.skus().await? {
            let snapshot = self.take_snapshot(&sku).await?;
            if snapshot.scope == 0 {
                continue;
            }
            let id = format!("sn/{}/{sku}/{}", self.region(), snapshot.sequence);
            events.push(to_event(
                self.region(),
                reconciliation_topic(self.region()),
                &sku,
                id,
                region_event::Event::Snapshot(snapshot),
            ));
        }
        let count = events.len();
        if count > 0 {
            self.bus()
                .publish(events)
                .await
                .map_err(|e| InventoryError::Store(format!("publish snapshots: {e}")))?;
        }
        Ok(count)
    }

    /// Asks for units of global SKUs running low here while there is demand.
    pub async fn run_requester(self) {
        let mut tick = tokio::time::interval(self.config().request_every);
        let mut sold_seen: HashMap<String, (i64, Instant)> = HashMap::new();
        let mut last_warning: Option<Instant> = None;
        loop {
            tick.tick().await;
            let skus = match self.skus().await {
                Ok(skus) => skus,
                Err(_) => continue,
            };
            for sku in skus {
                let quiet = last_warning.is_some_and(|at| at.elapsed() < BLIND_WARNING_EVERY);
                match self.ask_if_low(&sku, &mut sold_seen).await {
                    Ok(Some(blind)) if !quiet => {
                        last_warning = Some(Instant::now());
                        tracing::warn!(
                            %sku,
                            views = %blind,
                            "running low with demand, but no other region's view is fresh enough to \
                             ask: is this region's consumer of the other regions' topics behind?"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, %sku, "transfer request skipped"),
                }
            }
        }
    }

    /// Asks for units of `sku` if it runs low here with demand. Answers, when it should ask
    /// but every other region's view is stale or missing, those views' ages (the region
    /// cannot hear the others: nothing is asked, and it says so).
    async fn ask_if_low(
        &self,
        sku: &str,
        sold_seen: &mut HashMap<String, (i64, Instant)>,
    ) -> Result<Option<String>, InventoryError> {
        let views = self.views(sku).await?;
        let Some(mine) = views.get(self.region()) else {
            return Ok(None);
        };
        if mine.scope != audit::SCOPE_GLOBAL {
            return Ok(None);
        }
        let level = self.stock().level(sku).await?;
        let (available, sold) = (level.levels.available(), level.levels.sold);
        let selling = match sold_seen.get(sku) {
            Some((before, at)) => sold > *before || at.elapsed() < self.config().ask_timeout * 3,
            None => false,
        };
        if sold_seen.get(sku).is_none_or(|(before, _)| sold > *before) {
            sold_seen.insert(sku.to_string(), (sold, Instant::now()));
        }
        if available > policy::low_water(mine.allocation) || !(selling || self.recently_short(sku)) {
            return Ok(None);
        }
        {
            let asked = self
                .inner
                .asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked
                .get(sku)
                .is_some_and(|(_, at)| at.elapsed() < self.config().ask_timeout)
            {
                return Ok(None);
            }
        }
        let now = now_ms();
        let stale = i64::try_from(self.config().stale_after.as_millis()).unwrap_or(i64::MAX);
        let figures: Vec<_> = views
            .values()
            .map(|s| audit::region_figures(s, now, stale))
            .collect();
        let Some((giver, units)) = policy::choose_giver(self.region(), &figures) else {
            return Ok(blind_to_peers(self.config().peers(), &figures));
        };
        let id = self.request(sku, &giver, units).await?;
        tracing::debug!(%sku, %giver, units, %id, "asked for units");
        self.inner
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sku.to_string(), (id, Instant::now()));
        Ok(None)
    }

    /// Reconciles `skus` (empty: every region SKU) from the latest snapshots, this region's
    /// taken now.
    pub async fn reconciliation(&self, skus: &[String]) -> Result<GetReconciliationResponse, InventoryError> {
        let skus = if skus.is_empty() {
            self.skus().await?
        } else {
            skus.to_vec()
        };
        let stale = i64::try_from(self.config().stale_after.as_millis()).unwrap_or(i64::MAX);
        let mut response = GetReconciliationResponse {
            consistent: true,
            ..GetReconciliationResponse::default()
        };
        for sku in skus {
            self.take_snapshot(&sku).await?;
            let views = self.views(&sku).await?;
            let report = audit::reconcile(&sku, &self.config().regions, &views, now_ms(), stale);
            response.drift_units += report.drift.abs();
            response.consistent &= report.drift == 0 && report.problems.is_empty();
            response.skus.push(report);
        }
        Ok(response)
    }

    /// Reconciles every `every`: metrics, and credits here what the snapshots show debited
    /// to this region and not credited for longer than `redrive_after` (a lost event).
    pub async fn run_reconciler(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.reconciliation(&[]).await {
                Ok(report) => {
                    self.export(&report.skus);
                    for sku in &report.skus {
                        if let Err(error) = self.redrive_to_me(sku).await {
                            tracing::warn!(%error, sku = %sku.sku, "re-drive of a transfer here failed");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "reconciliation failed"),
            }
        }
    }

    fn export(&self, skus: &[SkuReconciliation]) {
        let drift = skus.iter().map(|s| s.drift.abs()).sum();
        let in_flight = skus.iter().map(|s| s.in_flight).sum();
        let oldest = skus.iter().map(|s| s.oldest_in_flight_ms).max().unwrap_or(0);
        let mut ages: BTreeMap<String, i64> = BTreeMap::new();
        for sku in skus {
            for region in &sku.regions {
                let age = ages.entry(region.region.clone()).or_insert(i64::MAX);
                *age = (*age).min(region.age_ms);
            }
        }
        metrics::reconciled(drift, in_flight, oldest, &ages.into_iter().collect::<Vec<_>>());
    }

    async fn redrive_to_me(&self, sku: &SkuReconciliation) -> Result<(), InventoryError> {
        let cutoff = now_ms() - i64::try_from(self.config().redrive_after.as_millis()).unwrap_or(i64::MAX);
        for t in &sku.in_flight_transfers {
            if t.to_region == self.region() && t.debited_at_unix_ms < cutoff {
                let fresh = self
                    .credit(&TransferDebited {
                        transfer_id: t.transfer_id.clone(),
                        sku: sku.sku.clone(),
                        from_region: t.from_region.clone(),
                        to_region: t.to_region.clone(),
                        units: t.units,
                        debited_at_unix_ms: t.debited_at_unix_ms,
                    })
                    .await?;
                if fresh {
                    tracing::warn!(sku = %sku.sku, id = %t.transfer_id, "reconciler credited a transfer whose debit event never arrived");
                }
            }
        }
        Ok(())
    }
}

/// When no other region's view is fresh (so none can be asked): each peer and the age of
/// its view (`eu 7312 ms`, `eu never`). `None` when some peer's view is fresh (it simply has
/// nothing idle, so nothing is asked and nothing is wrong).
fn blind_to_peers<'a>(
    peers: impl Iterator<Item = &'a String>,
    figures: &[RegionAvailability],
) -> Option<String> {
    let mut ages = Vec::new();
    for peer in peers {
        match figures.iter().find(|f| f.region == *peer) {
            Some(view) if !view.stale => return None,
            Some(view) => ages.push(format!("{peer} {} ms", view.age_ms)),
            None => ages.push(format!("{peer} never")),
        }
    }
    (!ages.is_empty()).then(|| ages.join(", "))
}

fn debit_of(sku: &str, from: &str, t: &LedgerTransfer) -> TransferDebited {
    TransferDebited {
        transfer_id: t.id.clone(),
        sku: sku.to_string(),
        from_region: from.to_string(),
        to_region: t.region.clone(),
        units: t.units,
        debited_at_unix_ms: t.debited_at,
    }
}

/// A ledger as the snapshot event carries it.
pub fn to_snapshot(sku: &str, region: &str, ledger: &Ledger) -> RegionSnapshot {
    let transfers = |list: &[LedgerTransfer]| -> Vec<SnapshotTransfer> {
        let mut out: Vec<SnapshotTransfer> = list
            .iter()
            .map(|t| SnapshotTransfer {
                transfer_id: t.id.clone(),
                region: t.region.clone(),
                units: t.units,
                debited_at_unix_ms: t.debited_at,
                credited_at_unix_ms: t.credited_at,
            })
            .collect();
        out.sort_by(|a, b| a.transfer_id.cmp(&b.transfer_id));
        out
    };
    RegionSnapshot {
        sku: sku.to_string(),
        region: region.to_string(),
        scope: match ledger.scope.as_str() {
            "global" => audit::SCOPE_GLOBAL,
            "regional" => audit::SCOPE_REGIONAL,
            _ => 0,
        },
        home_region: ledger.home.clone(),
        global_total: ledger.global_total,
        allocation: ledger.allocation,
        on_hand: ledger.on_hand,
        reserved: ledger.reserved,
        sold: ledger.sold,
        transfers_out: transfers(&ledger.out),
        transfers_in: transfers(&ledger.inn),
        sequence: ledger.sequence,
        taken_at_unix_ms: ledger.taken_at,
        placement_id: ledger.placement_id.clone(),
    }
}

/// `na=500,eu=500` -> {na: 500, eu: 500}.
pub fn parse_split(split: &str) -> HashMap<String, i64> {
    split
        .split(',')
        .filter_map(|pair| {
            let (region, units) = pair.split_once('=')?;
            Some((region.to_string(), units.parse().ok()?))
        })
        .collect()
}

fn parse_entries(value: Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(entries) = value else {
        return vec![];
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = parts.pop()?.as_string()?;
            let Value::Array(flat) = fields else { return None };
            let map = flat
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.as_string()?, kv.get(1)?.as_string()?)))
                .collect();
            Some((id, map))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_only_when_no_other_region_is_fresh() {
        let view = |region: &str, age_ms: i64, stale: bool| RegionAvailability {
            region: region.into(),
            age_ms,
            stale,
            ..RegionAvailability::default()
        };
        let peers = ["eu".to_string(), "apac".to_string()];
        assert_eq!(
            blind_to_peers(peers.iter(), &[view("na", 0, false), view("eu", 7312, true)]),
            Some("eu 7312 ms, apac never".into())
        );
        assert_eq!(
            blind_to_peers(peers.iter(), &[view("eu", 7312, true), view("apac", 40, false)]),
            None,
            "a fresh peer with nothing idle is not blindness"
        );
        assert_eq!(blind_to_peers([].iter(), &[]), None);
    }

    #[test]
    fn split_round_trips_the_outbox_format() {
        let split = parse_split("na=500,eu=500");
        assert_eq!(split.get("na"), Some(&500));
        assert_eq!(split.get("eu"), Some(&500));
        assert!(parse_split("").is_empty());
    }
}
