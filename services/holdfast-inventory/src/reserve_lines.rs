//! A multi-line Reserve on standalone Redis in one `reservation_reserve.lua` call: the record's
//! first answer, every line's hold (all or nothing), the record and the sweeper's index in one
//! atomic step. The multi-step protocol ([`crate::reservations`]) makes a claim, a hold and an
//! index write per line and a transition, and keeps the claim's lease alive meanwhile; this
//! path has no crash window to recover from. Every SKU must live in one bucket (a split hot SKU
//! takes the multi-step path), and anything unusual (a multi-step Reserve of the id mid-flight,
//! a bucket Redis does not have) falls back to that path, which waits and rebuilds.

use fred::prelude::ClientLike;

use crate::error::InventoryError;
use crate::keys::BucketKeys;
use crate::metrics;
use crate::reservations::{
    Line, RECORD_RETENTION, REJECTED_RETENTION, ReserveAnswer, answer_from, conflict, decode, encode, ms,
};
use crate::scripts::{self, SingleReserve, WholeReserve};
use crate::stock::Stock;

impl Stock {
    /// Holds every line of `lines` (summed by SKU; `requested` the same as the record's lines, in
    /// bucket 0) in one script call, when the deployment and the SKUs allow it. `None`: take the multi-step path (a cluster, one line, a SKU in
    /// several buckets, the id pending under another call, or a bucket missing from Redis);
    /// nothing was written.
    pub(crate) async fn reserve_lines(
        &self,
        rid: &str,
        lines: &[(String, i64)],
        requested: &[Line],
        ttl_ms: i64,
        fingerprint: &str,
    ) -> Result<Option<ReserveAnswer>, InventoryError> {
        let client = self.client();
        if lines.len() < 2 || client.is_clustered() {
            return Ok(None);
        }
        // Summed by SKU (validate::lines): each bucket once in the script's KEYS.
        let mut skus: Vec<&str> = lines.iter().map(|(sku, _)| sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        if skus.len() != lines.len() {
            return Ok(None);
        }
        for sku in skus {
            if self.layout(sku).await?.buckets > 1 {
                return Ok(None);
            }
        }
        let held: Vec<(BucketKeys, i64)> = lines
            .iter()
            .map(|(sku, qty)| (BucketKeys::new(sku, 0), *qty))
            .collect();
        let record_lines = encode(&requested);
        let request = WholeReserve {
            rid,
            lines: &held,
            ttl_ms,
            fingerprint,
            record_lines: &record_lines,
            retention_ms: (ms(RECORD_RETENTION), ms(REJECTED_RETENTION)),
        };
        Ok(match scripts::reservation_reserve(client, request).await? {
            SingleReserve::Reserved(expires_at) => {
                metrics::holds_created(lines.len());
                self.line_hints().remember(rid, &record_lines);
                self.touched(held.into_iter().map(|(keys, _)| keys));
                Some(ReserveAnswer::Reserved { expires_at })
            }
            SingleReserve::Rejected(shortages) => {
                metrics::reservation_rejected();
                Some(ReserveAnswer::Insufficient(decode(&shortages)))
            }
            SingleReserve::Existing(record) => Some(answer_from(&record)),
            SingleReserve::Conflict => return Err(conflict(rid)),
            SingleReserve::Busy | SingleReserve::Missing => None,
            SingleReserve::Limited(_) => {
                return Err(InventoryError::Protocol {
                    script: "reservation_reserve.lua",
                    detail: "answered limited, which it never decides".into(),
                });
            }
        })
    }
}
