//! Redis key builders: the only place key names are spelled (layout: `docs/inventory-redis.md`).

/// Most hot-SKU buckets a SKU may have.
pub const MAX_BUCKETS: u32 = 64;

/// The keys of one bucket of one SKU; all share the hash tag `{sku}` (bucket 0) or
/// `{sku~i}`, so every per-bucket script is single-slot on Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKeys {
    /// The SKU.
    pub sku: String,
    /// 0 for the SKU's own counters, 1.. for hot-SKU sub-buckets.
    pub index: u32,
    /// The hash tag content.
    pub tag: String,
}

impl BucketKeys {
    /// Keys of bucket `index` of `sku`.
    pub fn new(sku: &str, index: u32) -> Self {
        let tag = if index == 0 {
            sku.to_string()
        } else {
            format!("{sku}~{index}")
        };
        Self {
            sku: sku.to_string(),
            index,
            tag,
        }
    }

    /// Recovers the bucket from a tag stored in the expiry index.
    pub fn from_tag(tag: &str) -> Self {
        match tag.rsplit_once('~') {
            Some((sku, index)) => match index.parse() {
                Ok(index) => Self::new(sku, index),
                Err(_) => Self::new(tag, 0),
            },
            None => Self::new(tag, 0),
        }
    }

    /// `inv:{B}`: on_hand, reserved, sold (+ buckets on bucket 0).
    pub fn counters(&self) -> String {
        format!("inv:{{{}}}", self.tag)
    }
    /// `inv:{B}:holds`: the old layout's zset reservation id -> expiry ms (still read, never
    /// written: see `hold_shard`). The hold scripts take it as KEYS[2] and derive the new
    /// layout's keys from it.
    pub fn holds(&self) -> String {
        format!("inv:{{{}}}:holds", self.tag)
    }
    /// `inv:{B}:held`: the old layout's hash reservation id -> units (still read, never written).
    pub fn held(&self) -> String {
        format!("inv:{{{}}}:held", self.tag)
    }
    /// `inv:{B}:h<n>`: hold shard `n`, a small hash reservation id -> expiry ms * 1000 + units
    /// (`hold_put` in the shared Lua helpers; the scripts derive this name from `holds()`).
    pub fn hold_shard(&self, n: u32) -> String {
        format!("inv:{{{}}}:h{n}", self.tag)
    }
    /// `inv:{B}:hx`: zset hold shard -> a lower bound of its earliest expiry (lazy expiry's index),
    /// from two shards on (with one, the bound is the field `hx` of the bucket hash).
    pub fn hold_index(&self) -> String {
        format!("inv:{{{}}}:hx", self.tag)
    }
    /// `inv:{B}:adj`: adjustment ids applied.
    pub fn adjustments(&self) -> String {
        format!("inv:{{{}}}:adj", self.tag)
    }
    /// `inv:{B}:xfer`: rebalance transfers out, not yet confirmed.
    pub fn transfers_out(&self) -> String {
        format!("inv:{{{}}}:xfer", self.tag)
    }
    /// `inv:{B}:xin`: rebalance transfer ids received.
    pub fn transfers_in(&self) -> String {
        format!("inv:{{{}}}:xin", self.tag)
    }
    /// `inv:{B}:events`: the outbox stream.
    pub fn events(&self) -> String {
        format!("inv:{{{}}}:events", self.tag)
    }
}

/// `inv:{sku}:soldout`: hot SKUs' sold-out marker, in bucket 0's slot.
pub fn sold_out(sku: &str) -> String {
    format!("inv:{{{sku}}}:soldout")
}

/// `res:{T}`: the record shard of a reservation, T the shortest tag of the rid's cluster slot
/// (so it shares that slot with [`legacy_reservation`]). Records are fields of its generation
/// hashes `res:{T}:<g>` / `res:{T}:s<g>` on a cluster (standalone Redis pools them:
/// [`record_shard`]; too big for a listpack, `res:{T}:k:<rid>`); only the `bucket` Lua prelude
/// (`rec_get`/`rec_put`) names those.
pub fn reservation(reservation_id: &str) -> String {
    format!("res:{{{}}}", slot_tag(slot(&legacy_reservation(reservation_id))))
}

