//! A [`WarehouseChange`] as an intent log: the stored intent, the steps that apply it
//! (shipments, stock rows, outbox, claims) and the undo of a change refused mid-way.

use std::collections::{BTreeMap, HashMap};

use scylla::statement::batch::Batch;
use serde::{Deserialize, Serialize};

use super::*;
use crate::scylladb::BatchRow;

/// A change as the anchor claim stores it (JSON), so another attempt can finish it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Intent {
    /// (scope, key, fingerprint, repeat) per claim.
    claims: Vec<(String, String, String, bool)>,
    stock: Vec<StockDelta>,
    shipments: Vec<ShipmentWrite>,
    outbox: Vec<IntentEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IntentEvent {
    id: String,
    topic: String,
    key: String,
    event_type: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    created_at_ms: i64,
}

impl Intent {
    pub(super) fn of(change: &WarehouseChange, outbox: &[OutboxMessage]) -> Self {
        Self {
            claims: change
                .claims
                .iter()
                .map(|c| {
                    (
                        c.scope.clone(),
                        c.key.clone(),
                        c.fingerprint.clone(),
                        c.if_taken == IfTaken::Repeat,
                    )
                })
                .collect(),
            stock: change.stock.clone(),
            shipments: change.shipments.clone(),
            outbox: outbox
                .iter()
                .map(|m| IntentEvent {
                    id: m.id.clone(),
                    topic: m.topic.clone(),
                    key: m.key.clone(),
                    event_type: m.event_type.clone(),
                    payload: m.payload.clone(),
                    headers: m.headers.clone(),
                    created_at_ms: m.created_at_ms,
                })
                .collect(),
        }
    }

    pub(super) fn change(&self) -> (WarehouseChange, Vec<OutboxMessage>) {
        let outbox: Vec<OutboxMessage> = self
            .outbox
            .iter()
            .map(|e| OutboxMessage {
                id: e.id.clone(),
                topic: e.topic.clone(),
                key: e.key.clone(),
                event_type: e.event_type.clone(),
                payload: e.payload.clone(),
                headers: e.headers.clone(),
                created_at_ms: e.created_at_ms,
            })
            .collect();
        let change = WarehouseChange {
            claims: self
                .claims
                .iter()
                .map(|(scope, key, fingerprint, repeat)| Claim {
                    scope: scope.clone(),
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    if_taken: if *repeat { IfTaken::Repeat } else { IfTaken::Ignore },
                })
                .collect(),
            stock: self.stock.clone(),
            shipments: self.shipments.clone(),
            outbox: outbox.clone(),
        };
        (change, outbox)
    }
}

/// Something a running change wrote that a refusal must take back.
enum Undo {
    /// A stock delta it applied.
    Stock(StockDelta),
    /// A created shipment, now at this version.
    Created(String, u64),
    /// An updated shipment: its state before, and the version it is at now.
    Updated(Box<StoredShipment>, u64),
}

impl ScyllaStore {
    /// Applies `delta` to its row once under `change_id`: a no-op if the row already
    /// records that change. `Ok(Err(row))` when it cannot apply (the row as it stands).
    async fn apply_stock_delta(
        &self,
        delta: &StockDelta,
        change_id: &str,
    ) -> Result<Result<StockRow, StockRow>, StoreError> {
        self.apply_stock_deltas(std::slice::from_ref(delta), change_id)
            .await
    }

