//! Property test of coalesced Reserves: random sequences of set / adjust / bursts of
//! concurrent one-line Reserves (which the batcher packs into `reserve_batch.lua` calls, with
//! the local sold-out marker in play) / repeats / commits / releases / expiries over plain
//! SKUs, against a real redis-server, checked after every step against a simple model. A
//! burst's outcome depends on arrival order, so it is checked for what every order
//! guarantees: never more than was available, and no refusal while its units were still free
//! at the end (so the sold-out marker never refused a free unit).

mod layout_support;

use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::join_all;
use holdfast_inventory::keys::BucketKeys;
use holdfast_inventory::reservations::ReserveAnswer;
use holdfast_inventory::{InventoryError, Stock};
use holdfast_platform::redis;
use holdfast_testkit::RedisServer;
use proptest::prelude::*;

const SKUS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    SetStock { sku: usize, on_hand: i64 },
    Adjust { sku: usize, delta: i64 },
    Burst { sku: usize, qtys: Vec<i64> },
    Repeat { which: usize },
    Commit { which: usize },
    Release { which: usize },
    Expire { which: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..SKUS, 0i64..12).prop_map(|(sku, on_hand)| Op::SetStock { sku, on_hand }),
        1 => (0..SKUS, 1i64..6).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        5 => (0..SKUS, prop::collection::vec(1i64..4, 1..24)).prop_map(|(sku, qtys)| Op::Burst { sku, qtys }),
        2 => (0usize..40).prop_map(|which| Op::Repeat { which }),
        2 => (0usize..40).prop_map(|which| Op::Commit { which }),
        2 => (0usize..40).prop_map(|which| Op::Release { which }),
        2 => (0usize..40).prop_map(|which| Op::Expire { which }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reserved,
    Rejected,
    Committed,
    Released,
    Expired,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    on_hand: i64,
    reserved: i64,
    sold: i64,
}

struct World {
    stock: Stock,
    names: [String; SKUS],
    skus: [Counts; SKUS],
    /// rid, sku, qty, state
    reservations: Vec<(String, usize, i64, State)>,
    adjustments: u32,
}

