//! Operator moves of a dead region's units (MoveRegionUnits, docs/regions.md): a transfer
//! whose credit comes first. The receiving region credits the units under `move/<move_id>`
//! and, in the same script, appends a `moved` outbox entry; the relay publishes it on this
//! region's transfers topic (the source applies the forced debit once per id when it is
//! back, even if its on_hand goes negative) and on its reconciliation topic (the audit
//! record: operator, reason, ids). The reconciliation counts a move the source has not
//! applied yet once, at the destination, and a negative on_hand as drift.

use std::collections::HashMap;

use fred::prelude::{HashesInterface, KeysInterface};
use holdfast_platform::clock::now_ms;
use holdfast_platform::events::Event;
use holdfast_platform::status::FieldViolations;
use holdfast_proto::events::v1::{UnitsMoved, region_event};
use holdfast_proto::inventory::v1::{MoveRegionUnitsRequest, MoveRegionUnitsResponse};

use super::flow::to_event;
use super::grpc::MAX_GLOBAL_TOTAL;
use super::keys::{MOVE_PREFIX, RegionKeys, is_move};
use super::scripts::{self, MoveIn, MoveOut};
use super::{Regions, audit, metrics, reconciliation_topic, transfers_topic};
use crate::error::InventoryError;
use crate::validate;

/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

impl Regions {
    /// MoveRegionUnits: validates, checks the source is dead and held the units, credits
    /// them here once per move id and queues the forced debit and the audit record.
    /// `operator` is the caller's token subject (empty without auth).
    pub async fn move_units(
        &self,
        request: MoveRegionUnitsRequest,
        operator: &str,
    ) -> Result<MoveRegionUnitsResponse, InventoryError> {
        self.validate_move(&request)?;
        let sku = request.sku.as_str();
        let from = request.from_region.as_str();
        let keys = RegionKeys::new(sku);
        let transfer_id = format!("{MOVE_PREFIX}{}", request.move_id);
        let client = self.stock().client();
        let known: bool = client.hexists(keys.transfers_in(), transfer_id.as_str()).await?;
        if !known {
            self.check_source(sku, from, request.units).await?;
        }
        let moved = scripts::move_in(
            client,
            &keys,
            &transfer_id,
            request.units,
            from,
            operator,
            request.reason.trim(),
        )
        .await?;
        match moved.outcome {
            MoveIn::Now => {
                metrics::transfer("in", moved.units);
                tracing::warn!(
                    %sku, %from, units = moved.units, id = %transfer_id, %operator, reason = %request.reason.trim(),
                    "operator moved a dead region's units here; the source debits them when it is back"
                );
                self.stock().record_truth(sku).await?;
                // Units again: a hot SKU's sold-out marker must not short-circuit them.
                let _: i64 = client.del(crate::keys::sold_out(sku)).await?;
                self.stock().forget_sold_out(sku);
                self.wake_relay();
            }
            MoveIn::Repeat => {}
            MoveIn::Conflict => {
                return Err(InventoryError::precondition(
                    "MOVE_ID_REUSED",
                    &request.move_id,
                    format!(
                        "move {} already moved {} units from another region or count; pick a new move_id",
                        request.move_id, moved.units
                    ),
                ));
            }
            MoveIn::NotGlobal => return Err(not_global(sku)),
        }
        let snapshot = self.take_snapshot(sku).await?;
        Ok(MoveRegionUnitsResponse {
            transfer_id,
            moved_now: moved.outcome == MoveIn::Now,
            units: moved.units,
            moved_at_unix_ms: moved.moved_at,
            operator: operator.to_string(),
            local: Some(audit::region_figures(&snapshot, now_ms(), self.stale_ms())),
        })
    }