    /// Applies `deltas` (all on one row, in order, each checked as it comes, as one
    /// version step: the row moves once per change) once under `change_id`.
    /// `Ok(Err(row))` when one of them cannot apply (the row as it stands).
    async fn apply_stock_deltas(
        &self,
        deltas: &[StockDelta],
        change_id: &str,
    ) -> Result<Result<StockRow, StockRow>, StoreError> {
        let Some(delta) = deltas.first() else {
            return Err(StoreError::InvalidArgument("no stock delta to apply".into()));
        };
        let statements = self.warehouse_statements().await?;
        self.run(&statements.index_stock, (&delta.sku, &delta.warehouse_id))
            .await?;
        for _ in 0..STOCK_ATTEMPTS {
            let current = self
                .read_stock(&statements.get_stock_serial, &delta.warehouse_id, &delta.sku)
                .await?
                .unwrap_or_else(|| StockRow {
                    sku: delta.sku.clone(),
                    warehouse_id: delta.warehouse_id.clone(),
                    ..StockRow::default()
                });
            let seen: Vec<(String,)> = self
                .rows(
                    &statements.stock_change,
                    (&delta.warehouse_id, &delta.sku, change_id),
                )
                .await?;
            if !seen.is_empty() {
                return Ok(Ok(current));
            }
            let mut next = current.clone();
            for delta in deltas {
                match applied(&next, delta) {
                    Some(row) => next = row,
                    None => return Ok(Err(current)),
                }
            }
            next.version = current.version + 1;
            next.updated_at_ms = now_ms();
            let expected = (current.version > 0)
                .then(|| StoreError::version_to_i64(current.version))
                .transpose()?;
            let mut batch = Batch::default();
            batch.append_statement(statements.set_stock_if_version.clone());
            batch.append_statement(statements.insert_stock_change.clone());
            let rows: Vec<BatchRow> = vec![
                Box::new((
                    next.physical,
                    next.allocatable,
                    StoreError::version_to_i64(next.version)?,
                    next.updated_at_ms,
                    delta.warehouse_id.clone(),
                    delta.sku.clone(),
                    expected,
                )),
                Box::new((
                    delta.warehouse_id.clone(),
                    delta.sku.clone(),
                    change_id.to_string(),
                )),
            ];
            // One partition: the row's check-and-set and the change marker commit together.
            if lwt_outcome(self.run_batch(&batch, rows).await?)?.0 {
                return Ok(Ok(next));
            }
        }
        Err(StoreError::Unavailable(format!(
            "stock of {} in {} keeps changing; retry",
            delta.sku, delta.warehouse_id
        )))
    }

