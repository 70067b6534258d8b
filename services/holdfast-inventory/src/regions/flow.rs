//! The events between regions: how they are built, and what a region does with the other
//! regions' (placements, requests addressed to it, debits addressed to it, credits of its
//! own debits, snapshots). Every effect is idempotent by its id, so redelivery is harmless.

use fred::prelude::{HashesInterface, KeysInterface, SetsInterface};
use holdfast_platform::clock::now_ms;
use holdfast_platform::events::{Event, EventHandler, HandleError, handler_fn};
use holdfast_proto::events::v1::{
    GlobalSkuPlaced, RegionEvent, RegionSnapshot, TransferCredited, TransferDebited, TransferRequested,
    region_event,
};
use prost::Message;

use super::keys::{REGION_SKUS, RegionKeys};
use super::scripts::{self, Placed, Placement};
use super::{Regions, metrics, transfers_topic};
use crate::error::InventoryError;

/// Builds a bus event carrying `event` on `topic`, keyed by `sku`.
pub fn to_event(region: &str, topic: String, sku: &str, id: String, event: region_event::Event) -> Event {
    let event_type = match &event {
        region_event::Event::Placed(_) => "region.placed",
        region_event::Event::Requested(_) => "region.transfer_requested",
        region_event::Event::Debited(_) => "region.transfer_debited",
        region_event::Event::Credited(_) => "region.transfer_credited",
        region_event::Event::Snapshot(_) => "region.snapshot",
        region_event::Event::Moved(_) => "region.units_moved",
    };
    let payload = RegionEvent {
        event_id: id.clone(),
        region: region.to_string(),
        event: Some(event),
    };
    Event {
        id,
        topic,
        key: sku.to_string(),
        event_type: event_type.to_string(),
        region: region.to_string(),
        payload: payload.encode_to_vec(),
        traceparent: None,
    }
}

fn retry(error: InventoryError) -> HandleError {
    match error {
        InventoryError::Script { .. } | InventoryError::Protocol { .. } => {
            HandleError::Poison(error.to_string())
        }
        other => HandleError::Retry(other.to_string()),
    }
}

impl Regions {
    /// The consumer of the other regions' topics.
    pub fn handler(&self) -> impl EventHandler {
        let regions = self.clone();
        handler_fn(move |event: Event| {
            let regions = regions.clone();
            async move { regions.apply(&event).await }
        })
    }

    /// Applies one event from another region.
    pub async fn apply(&self, event: &Event) -> Result<(), HandleError> {
        let decoded = RegionEvent::decode(event.payload.as_slice())
            .map_err(|e| HandleError::Poison(format!("undecodable region event: {e}")))?;
        if decoded.region == self.region() {
            return Ok(());
        }
        match decoded.event {
            Some(region_event::Event::Placed(placed)) => self.on_placed(&placed).await,
            Some(region_event::Event::Requested(request)) if request.from_region == self.region() => {
                self.give(&request).await.map(|_| ()).map_err(retry)
            }
            Some(region_event::Event::Debited(debit)) if debit.to_region == self.region() => {
                self.credit(&debit).await.map(|_| ()).map_err(retry)
            }
            Some(region_event::Event::Credited(credit)) if credit.from_region == self.region() => {
                let _: i64 = self
                    .stock()
                    .client()
                    .hset(
                        RegionKeys::new(&credit.sku).acknowledged(),
                        (credit.transfer_id.as_str(), credit.credited_at_unix_ms),
                    )
                    .await
                    .map_err(|e| HandleError::Retry(e.to_string()))?;
                Ok(())
            }
            Some(region_event::Event::Snapshot(snapshot)) => self.on_snapshot(snapshot).await.map_err(retry),
            // The forced debit (if this region is the source; either copy, once per id) or
            // the audit record of an operator move.
            Some(region_event::Event::Moved(moved)) => {
                self.apply_move(&moved).await.map(|_| ()).map_err(retry)
            }
            // Addressed to another region.
            Some(_) => Ok(()),
            None => Err(HandleError::Poison("region event without a body".into())),
        }
    }

    async fn on_placed(&self, placed: &GlobalSkuPlaced) -> Result<(), HandleError> {
        let allocation = placed.allocations.get(self.region()).copied().unwrap_or(0);
        let keys = RegionKeys::new(&placed.sku);
        let outcome = scripts::place(
            self.stock().client(),
            &keys,
            &Placement::Global {
                home: &placed.home_region,
                placement_id: &placed.placement_id,
                allocation,
                total: placed.global_total,
                announce: None,
            },
        )
        .await
        .map_err(retry)?;
        match outcome {
            Placed::Now(_) => {
                tracing::info!(sku = %placed.sku, home = %placed.home_region, allocation, "global sku placed here");
                self.stock().record_truth(&placed.sku).await.map_err(retry)?;
            }
            Placed::Already(_) => {}
            Placed::Otherwise(scope, home) => {
                return Err(HandleError::Poison(format!(
                    "placement {} of {} by {} conflicts with its {scope} placement by {home} here",
                    placed.placement_id, placed.sku, placed.home_region
                )));
            }
        }
        let _: i64 = self
            .stock()
            .client()
            .sadd(REGION_SKUS, placed.sku.as_str())
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        Ok(())
    }