    fn validate_move(&self, request: &MoveRegionUnitsRequest) -> Result<(), InventoryError> {
        let mut v = FieldViolations::new();
        validate::sku(&mut v, "sku", &request.sku);
        validate::id(&mut v, "move_id", &request.move_id);
        let regions = &self.config().regions;
        for (field, region) in [
            ("from_region", &request.from_region),
            ("to_region", &request.to_region),
        ] {
            if !regions.contains(region) {
                v.add(
                    field,
                    format!("must be one of the deployment's regions {regions:?}"),
                );
            }
        }
        if regions.contains(&request.to_region) && request.to_region != self.region() {
            v.add(
                "to_region",
                format!(
                    "must be this region ({}): run the move against the receiving region",
                    self.region()
                ),
            );
        }
        if !request.from_region.is_empty() && request.from_region == request.to_region {
            v.add("from_region", "must differ from to_region");
        }
        if !(1..=MAX_GLOBAL_TOTAL).contains(&request.units) {
            v.add("units", format!("must be 1..{MAX_GLOBAL_TOTAL}"));
        }
        let reason = request.reason.trim();
        if reason.is_empty() {
            v.add(
                "reason",
                "required: why the units move (kept in the audit record)",
            );
        } else if reason.chars().count() > MAX_REASON_CHARS {
            v.add("reason", format!("at most {MAX_REASON_CHARS} characters"));
        }
        v.into_result().map_err(InventoryError::InvalidArgument)
    }

    /// A new move needs a source this region has heard from (its last snapshot bounds the
    /// units), that is dead (its snapshot stale) and that held the units then, less the moves
    /// from it it has not applied yet.
    async fn check_source(&self, sku: &str, from: &str, units: i64) -> Result<(), InventoryError> {
        let views = self.views(sku).await?;
        let Some(source) = views.get(from) else {
            return Err(InventoryError::precondition(
                "SOURCE_UNKNOWN",
                sku,
                format!(
                    "this region never heard from region {from} about {sku}: nothing bounds what it holds"
                ),
            ));
        };
        if source.scope != audit::SCOPE_GLOBAL {
            return Err(not_global(sku));
        }
        let age = now_ms() - source.taken_at_unix_ms;
        if age <= self.stale_ms() {
            return Err(InventoryError::precondition(
                "SOURCE_ALIVE",
                from,
                format!(
                    "region {from}'s last snapshot of {sku} is {age} ms old: it is alive, and transfers move its idle units; move only a region silent for more than {} ms",
                    self.stale_ms()
                ),
            ));
        }
        let pending: i64 = self
            .pending_moves(sku)
            .await?
            .into_iter()
            .filter(|t| t.region == from && !source.transfers_out.iter().any(|o| o.transfer_id == t.id))
            .map(|t| t.units)
            .sum();
        let movable = source.on_hand - pending;
        if units > movable {
            return Err(InventoryError::precondition(
                "TOO_MANY_UNITS",
                sku,
                format!(
                    "region {from} last held {} units of {sku} ({age} ms ago) and owes {pending} to earlier moves: at most {} can move",
                    source.on_hand,
                    movable.max(0)
                ),
            ));
        }
        Ok(())
    }

    /// Every operator move credited here.
    async fn pending_moves(&self, sku: &str) -> Result<Vec<scripts::LedgerTransfer>, InventoryError> {
        let inn: HashMap<String, String> = self
            .stock()
            .client()
            .hgetall(RegionKeys::new(sku).transfers_in())
            .await?;
        Ok(inn
            .iter()
            .filter(|(id, _)| is_move(id))
            .filter_map(|(id, recorded)| scripts::parse_in(id, recorded))
            .collect())
    }

    /// The source side: applies the forced debit of a move from this region, once per id.
    /// Answers whether it debited now (false: a repeat, or a move from another region).
    pub async fn apply_move(&self, moved: &UnitsMoved) -> Result<bool, InventoryError> {
        if moved.from_region != self.region() {
            tracing::info!(
                sku = %moved.sku, from = %moved.from_region, to = %moved.to_region, units = moved.units,
                id = %moved.transfer_id, operator = %moved.operator, reason = %moved.reason, "operator move audited"
            );
            return Ok(false);
        }
        if moved.units < 1 || !is_move(&moved.transfer_id) || !super::valid_region(&moved.to_region) {
            return Err(InventoryError::Protocol {
                script: "region_move_out.lua",
                detail: format!("malformed move event {moved:?}"),
            });
        }
        let layout = self.stock().layout(&moved.sku).await?;
        if layout.buckets > 1 {
            // Hot SKU: idle units of other buckets are gathered into bucket 0 first, so the
            // debit leaves bucket 0 negative only if the region as a whole lacks them.
            let levels = self.stock().bucket_levels(&moved.sku).await?;
            let available: Vec<i64> = levels.iter().map(|b| b.levels.available()).collect();
            let short = moved.units - available.first().copied().unwrap_or(0);
            if short > 0 {
                self.stock().gather(&moved.sku, 0, short, &available).await?;
            }
        }
        let outcome = scripts::move_out(
            self.stock().client(),
            &RegionKeys::new(&moved.sku),
            &moved.transfer_id,
            moved.units,
            &moved.to_region,
            moved.moved_at_unix_ms,
        )
        .await?;
        match outcome {
            MoveOut::Now(on_hand) => {
                metrics::transfer("out", moved.units);
                self.stock().record_truth(&moved.sku).await?;
                if on_hand < 0 {
                    tracing::error!(
                        sku = %moved.sku, to = %moved.to_region, units = moved.units, id = %moved.transfer_id, on_hand,
                        "forced debit of an operator move took on_hand negative: units sold here while unreachable were sold again there (drift for a human)"
                    );
                } else {
                    tracing::warn!(
                        sku = %moved.sku, to = %moved.to_region, units = moved.units, id = %moved.transfer_id, on_hand,
                        "forced debit of an operator move applied"
                    );
                }
                Ok(true)
            }
            MoveOut::Repeat => Ok(false),
            MoveOut::NotGlobal => Err(InventoryError::Protocol {
                script: "region_move_out.lua",
                detail: format!(
                    "move {} of {}: the SKU is not global here",
                    moved.transfer_id, moved.sku
                ),
            }),
        }
    }