    /// Writes one shipment; `Ok(Err(refusal))` when its condition fails. `resuming`
    /// accepts a write that an interrupted attempt of the same change already made.
    async fn write_shipment(
        &self,
        write: &ShipmentWrite,
        resuming: bool,
    ) -> Result<Result<(StoredShipment, Undo), Refusal>, StoreError> {
        let statements = self.warehouse_statements().await?;
        let now = now_ms();
        match write {
            ShipmentWrite::Create(shipment) => {
                let stored = StoredShipment {
                    version: 1,
                    updated_at_ms: now,
                    ..shipment.clone()
                };
                self.run(
                    &statements.index_by_order,
                    (&stored.order_id, stored.created_at_ms, &stored.id),
                )
                .await?;
                self.run(
                    &statements.index_by_warehouse,
                    (&stored.warehouse_id, stored.created_at_ms, &stored.id),
                )
                .await?;
                let result = self
                    .run(
                        &statements.insert_shipment_if_absent,
                        (
                            &stored.id,
                            &stored.order_id,
                            &stored.warehouse_id,
                            stored.status,
                            shipment_lines(&stored),
                            &stored.carrier,
                            &stored.tracking_number,
                            &stored.ship_to,
                            stored.shipping_speed,
                            stored.promised_by_ms,
                            stored.created_at_ms,
                            stored.shipped_at_ms,
                            stored.delivered_at_ms,
                            stored.updated_at_ms,
                            1_i64,
                        ),
                    )
                    .await?;
                if lwt_outcome(result)?.0 {
                    return Ok(Ok((stored.clone(), Undo::Created(stored.id, 1))));
                }
                let current = self
                    .read_shipment(&statements.get_shipment_serial, &shipment.id)
                    .await?;
                match current {
                    Some(current) if resuming && current.order_id == shipment.order_id => {
                        let version = current.version;
                        Ok(Ok((current, Undo::Created(shipment.id.clone(), version))))
                    }
                    current => Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: current.map_or(0, |c| c.version),
                    })),
                }
            }
            ShipmentWrite::Update {
                shipment,
                expected_version,
            } => {
                let before = self
                    .read_shipment(&statements.get_shipment_serial, &shipment.id)
                    .await?;
                let Some(before) = before else {
                    return Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: 0,
                    }));
                };
                if resuming && before.version == expected_version + 1 {
                    let version = before.version;
                    return Ok(Ok((before.clone(), Undo::Updated(Box::new(before), version))));
                }
                if before.version != *expected_version
                    || before.order_id != shipment.order_id
                    || before.warehouse_id != shipment.warehouse_id
                {
                    return Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual: before.version,
                    }));
                }
                let stored = StoredShipment {
                    version: expected_version + 1,
                    updated_at_ms: now,
                    created_at_ms: before.created_at_ms,
                    ..shipment.clone()
                };
                if self.set_shipment(&stored, *expected_version).await? {
                    let version = stored.version;
                    Ok(Ok((stored, Undo::Updated(Box::new(before), version))))
                } else {
                    let actual = self
                        .read_shipment(&statements.get_shipment_serial, &shipment.id)
                        .await?
                        .map_or(0, |c| c.version);
                    Ok(Err(Refusal::Shipment {
                        id: shipment.id.clone(),
                        actual,
                    }))
                }
            }
        }
    }

    /// Replaces a shipment's mutable fields if it is at `expected`; whether it applied.
    async fn set_shipment(&self, shipment: &StoredShipment, expected: u64) -> Result<bool, StoreError> {
        let statements = self.warehouse_statements().await?;
        let result = self
            .run(
                &statements.update_shipment_if_version,
                (
                    shipment.status,
                    shipment_lines(shipment),
                    &shipment.carrier,
                    &shipment.tracking_number,
                    &shipment.ship_to,
                    shipment.shipping_speed,
                    shipment.promised_by_ms,
                    shipment.shipped_at_ms,
                    shipment.delivered_at_ms,
                    shipment.updated_at_ms,
                    StoreError::version_to_i64(shipment.version)?,
                    &shipment.id,
                    StoreError::version_to_i64(expected)?,
                ),
            )
            .await?;
        Ok(lwt_outcome(result)?.0)
    }

    /// Takes back what a refused change wrote, newest first. Best effort per item: an
    /// item someone else changed since is left as it is (and logged).
    async fn undo(&self, undo: Vec<Undo>, anchor: &str) -> Result<(), StoreError> {
        let statements = self.warehouse_statements().await?;
        for (index, item) in undo.into_iter().enumerate().rev() {
            match item {
                Undo::Stock(delta) => {
                    let inverse = StockDelta {
                        physical: -delta.physical,
                        allocatable: -delta.allocatable,
                        expected_version: None,
                        ..delta
                    };
                    if let Ok(Err(row)) = self
                        .apply_stock_delta(&inverse, &format!("undo:{anchor}:{index}"))
                        .await
                    {
                        tracing::error!(
                            sku = %row.sku, warehouse = %row.warehouse_id,
                            "could not undo a stock delta of a refused change"
                        );
                    }
                }
                Undo::Created(id, version) => {
                    let _ = self
                        .run(
                            &statements.delete_shipment_if_version,
                            (&id, StoreError::version_to_i64(version)?),
                        )
                        .await?;
                }
                Undo::Updated(before, now) => {
                    let restored = StoredShipment {
                        version: now + 1,
                        updated_at_ms: now_ms(),
                        ..*before
                    };
                    if !self.set_shipment(&restored, now).await? {
                        tracing::error!(shipment = %restored.id, "could not undo a shipment update of a refused change");
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps 2-5 of a change (see the schema): shipments, stock, outbox, claims applied.
    pub(super) async fn run_intent(
        &self,
        change: &WarehouseChange,
        outbox: Vec<OutboxMessage>,
        anchor: &str,
        resuming: bool,
    ) -> Result<ChangeOutcome, StoreError> {
        let statements = self.warehouse_statements().await?;
        let groups = stock_groups(&change.stock);
        // A change whose stock cannot apply to the rows as they stand is refused before it
        // writes anything (as on SQLite). Not when resuming: its deltas may be applied already.
        if !resuming && let Some(row) = self.stock_refusal(&groups).await? {
            return Ok(ChangeOutcome::Refused(Refusal::Stock(row)));
        }
        let mut undo = Vec::new();
        let mut written: Vec<Option<StoredShipment>> = vec![None; change.shipments.len()];
        // Updates first: they are what a concurrent writer makes fail.
        let order: Vec<usize> = (0..change.shipments.len())
            .filter(|i| matches!(change.shipments[*i], ShipmentWrite::Update { .. }))
            .chain(
                (0..change.shipments.len())
                    .filter(|i| matches!(change.shipments[*i], ShipmentWrite::Create(_))),
            )
            .collect();
        for index in order {
            match self.write_shipment(&change.shipments[index], resuming).await? {
                Ok((shipment, item)) => {
                    written[index] = Some(shipment);
                    undo.push(item);
                }
                Err(refusal) => {
                    self.undo(undo, anchor).await?;
                    return Ok(ChangeOutcome::Refused(refusal));
                }
            }
        }
        let mut stock: Vec<StockRow> = Vec::with_capacity(groups.len());
        for (index, deltas) in &groups {
            let change_id = format!("{anchor}#{index}");
            match self.apply_stock_deltas(deltas, &change_id).await? {
                Ok(row) => {
                    undo.push(Undo::Stock(StockDelta {
                        physical: deltas.iter().map(|d| d.physical).sum(),
                        allocatable: deltas.iter().map(|d| d.allocatable).sum(),
                        expected_version: None,
                        ..deltas[0].clone()
                    }));
                    stock.push(row);
                }
                Err(row) => {
                    self.undo(undo, anchor).await?;
                    return Ok(ChangeOutcome::Refused(Refusal::Stock(row)));
                }
            }
        }
        self.append_outbox(outbox).await?;
        let answer = serde_json::to_string(&stock).map_err(corrupt)?;
        for claim in &change.claims {
            self.run(
                &statements.mark_claim_applied,
                (&answer, &claim.scope, &claim.key),
            )
            .await?;
        }
        Ok(ChangeOutcome::Applied {
            stock,
            shipments: written.into_iter().flatten().collect(),
        })
    }

    /// The stored row of the first group of deltas that cannot apply to the rows as they
    /// stand now, if any. A row changed concurrently after this read is caught again when
    /// the deltas are applied (by check-and-set) and undone then.
    async fn stock_refusal(
        &self,
        groups: &[(usize, Vec<StockDelta>)],
    ) -> Result<Option<StockRow>, StoreError> {
        let statements = self.warehouse_statements().await?;
        for (_, deltas) in groups {
            let delta = &deltas[0];
            let current = self
                .read_stock(&statements.get_stock, &delta.warehouse_id, &delta.sku)
                .await?
                .unwrap_or_else(|| StockRow {
                    sku: delta.sku.clone(),
                    warehouse_id: delta.warehouse_id.clone(),
                    ..StockRow::default()
                });
            let mut next = current.clone();
            for delta in deltas {
                match applied(&next, delta) {
                    Some(row) => next = row,
                    None => return Ok(Some(current)),
                }
            }
        }
        Ok(None)
    }

    /// Deletes the claims a refused or repeated change took (those still pending under
    /// `anchor`).
    pub(super) async fn release_claims(&self, claims: &[Claim], anchor: &str) -> Result<(), StoreError> {
        let statements = self.warehouse_statements().await?;
        for claim in claims {
            self.run(
                &statements.delete_claim_if_pending,
                (&claim.scope, &claim.key, anchor),
            )
            .await?;
        }
        Ok(())
    }
}

/// `deltas` grouped by row, rows in order of first appearance, each group under the index
/// of its first delta. Deltas on one row are applied together, so the row moves one version
/// per change (as on SQLite), and the index names the change marker, so a resumed intent
/// finds its own markers.
fn stock_groups(deltas: &[StockDelta]) -> Vec<(usize, Vec<StockDelta>)> {
    let mut groups: Vec<(usize, Vec<StockDelta>)> = Vec::new();
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, delta) in deltas.iter().enumerate() {
        let key = (delta.warehouse_id.as_str(), delta.sku.as_str());
        match at.get(&key) {
            Some(i) => groups[*i].1.push(delta.clone()),
            None => {
                at.insert(key, groups.len());
                groups.push((index, vec![delta.clone()]));
            }
        }
    }
    groups
}
