//! Who gives units to a region running low, and how many it asks for.
//!
//! A region asks when its idle units of a global SKU fall to its low-water mark (a fifth of
//! its allocation, at least one). It asks the region with the most idle units according to
//! fresh views only (a stale view is never the basis of a transfer), for half of them
//! (rounded up) so a giver with its own buyers keeps the rest. The giver debits at most what
//! is idle at that moment: never a held unit, never below what it holds.

use holdfast_proto::inventory::v1::RegionAvailability;

/// The low-water mark of a region with `allocation` units.
pub fn low_water(allocation: i64) -> i64 {
    (allocation / 5).max(1)
}

/// The region to ask and how many units, if any fresh view shows idle units elsewhere.
pub fn choose_giver(me: &str, views: &[RegionAvailability]) -> Option<(String, i64)> {
    views
        .iter()
        .filter(|v| v.region != me && !v.stale && v.available > 0)
        .max_by(|a, b| {
            a.available
                .cmp(&b.available)
                .then_with(|| b.region.cmp(&a.region))
        })
        .map(|v| (v.region.clone(), (v.available + 1) / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(region: &str, available: i64, stale: bool) -> RegionAvailability {
        RegionAvailability {
            region: region.into(),
            available,
            stale,
            ..RegionAvailability::default()
        }
    }

    #[test]
    fn giver_is_the_freshest_richest_other_region_asked_for_half() {
        let views = [
            view("na", 0, false),
            view("eu", 400, false),
            view("apac", 900, true),
            view("sa", 7, false),
        ];
        assert_eq!(choose_giver("na", &views), Some(("eu".into(), 200)));
        assert_eq!(
            choose_giver("na", &[view("eu", 1, false)]),
            Some(("eu".into(), 1))
        );
    }

    #[test]
    fn giver_none_when_only_stale_or_empty_views() {
        assert_eq!(
            choose_giver(
                "na",
                &[
                    view("eu", 0, false),
                    view("apac", 50, true),
                    view("na", 90, false)
                ]
            ),
            None
        );
    }

    #[test]
    fn low_water_is_a_fifth_of_the_allocation_at_least_one() {
        assert_eq!(low_water(500), 100);
        assert_eq!(low_water(3), 1);
        assert_eq!(low_water(0), 1);
    }
}