    /// The two events of a `moved` outbox entry: the forced debit on the transfers topic and
    /// the audit record on the reconciliation topic.
    pub(super) fn moved_events(&self, sku: &str, entry: &str, f: &HashMap<String, String>) -> Vec<Event> {
        let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let text = |k: &str| f.get(k).cloned().unwrap_or_default();
        let me = self.region().to_string();
        let moved = UnitsMoved {
            transfer_id: text("transfer_id"),
            sku: sku.to_string(),
            from_region: text("from"),
            to_region: me.clone(),
            units: int("units"),
            moved_at_unix_ms: int("at"),
            operator: text("operator"),
            reason: text("reason"),
        };
        vec![
            to_event(
                &me,
                transfers_topic(&me),
                sku,
                format!("rg/{me}/{sku}/{entry}"),
                region_event::Event::Moved(moved.clone()),
            ),
            to_event(
                &me,
                reconciliation_topic(&me),
                sku,
                format!("rg/{me}/{sku}/{entry}/audit"),
                region_event::Event::Moved(moved),
            ),
        ]
    }

    /// Publishes again the forced debit of every move here whose source is alive again (a
    /// fresh snapshot) yet has not applied it for `redrive_after` (an event it never got).
    /// Re-driven copies carry the ids and figures; the audit record was published once.
    pub async fn redrive_moves(&self, sku: &str) -> Result<usize, InventoryError> {
        let moves = self.pending_moves(sku).await?;
        if moves.is_empty() {
            return Ok(0);
        }
        let views = self.views(sku).await?;
        let now = now_ms();
        let after = i64::try_from(self.config().redrive_after.as_millis()).unwrap_or(i64::MAX);
        let me = self.region().to_string();
        let events: Vec<Event> = moves
            .into_iter()
            .filter(|t| {
                views.get(&t.region).is_some_and(|source| {
                    now - source.taken_at_unix_ms <= self.stale_ms()
                        && source.taken_at_unix_ms > t.credited_at + after
                        && !source.transfers_out.iter().any(|o| o.transfer_id == t.id)
                })
            })
            .map(|t| {
                to_event(
                    &me,
                    transfers_topic(&me),
                    sku,
                    format!("rdm/{me}/{}/{now}", t.id),
                    region_event::Event::Moved(UnitsMoved {
                        transfer_id: t.id.clone(),
                        sku: sku.to_string(),
                        from_region: t.region.clone(),
                        to_region: me.clone(),
                        units: t.units,
                        moved_at_unix_ms: t.credited_at,
                        operator: String::new(),
                        reason: String::new(),
                    }),
                )
            })
            .collect();
        let count = events.len();
        if count > 0 {
            tracing::info!(%sku, count, "re-driving forced debits of operator moves");
            self.bus()
                .publish(events)
                .await
                .map_err(|e| InventoryError::Store(format!("publish move re-drive: {e}")))?;
        }
        Ok(count)
    }
}

fn not_global(sku: &str) -> InventoryError {
    InventoryError::precondition(
        "NOT_GLOBAL",
        sku,
        format!("{sku} is not a global SKU: only a global SKU's units move between regions"),
    )
}
