//! Routing: which warehouses ship which units of an order. Pure functions of what was
//! read; the store then applies the plan atomically or refuses it (stock moved), and the
//! caller reads again and plans again.
//!
//! Rules, in order:
//!
//! 1. **Candidates** are the region's active warehouses offering the promised speed, or a
//!    faster one, to the ship-to point: `max_distance_km` 0 (no limit) or at least the
//!    great-circle distance. Of several qualifying options the slowest is used (it keeps
//!    the promise at the least cost), and its `max_days` sets the shipment's promise.
//!    Warehouses that cannot keep the promise are never used, even with stock.
//! 2. **One shipment** from the closest candidate that can ship every unit, if any.
//! 3. Otherwise **the fewest shipments**: the units no candidate set can cover are
//!    backordered, and the rest is covered by the smallest set of candidates; among sets of
//!    that size, the one with the smallest total distance. With up to [`EXACT_LIMIT`]
//!    useful candidates every set is tried (at most 4096); beyond that a greedy set cover
//!    picks, again and again, the candidate covering the most remaining units (ties: the
//!    closer), which is within a logarithmic factor of the fewest.
//! 4. Within the chosen set, **closest first**: each takes as much of each line as it
//!    has. Every chosen warehouse ends up with at least one unit (a set that did not need
//!    one of its members would not have been the smallest).
//!
//! Ties in distance go to the smaller warehouse id, so a plan is deterministic.

use std::collections::HashMap;

use holdfast_proto::warehouse::v1::ShippingSpeed;
use holdfast_store::{ShippingOptionRecord, StoredWarehouse};

/// Candidate sets are enumerated exhaustively up to this many useful candidates.
pub const EXACT_LIMIT: usize = 12;

/// Mean Earth radius (IUGG), kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance between two points given in degrees (haversine), kilometres.
pub fn distance_km(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (lat1, lon1) = (from.0.to_radians(), from.1.to_radians());
    let (lat2, lon2) = (to.0.to_radians(), to.1.to_radians());
    let a =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().clamp(0.0, 1.0).asin()
}

/// The speed a request means: unspecified is standard.
pub fn effective_speed(speed: i32) -> i32 {
    if speed == ShippingSpeed::Unspecified as i32 {
        ShippingSpeed::Standard as i32
    } else {
        speed
    }
}

/// The option of `warehouse` that keeps a promise of `speed` over `distance_km`: the
/// slowest of those at least as fast that reach that far.
pub fn option_for(warehouse: &StoredWarehouse, speed: i32, distance_km: f64) -> Option<ShippingOptionRecord> {
    let speed = effective_speed(speed);
    warehouse
        .shipping_options
        .iter()
        .filter(|o| o.speed >= speed)
        .filter(|o| o.max_distance_km == 0 || f64::from(o.max_distance_km) >= distance_km)
        .min_by_key(|o| (o.speed, o.max_days))
        .copied()
}

/// A warehouse routing may use, with what it could ship.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The warehouse.
    pub warehouse_id: String,
    /// From the warehouse to the ship-to point, km.
    pub distance_km: f64,
    /// Days the qualifying option promises.
    pub max_days: u32,
    /// Allocatable units per SKU (absent: none).
    pub allocatable: HashMap<String, i64>,
}

impl Candidate {
    fn has(&self, sku: &str) -> i64 {
        self.allocatable.get(sku).copied().unwrap_or(0).max(0)
    }
}

/// Units of one SKU an order needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The SKU.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: i64,
}

/// What one warehouse ships.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedShipment {
    /// The warehouse.
    pub warehouse_id: String,
    /// (SKU, units) in the order's line order.
    pub lines: Vec<(String, i64)>,
    /// Days its option promises.
    pub max_days: u32,
}

/// A line routing could not fill (in part or in full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The SKU.
    pub sku: String,
    /// Units the order needs.
    pub requested: i64,
    /// Units no candidate has, 1..=requested.
    pub missing: i64,
    /// Why, for people (the engine fills it in; empty from [`plan`]).
    pub reason: String,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Shipments, closest warehouse first.
    pub shipments: Vec<PlannedShipment>,
    /// Lines short, in the order's line order.
    pub backorders: Vec<Shortfall>,
}

/// Sums lines of the same SKU, keeping the order of first appearance.
pub fn merge_needs(lines: impl IntoIterator<Item = (String, i64)>) -> Vec<Need> {
    let mut needs: Vec<Need> = Vec::new();
    for (sku, quantity) in lines {
        match needs.iter_mut().find(|n| n.sku == sku) {
            Some(need) => need.quantity = need.quantity.saturating_add(quantity),
            None => needs.push(Need { sku, quantity }),
        }
    }
    needs
}