fn failed(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

impl World {
    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op.clone() {
            Op::SetStock { sku, on_hand } => {
                let result = self.stock.set_stock(&self.names[sku], on_hand, 1).await;
                if on_hand < self.skus[sku].reserved {
                    prop_assert!(
                        matches!(result, Err(InventoryError::Precondition { .. })),
                        "{result:?}"
                    );
                } else {
                    prop_assert!(result.is_ok(), "{result:?}");
                    self.skus[sku].on_hand = on_hand;
                }
            }
            Op::Adjust { sku, delta } => {
                self.adjustments += 1;
                let id = format!("adj-{}", self.adjustments);
                self.stock
                    .adjust_stock(&self.names[sku], delta, &id)
                    .await
                    .map_err(failed)?;
                self.skus[sku].on_hand += delta;
            }
            Op::Burst { sku, qtys } => {
                let first = self.reservations.len();
                let rids: Vec<String> = (0..qtys.len())
                    .map(|i| layout_support::rid(&self.names[sku], first + i))
                    .collect();
                let lines: Vec<Vec<(String, i64)>> = qtys
                    .iter()
                    .map(|qty| vec![(self.names[sku].clone(), *qty)])
                    .collect();
                let answers = join_all(
                    rids.iter()
                        .zip(&lines)
                        .map(|(rid, line)| self.stock.reserve(rid, line, 600)),
                )
                .await;
                let available = self.skus[sku].on_hand - self.skus[sku].reserved;
                let mut granted = 0;
                let mut outcomes = Vec::new();
                for (qty, answer) in qtys.iter().zip(answers) {
                    let answer = answer.map_err(|e| failed(format!("reserve failed: {e}")))?;
                    let won = matches!(answer, ReserveAnswer::Reserved { .. });
                    if won {
                        granted += qty;
                    }
                    outcomes.push((*qty, won, answer));
                }
                prop_assert!(granted <= available, "granted {granted} of {available}");
                let left = available - granted;
                for (qty, won, answer) in &outcomes {
                    if let ReserveAnswer::Insufficient(shortages) = answer {
                        prop_assert!(*qty > left, "refused {qty} while {left} stayed free");
                        prop_assert_eq!(shortages.len(), 1);
                        let told = shortages[0].available;
                        prop_assert!(
                            told >= left.min(*qty - 1) && told < *qty,
                            "told {told}, left {left}, qty {qty}"
                        );
                    } else {
                        prop_assert!(*won);
                    }
                }
                self.skus[sku].reserved += granted;
                for (rid, (qty, won, _)) in rids.into_iter().zip(outcomes) {
                    let state = if won { State::Reserved } else { State::Rejected };
                    self.reservations.push((rid, sku, qty, state));
                }
            }
            Op::Repeat { which } => {
                let Some((rid, sku, qty, state)) = self.reservations.get(which).cloned() else {
                    return Ok(());
                };
                let answer = self
                    .stock
                    .reserve(&rid, &[(self.names[sku].clone(), qty)], 600)
                    .await
                    .map_err(failed)?;
                prop_assert_eq!(
                    matches!(answer, ReserveAnswer::Reserved { .. }),
                    state != State::Rejected,
                    "repeat of {:?}: {:?}",
                    state,
                    answer
                );
            }
            Op::Commit { which } => {
                let Some((rid, sku, qty, state)) = self.reservations.get(which).cloned() else {
                    return Ok(());
                };
                let result = self.stock.commit(&rid, &[]).await;
                match state {
                    State::Reserved => {
                        prop_assert!(result.is_ok(), "{result:?}");
                        let c = &mut self.skus[sku];
                        c.on_hand -= qty;
                        c.reserved -= qty;
                        c.sold += qty;
                        self.reservations[which].3 = State::Committed;
                    }
                    State::Committed => prop_assert!(result.is_ok(), "{result:?}"),
                    _ => prop_assert!(
                        matches!(result, Err(InventoryError::Precondition { .. })),
                        "{result:?}"
                    ),
                }
            }
            Op::Release { which } => {
                let Some((rid, sku, qty, state)) = self.reservations.get(which).cloned() else {
                    return Ok(());
                };
                let result = self.stock.release(&rid).await;
                match state {
                    State::Reserved => {
                        prop_assert_eq!(result.ok(), Some(qty));
                        self.skus[sku].reserved -= qty;
                        self.reservations[which].3 = State::Released;
                    }
                    State::Committed => prop_assert!(
                        matches!(result, Err(InventoryError::Precondition { .. })),
                        "{result:?}"
                    ),
                    _ => prop_assert!(result.is_ok(), "{result:?}"),
                }
            }
            Op::Expire { which } => {
                let Some((rid, sku, qty, state)) = self.reservations.get(which).cloned() else {
                    return Ok(());
                };
                if state != State::Reserved {
                    return Ok(());
                }
                // Time passes for this hold only. No sweeper runs here: the next level read
                // (check) finds the units free and drops the local sold-out marker.
                let client = self.stock.client();
                layout_support::lapse_hold(client, &BucketKeys::new(&self.names[sku], 0), &rid).await;
                layout_support::set_record_field(client, &rid, "expires_at", "1").await;
                self.skus[sku].reserved -= qty;
                self.reservations[which].3 = State::Expired;
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), TestCaseError> {
        for sku in 0..SKUS {
            let level = self.stock.level(&self.names[sku]).await.map_err(failed)?;
            let real = Counts {
                on_hand: level.levels.on_hand,
                reserved: level.levels.reserved,
                sold: level.levels.sold,
            };
            prop_assert_eq!(real, self.skus[sku], "sku {}", sku);
            let keys = BucketKeys::new(&self.names[sku], 0);
            let client = self.stock.client();
            // Every live reservation holds exactly its units; the others hold nothing (a
            // lapsed hold may linger until purged, so only live ones are counted).
            let mut live = 0;
            for (rid, s, qty, state) in &self.reservations {
                if *s != sku {
                    continue;
                }
                let hold = layout_support::hold_of(client, &keys, rid).await;
                match state {
                    State::Reserved => {
                        prop_assert_eq!(hold.map(|(q, _)| q), Some(*qty), "hold of {}", rid);
                        live += 1;
                    }
                    State::Expired => {}
                    _ => prop_assert_eq!(hold, None, "{} holds nothing", rid),
                }
            }
            let count = layout_support::hold_count(client, &keys).await;
            prop_assert!(count >= live, "{} holds for {} live reservations", count, live);
        }
        Ok(())
    }
}

#[test]
fn batched_reservations_keep_the_invariant_for_random_sequences() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let redis = RedisServer::start().expect("redis-server");
    let pool = runtime
        .block_on(redis::connect(&redis.url(), 2))
        .expect("connect");
    runtime
        .block_on(holdfast_inventory::scripts::load_all(pool.next()))
        .expect("scripts");
    static CASE: AtomicU32 = AtomicU32::new(0);
    let config = ProptestConfig {
        cases: 24,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec(op(), 1..30))| {
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let (relay, _) = tokio::sync::mpsc::unbounded_channel();
        let mut world = World {
            stock: Stock::new(pool.clone(), relay),
            names: std::array::from_fn(|i| format!("b{case}-sku{i}")),
            skus: [Counts::default(); SKUS],
            reservations: Vec::new(),
            adjustments: 0,
        };
        runtime.block_on(async {
            for op in &ops {
                world.apply(op).await?;
                world.check().await.map_err(|e| failed(format!("after {op:?}: {e}")))?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    });
}