    /// Gives what the request asks for, at most the idle units here: one debit whose
    /// outbox entry carries it. Answers the units debited (0: none idle).
    pub async fn give(&self, request: &TransferRequested) -> Result<i64, InventoryError> {
        if request.units < 1 || !super::valid_region(&request.to_region) || request.request_id.is_empty() {
            return Ok(0);
        }
        let layout = self.stock().layout(&request.sku).await?;
        if layout.buckets > 1 {
            // Hot SKU: idle units of other buckets are gathered into bucket 0 first.
            let levels = self.stock().bucket_levels(&request.sku).await?;
            let available: Vec<i64> = levels.iter().map(|b| b.levels.available()).collect();
            let short = request.units - available.first().copied().unwrap_or(0);
            if short > 0 {
                self.stock().gather(&request.sku, 0, short, &available).await?;
            }
        }
        let (moved, _) = scripts::transfer_out(
            self.stock().client(),
            &RegionKeys::new(&request.sku),
            &request.request_id,
            request.units,
            &request.to_region,
        )
        .await?;
        if moved > 0 {
            metrics::transfer("out", moved);
            tracing::info!(sku = %request.sku, to = %request.to_region, units = moved, id = %request.request_id, "transfer debited");
            self.stock().record_truth(&request.sku).await?;
            self.wake_relay();
        }
        Ok(moved)
    }

    /// Credits a debit addressed here, once per transfer id. Answers whether it was new.
    pub async fn credit(&self, debit: &TransferDebited) -> Result<bool, InventoryError> {
        if debit.units < 1 || !super::valid_region(&debit.from_region) || debit.transfer_id.is_empty() {
            return Ok(false);
        }
        let (fresh, _) = scripts::transfer_in(
            self.stock().client(),
            &RegionKeys::new(&debit.sku),
            &debit.transfer_id,
            debit.units,
            &debit.from_region,
            debit.debited_at_unix_ms,
        )
        .await?;
        if fresh {
            metrics::transfer("in", debit.units);
            metrics::observe_transfer_latency(now_ms() - debit.debited_at_unix_ms);
            tracing::info!(sku = %debit.sku, from = %debit.from_region, units = debit.units, id = %debit.transfer_id, "transfer credited");
            self.stock().record_truth(&debit.sku).await?;
            // Units again: a hot SKU's sold-out marker must not short-circuit them.
            let _: i64 = self
                .stock()
                .client()
                .del(crate::keys::sold_out(&debit.sku))
                .await?;
            self.stock().forget_sold_out(&debit.sku);
        }
        self.answered(&debit.sku);
        self.wake_relay();
        Ok(fresh)
    }

    /// The open request for `sku` (if any) is answered.
    fn answered(&self, sku: &str) {
        self.inner
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(sku);
    }

    async fn on_snapshot(&self, snapshot: RegionSnapshot) -> Result<(), InventoryError> {
        // How far behind the producer this consumer is (Redis clocks of two regions).
        tracing::trace!(
            sku = %snapshot.sku,
            region = %snapshot.region,
            sequence = snapshot.sequence,
            lag_ms = now_ms() - snapshot.taken_at_unix_ms,
            "snapshot applied"
        );
        let keys = RegionKeys::new(&snapshot.sku);
        let client = self.stock().client();
        let known: Option<Vec<u8>> = client.hget(keys.views(), snapshot.region.as_str()).await?;
        if let Some(known) = known.and_then(|b| RegionSnapshot::decode(b.as_slice()).ok())
            && known.sequence >= snapshot.sequence
            && known.placement_id == snapshot.placement_id
        {
            return Ok(());
        }
        if snapshot.scope == super::audit::SCOPE_REGIONAL && snapshot.home_region == snapshot.region {
            // Learn where a regional SKU sells (a conflicting claim here stays, and the
            // reconciler reports the disagreement).
            let _ = scripts::place(
                client,
                &keys,
                &Placement::Regional {
                    home: &snapshot.home_region,
                },
            )
            .await?;
        }
        let _: i64 = client
            .hset(keys.views(), (snapshot.region.as_str(), snapshot.encode_to_vec()))
            .await?;
        let _: i64 = client.sadd(REGION_SKUS, snapshot.sku.as_str()).await?;
        Ok(())
    }

    /// Publishes a request for units of `sku` to `from` (no outbox: a lost request is simply
    /// asked again after the ask timeout).
    pub async fn request(&self, sku: &str, from: &str, units: i64) -> Result<String, InventoryError> {
        let id = uuid::Uuid::now_v7().to_string();
        let event = to_event(
            self.region(),
            transfers_topic(self.region()),
            sku,
            format!("rq/{id}"),
            region_event::Event::Requested(TransferRequested {
                request_id: id.clone(),
                sku: sku.to_string(),
                from_region: from.to_string(),
                to_region: self.region().to_string(),
                units,
            }),
        );
        self.bus()
            .publish(vec![event])
            .await
            .map_err(|e| InventoryError::Store(format!("publish transfer request: {e}")))?;
        Ok(id)
    }

    /// A credit event as the destination's outbox entry describes it.
    pub fn credited_event(&self, sku: &str, id: String, credit: TransferCredited) -> Event {
        to_event(
            self.region(),
            transfers_topic(self.region()),
            sku,
            id,
            region_event::Event::Credited(credit),
        )
    }
}