/// Candidates sorted for routing: by distance, ties by id.
pub fn sort_candidates(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        a.distance_km
            .total_cmp(&b.distance_km)
            .then_with(|| a.warehouse_id.cmp(&b.warehouse_id))
    });
}

/// Plans `needs` over `candidates` (any order) by the rules in the module docs.
pub fn plan(needs: &[Need], candidates: &[Candidate]) -> Plan {
    let mut sorted = candidates.to_vec();
    sort_candidates(&mut sorted);
    let needs: Vec<&Need> = needs.iter().filter(|n| n.quantity > 0).collect();
    if needs.is_empty() {
        return Plan::default();
    }
    if let Some(single) = sorted
        .iter()
        .find(|c| needs.iter().all(|n| c.has(&n.sku) >= n.quantity))
    {
        return Plan {
            shipments: vec![PlannedShipment {
                warehouse_id: single.warehouse_id.clone(),
                lines: needs.iter().map(|n| (n.sku.clone(), n.quantity)).collect(),
                max_days: single.max_days,
            }],
            backorders: Vec::new(),
        };
    }

    // What can be covered at all; the rest is backordered.
    let mut backorders = Vec::new();
    let coverable: Vec<Need> = needs
        .iter()
        .map(|n| {
            let there: i64 = sorted.iter().map(|c| c.has(&n.sku)).fold(0, i64::saturating_add);
            let covered = n.quantity.min(there);
            if covered < n.quantity {
                backorders.push(Shortfall {
                    sku: n.sku.clone(),
                    requested: n.quantity,
                    missing: n.quantity - covered,
                    reason: String::new(),
                });
            }
            Need {
                sku: n.sku.clone(),
                quantity: covered,
            }
        })
        .filter(|n| n.quantity > 0)
        .collect();
    let useful: Vec<&Candidate> = sorted
        .iter()
        .filter(|c| coverable.iter().any(|n| c.has(&n.sku) > 0))
        .collect();
    let chosen = if useful.len() <= EXACT_LIMIT {
        smallest_cover(&coverable, &useful)
    } else {
        greedy_cover(&coverable, &useful)
    };
    Plan {
        shipments: assign(&coverable, &chosen),
        backorders,
    }
}

/// Whether `set` (indexes into `candidates`) has every coverable unit.
fn covers(needs: &[Need], candidates: &[&Candidate], set: &[usize]) -> bool {
    needs.iter().all(|n| {
        set.iter()
            .map(|&i| candidates[i].has(&n.sku))
            .fold(0, i64::saturating_add)
            >= n.quantity
    })
}

/// The smallest covering set, least total distance among those, by trying every set.
fn smallest_cover<'a>(needs: &[Need], candidates: &[&'a Candidate]) -> Vec<&'a Candidate> {
    let n = candidates.len();
    let mut best: Option<(u32, f64, Vec<usize>)> = None;
    for mask in 1_u32..(1 << n) {
        let size = mask.count_ones();
        if best.as_ref().is_some_and(|(best_size, ..)| size > *best_size) {
            continue;
        }
        let set: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        if !covers(needs, candidates, &set) {
            continue;
        }
        let distance: f64 = set.iter().map(|&i| candidates[i].distance_km).sum();
        let better = match &best {
            None => true,
            Some((best_size, best_distance, best_set)) => {
                size < *best_size
                    || (size == *best_size
                        && (distance < *best_distance || (distance == *best_distance && set < *best_set)))
            }
        };
        if better {
            best = Some((size, distance, set));
        }
    }
    // Every useful candidate together covers what is coverable, so `best` is set.
    best.map(|(_, _, set)| set.into_iter().map(|i| candidates[i]).collect())
        .unwrap_or_else(|| candidates.to_vec())
}