/// `res:{rid}`: where a reservation's record was kept before the record shards (one key per
/// reservation). Still read (and moved on the next write) by the record scripts.
pub fn legacy_reservation(reservation_id: &str) -> String {
    format!("res:{{{reservation_id}}}")
}

/// The record shard as a record script's caller declares it: [`reservation`] on a cluster; on
/// standalone Redis (`pooled`) `res:{T}:pooled`, which tells the scripts to keep records in the
/// pooled generation hashes `res:pool:<gen>:<i>` (shard counts in `res:pool`; docs/inventory-redis.md,
/// "Pooled records"), reading `res:{T}`'s generations as well for the window after the first
/// pooled write. Not a key itself; a cluster cannot pool (one slot per script).
pub fn record_shard(reservation_id: &str, pooled: bool) -> String {
    let shard = reservation(reservation_id);
    if pooled { format!("{shard}:pooled") } else { shard }
}

/// The KEYS of a record script: the record shard ([`record_shard`]), then the legacy key (same
/// slot).
pub fn reservation_keys(reservation_id: &str, pooled: bool) -> Vec<String> {
    vec![
        record_shard(reservation_id, pooled),
        legacy_reservation(reservation_id),
    ]
}

/// The shortest tag (digits, then letters; shortest first) whose cluster slot is `target`.
pub fn slot_tag(target: u16) -> &'static str {
    static TAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut tags = vec![String::new(); 16384];
        let mut missing = tags.len();
        let mut n: u64 = 0;
        while missing > 0 {
            // n in bijective base 62: every string of the alphabet once, shortest first.
            let mut tag = Vec::new();
            let mut m = n + 1;
            while m > 0 {
                m -= 1;
                tag.push(ALPHABET[(m % 62) as usize]);
                m /= 62;
            }
            let tag = String::from_utf8(tag).unwrap_or_default();
            let at = usize::from(slot(&tag));
            if tags[at].is_empty() {
                tags[at] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &TAGS[usize::from(target % 16384)]
}

/// How many zsets the sweeper's index is spread over (`expiry_index`). Each stays a listpack
/// (Redis's `zset-max-listpack-entries`, 128) while under ~100 buckets with holds hash to it: up
/// to ~25,000 buckets with holds at once; past that, shards turn into skiplists, as big per
/// entry as the single zset was.
pub const EXPIRY_SHARDS: u16 = 256;

/// The sweeper's index for the bucket whose hash tag is `tag`: the zset `inv:expiries:<n>`
/// (bucket tag -> earliest hold expiry, ms), n = the tag's cluster slot mod [`EXPIRY_SHARDS`].
/// One zset for every bucket was a skiplist from 129 buckets on (≈110 bytes an entry against
/// ≈25 in a listpack; docs/inventory-redis.md).
pub fn expiry_index(tag: &str) -> String {
    expiry_shard(slot(tag) % EXPIRY_SHARDS)
}

/// Every shard of the sweeper's index, then [`LEGACY_EXPIRY_INDEX`].
pub fn expiry_indexes() -> impl Iterator<Item = String> {
    (0..EXPIRY_SHARDS)
        .map(expiry_shard)
        .chain(std::iter::once(LEGACY_EXPIRY_INDEX.to_string()))
}

/// `inv:expiries:<n>`: shard `n` of the sweeper's index.
fn expiry_shard(n: u16) -> String {
    format!("inv:expiries:{n}")
}

/// The one zset every bucket was indexed in before [`expiry_index`]: still read (and drained
/// into the shards) by the sweeper, so buckets a build before indexed there are still swept.
pub const LEGACY_EXPIRY_INDEX: &str = "inv:expiries";
/// Global set of SKUs with more than one bucket, for the rebalancer.
pub const HOT_SKUS: &str = "inv:hot";
/// Pattern matching every outbox stream (crash recovery of the relay).
pub const EVENTS_PATTERN: &str = "inv:{*}:events";
/// Pattern matching every bucket with transfers out pending (the rebalancer's re-drive scan).
pub const TRANSFERS_PATTERN: &str = "inv:{*}:xfer";
/// The per-slot record shards' generation hashes (`res:{T}:<g>`, `res:{T}:s<g>`), for the survey
/// that ends their reads on standalone Redis once none is left ([`RECORD_POOL`]).
pub const PER_SLOT_RECORDS_PATTERN: &str = "res:{*}:*";
/// The records of the per-reservation layout ([`legacy_reservation`]: `res:{rid}`, a string or
/// a hash), for the survey that ends their reads on standalone Redis once none is left.
pub const LEGACY_RECORDS_PATTERN: &str = "res:{*}";
/// The pooled records' hash of counts (standalone Redis; docs/inventory-redis.md, "Pooled
/// records"). Its field `per_slot` = `0` says no per-slot record shard is left to read, `legacy`
/// = `0` no record of the per-reservation layout.
pub const RECORD_POOL: &str = "res:pool";

/// The hash tag Redis Cluster hashes for `key` (the rules of CLUSTER KEYSLOT).
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// CRC16/XMODEM mod 16384: the Redis Cluster slot of `key`.
pub fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for byte in hash_tag(key).bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slot_matches_redis_reference_values() {
        // Values from CLUSTER KEYSLOT on redis-server 7.0.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("123456789"), 0x31C3, "CRC16/XMODEM check value");
    }

    #[test]
    fn bucket_keys_of_bucket_zero_use_the_plain_sku_tag() {
        let keys = BucketKeys::new("TSHIRT-M", 0);
        assert_eq!(keys.counters(), "inv:{TSHIRT-M}");
        assert_eq!(keys.holds(), "inv:{TSHIRT-M}:holds");
        assert_eq!(keys.hold_shard(12), "inv:{TSHIRT-M}:h12");
        assert_eq!(keys.hold_index(), "inv:{TSHIRT-M}:hx");
        assert_eq!(BucketKeys::new("TSHIRT-M", 3).counters(), "inv:{TSHIRT-M~3}");
        assert_eq!(sold_out("TSHIRT-M"), "inv:{TSHIRT-M}:soldout");
    }

    #[test]
    fn hot_sku_buckets_spread_over_slots() {
        let slots: std::collections::HashSet<u16> = (0..8)
            .map(|i| slot(&BucketKeys::new("FLASH-1", i).counters()))
            .collect();
        assert_eq!(slots.len(), 8, "eight buckets, eight slots");
    }

    #[test]
    fn every_slot_has_a_short_tag() {
        for s in 0..16384u16 {
            let tag = slot_tag(s);
            assert!(!tag.is_empty() && tag.len() <= 4, "slot {s}: {tag:?}");
            assert_eq!(slot(tag), s);
        }
    }

    proptest! {
        #[test]
        fn a_record_shard_shares_the_slot_of_the_legacy_record(rid in "[ -z|~]{1,128}") {
            prop_assert_eq!(slot(&reservation(&rid)), slot(&legacy_reservation(&rid)));
            prop_assert_eq!(reservation_keys(&rid, true).len(), 2);
        }

        #[test]
        fn every_key_of_a_bucket_shares_one_slot(sku in "[A-Za-z0-9._:/+-]{1,64}", index in 0u32..64) {
            let keys = BucketKeys::new(&sku, index);
            let expected = slot(&keys.counters());
            for key in [keys.holds(), keys.held(), keys.hold_index(), keys.hold_shard(index * 7), keys.adjustments(), keys.transfers_out(), keys.transfers_in(), keys.events()] {
                prop_assert_eq!(slot(&key), expected);
            }
            if index == 0 {
                prop_assert_eq!(slot(&sold_out(&sku)), expected);
            }
        }

        #[test]
        fn tags_round_trip(sku in "[A-Za-z0-9._:/+-]{1,64}", index in 0u32..64) {
            let keys = BucketKeys::new(&sku, index);
            prop_assert_eq!(BucketKeys::from_tag(&keys.tag), keys);
        }
    }
}
