//! Redis keys of the multi-region ledger. Every per-SKU key shares bucket 0's hash tag `{sku}`,
//! so the region scripts are single-slot on Redis Cluster (the conventions of `crate::keys`).

use crate::keys::BucketKeys;

/// The region keys of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionKeys {
    /// The SKU.
    pub sku: String,
}

impl RegionKeys {
    /// Keys of `sku`.
    pub fn new(sku: &str) -> Self {
        Self { sku: sku.to_string() }
    }

    /// Bucket 0 of the SKU, where allocations and transfers land.
    pub fn bucket(&self) -> BucketKeys {
        BucketKeys::new(&self.sku, 0)
    }
    /// `inv:{S}:rg`: scope, home, allocation, global_total, placement_id, snap_seq.
    pub fn placement(&self) -> String {
        format!("inv:{{{}}}:rg", self.sku)
    }
    /// `inv:{S}:rgout`: transfer id -> `to:units:debited_at`, for good.
    pub fn transfers_out(&self) -> String {
        format!("inv:{{{}}}:rgout", self.sku)
    }
    /// `inv:{S}:rgin`: transfer id -> `from:units:debited_at:credited_at`, for good.
    pub fn transfers_in(&self) -> String {
        format!("inv:{{{}}}:rgin", self.sku)
    }
    /// `inv:{S}:rgack`: transfer id -> time the destination's credit was heard (source side).
    pub fn acknowledged(&self) -> String {
        format!("inv:{{{}}}:rgack", self.sku)
    }
    /// `inv:{S}:rgq`: the region outbox stream (placements, debits, credits).
    pub fn outbox(&self) -> String {
        format!("inv:{{{}}}:rgq", self.sku)
    }
    /// `inv:{S}:rgview`: region -> its latest snapshot (protobuf `RegionSnapshot`).
    pub fn views(&self) -> String {
        format!("inv:{{{}}}:rgview", self.sku)
    }
}

/// Transfer ids of operator moves (MoveRegionUnits) start with this.
pub const MOVE_PREFIX: &str = "move/";

/// Whether `transfer_id` is an operator move's.
pub fn is_move(transfer_id: &str) -> bool {
    transfer_id.starts_with(MOVE_PREFIX)
}

/// Global set of SKUs with a placement (or a view from another region): the snapshot,
/// relay and requester visit these.
pub const REGION_SKUS: &str = "inv:rg:skus";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::slot;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn region_keys_share_bucket_zeros_slot(sku in "[A-Za-z0-9._:/+-]{1,64}") {
            let keys = RegionKeys::new(&sku);
            let expected = slot(&keys.bucket().counters());
            for key in [keys.placement(), keys.transfers_out(), keys.transfers_in(), keys.acknowledged(), keys.outbox(), keys.views()] {
                prop_assert_eq!(slot(&key), expected);
            }
        }
    }
}