/// A greedy cover: the candidate with the most remaining units first, ties by distance.
fn greedy_cover<'a>(needs: &[Need], candidates: &[&'a Candidate]) -> Vec<&'a Candidate> {
    let mut remaining: HashMap<&str, i64> = needs.iter().map(|n| (n.sku.as_str(), n.quantity)).collect();
    let mut chosen: Vec<&Candidate> = Vec::new();
    while remaining.values().any(|r| *r > 0) {
        let gain = |c: &Candidate| -> i64 {
            remaining
                .iter()
                .map(|(sku, left)| c.has(sku).min(*left))
                .fold(0, i64::saturating_add)
        };
        let Some(next) = candidates
            .iter()
            .filter(|c| !chosen.iter().any(|taken| taken.warehouse_id == c.warehouse_id))
            .max_by(|a, b| {
                gain(a)
                    .cmp(&gain(b))
                    .then_with(|| b.distance_km.total_cmp(&a.distance_km))
                    .then_with(|| b.warehouse_id.cmp(&a.warehouse_id))
            })
            .copied()
        else {
            break;
        };
        if gain(next) == 0 {
            break;
        }
        for (sku, left) in remaining.iter_mut() {
            *left -= next.has(sku).min(*left);
        }
        chosen.push(next);
    }
    chosen
}

/// Closest first, each chosen warehouse takes what it can of each line.
fn assign(needs: &[Need], chosen: &[&Candidate]) -> Vec<PlannedShipment> {
    let mut chosen = chosen.to_vec();
    chosen.sort_by(|a, b| {
        a.distance_km
            .total_cmp(&b.distance_km)
            .then_with(|| a.warehouse_id.cmp(&b.warehouse_id))
    });
    let mut remaining: Vec<i64> = needs.iter().map(|n| n.quantity).collect();
    let mut shipments = Vec::new();
    for candidate in chosen {
        let mut lines = Vec::new();
        for (need, left) in needs.iter().zip(remaining.iter_mut()) {
            let take = candidate.has(&need.sku).min(*left);
            if take > 0 {
                lines.push((need.sku.clone(), take));
                *left -= take;
            }
        }
        if !lines.is_empty() {
            shipments.push(PlannedShipment {
                warehouse_id: candidate.warehouse_id.clone(),
                lines,
                max_days: candidate.max_days,
            });
        }
    }
    shipments
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: (f64, f64) = (52.52, 13.405);
    const PARIS: (f64, f64) = (48.8566, 2.3522);

    fn candidate(id: &str, distance_km: f64, stock: &[(&str, i64)]) -> Candidate {
        Candidate {
            warehouse_id: id.into(),
            distance_km,
            max_days: 2,
            allocatable: stock.iter().map(|(s, q)| ((*s).to_string(), *q)).collect(),
        }
    }

    fn needs(lines: &[(&str, i64)]) -> Vec<Need> {
        merge_needs(lines.iter().map(|(s, q)| ((*s).to_string(), *q)))
    }

    fn shape(plan: &Plan) -> Vec<(&str, Vec<(&str, i64)>)> {
        plan.shipments
            .iter()
            .map(|s| {
                (
                    s.warehouse_id.as_str(),
                    s.lines.iter().map(|(sku, q)| (sku.as_str(), *q)).collect(),
                )
            })
            .collect()
    }

    fn warehouse(options: &[(ShippingSpeed, u32, u32)]) -> StoredWarehouse {
        StoredWarehouse {
            id: "w".into(),
            region: "eu".into(),
            shipping_options: options
                .iter()
                .map(|(speed, max_days, max_distance_km)| ShippingOptionRecord {
                    speed: *speed as i32,
                    max_days: *max_days,
                    max_distance_km: *max_distance_km,
                })
                .collect(),
            active: true,
            ..StoredWarehouse::default()
        }
    }

    #[test]
    fn distance_km_matches_known_great_circles() {
        let berlin_paris = distance_km(BERLIN, PARIS);
        assert!((berlin_paris - 878.0).abs() < 5.0, "{berlin_paris}");
        assert!(distance_km(BERLIN, BERLIN).abs() < 1e-9);
        let antipodes = distance_km((0.0, 0.0), (0.0, 180.0));
        assert!((antipodes - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn routing_picks_the_closest_warehouse_that_ships_everything() {
        let plan = plan(
            &needs(&[("a", 2), ("b", 1)]),
            &[
                candidate("far", 900.0, &[("a", 9), ("b", 9)]),
                candidate("near-partial", 10.0, &[("a", 9)]),
                candidate("mid", 300.0, &[("a", 2), ("b", 1)]),
            ],
        );
        assert_eq!(shape(&plan), [("mid", vec![("a", 2), ("b", 1)])]);
        assert!(plan.backorders.is_empty());
    }

    #[test]
    fn routing_splits_into_the_fewest_shipments_closest_first() {
        // Greedy-by-distance would take near-a, near-b and near-c (three shipments); two
        // suffice: mid has a and b, far has c.
        let plan = plan(
            &needs(&[("a", 1), ("b", 1), ("c", 1)]),
            &[
                candidate("near-a", 10.0, &[("a", 1)]),
                candidate("near-b", 20.0, &[("b", 1)]),
                candidate("near-c", 30.0, &[("c", 1)]),
                candidate("mid", 100.0, &[("a", 1), ("b", 1)]),
                candidate("far", 500.0, &[("c", 5)]),
                candidate("farther", 900.0, &[("b", 1), ("c", 1)]),
            ],
        );
        assert_eq!(plan.shipments.len(), 2, "{plan:?}");
        assert_eq!(
            shape(&plan),
            [("near-c", vec![("c", 1)]), ("mid", vec![("a", 1), ("b", 1)])],
            "of the two-warehouse sets, the closest in total; listed closest first"
        );
    }

    #[test]
    fn routing_splits_one_line_across_warehouses_when_none_has_it_all() {
        let plan = plan(
            &needs(&[("a", 5)]),
            &[
                candidate("x", 50.0, &[("a", 3)]),
                candidate("y", 10.0, &[("a", 2)]),
                candidate("z", 5.0, &[("a", 1)]),
            ],
        );
        assert_eq!(shape(&plan), [("y", vec![("a", 2)]), ("x", vec![("a", 3)])]);
    }

    #[test]
    fn routing_backorders_only_the_units_nobody_has() {
        let plan = plan(
            &needs(&[("a", 4), ("b", 2), ("gone", 3)]),
            &[
                candidate("x", 10.0, &[("a", 1), ("b", 2)]),
                candidate("y", 20.0, &[("a", 1), ("gone", 0)]),
            ],
        );
        assert_eq!(
            shape(&plan),
            [("x", vec![("a", 1), ("b", 2)]), ("y", vec![("a", 1)])]
        );
        assert_eq!(
            plan.backorders,
            [
                Shortfall {
                    sku: "a".into(),
                    requested: 4,
                    missing: 2,
                    reason: String::new(),
                },
                Shortfall {
                    sku: "gone".into(),
                    requested: 3,
                    missing: 3,
                    reason: String::new(),
                },
            ]
        );
        let nothing = super::plan(&needs(&[("a", 1)]), &[]);
        assert!(nothing.shipments.is_empty());
        assert_eq!(nothing.backorders.len(), 1);
    }

    #[test]
    fn routing_uses_greedy_cover_past_the_exact_limit_and_still_covers_everything() {
        let mut many: Vec<Candidate> = (0..20)
            .map(|i| candidate(&format!("w{i:02}"), f64::from(i), &[("a", 1)]))
            .collect();
        many.push(candidate("big", 1000.0, &[("a", 15), ("b", 1)]));
        let plan = plan(&needs(&[("a", 16), ("b", 1)]), &many);
        assert_eq!(plan.shipments.len(), 2, "big plus one more: {plan:?}");
        let units: i64 = plan.shipments.iter().flat_map(|s| &s.lines).map(|l| l.1).sum();
        assert_eq!(units, 17);
        assert_eq!(
            plan.shipments[0].warehouse_id, "w00",
            "the closer of the pair first"
        );
    }

    #[test]
    fn routing_merges_repeated_skus() {
        assert_eq!(
            needs(&[("a", 1), ("b", 2), ("a", 3)]),
            [
                Need {
                    sku: "a".into(),
                    quantity: 4
                },
                Need {
                    sku: "b".into(),
                    quantity: 2
                }
            ]
        );
    }

    #[test]
    fn speed_promise_excludes_warehouses_beyond_the_options_reach() {
        let same_day_city = warehouse(&[(ShippingSpeed::Standard, 4, 0), (ShippingSpeed::SameDay, 0, 50)]);
        let same_day = ShippingSpeed::SameDay as i32;
        assert_eq!(
            option_for(&same_day_city, same_day, 30.0).map(|o| o.max_days),
            Some(0)
        );
        assert_eq!(
            option_for(&same_day_city, same_day, 80.0),
            None,
            "same day does not reach 80 km"
        );
        assert_eq!(
            option_for(&same_day_city, ShippingSpeed::Express as i32, 30.0).map(|o| o.speed),
            Some(same_day),
            "a faster option keeps a slower promise"
        );
        assert_eq!(
            option_for(&same_day_city, ShippingSpeed::Unspecified as i32, 5000.0).map(|o| o.max_days),
            Some(4),
            "unspecified is standard, and standard has no distance limit here"
        );
        let standard_only = warehouse(&[(ShippingSpeed::Standard, 5, 0)]);
        assert_eq!(
            option_for(&standard_only, ShippingSpeed::Express as i32, 1.0),
            None
        );
    }
}
