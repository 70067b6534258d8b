//! Carts on ScyllaDB: one row per owner, written `USING TIMESTAMP <version>`, so the cell
//! timestamps are the cart versions and ScyllaDB's own last-write-wins keeps the newest
//! cart whatever order saves and deletes arrive in. No LWT. Every save is also `USING TTL`:
//! what is left of the store's cart TTL counted from the cart's `updated_at_ms`, so
//! ScyllaDB expires a cart nobody touched for the TTL (the purge SQLite runs, done by the
//! database).

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{ScyllaStore, corrupt, prepare_statement};
use crate::StoreError;
use crate::carts::{CartStore, StoredCart, StoredCartLine, validate_cart, validate_owner};

/// Longest TTL CQL accepts (20 years).
const MAX_TTL_SECONDS: i32 = 630_720_000;

/// Seconds a cart row written at `now_ms` has left of `ttl` counted from the cart's last
/// change, rounded up, plus one: the database counts a TTL from the current second
/// truncated, so without it a row could go up to a second early. At least 1 (a cart
/// already past its TTL goes at once), at most CQL's maximum.
fn ttl_seconds(ttl: std::time::Duration, updated_at_ms: i64, now_ms: i64) -> i32 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let left_ms = updated_at_ms.saturating_add(ttl_ms).saturating_sub(now_ms);
    // Rounded up, plus the truncated second: a cart never expires before its TTL is over.
    let left = left_ms.saturating_add(999).div_euclid(1000).saturating_add(1);
    i32::try_from(left.clamp(1, i64::from(MAX_TTL_SECONDS))).unwrap_or(MAX_TTL_SECONDS)
}

/// A cart line as the `carts.lines` tuple holds it.
type LineTuple = (String, i64, i64, String, i64);

/// The cart statements, prepared.
pub(super) struct CartStatements {
    load_cart: PreparedStatement,
    save_cart: PreparedStatement,
    delete_cart: PreparedStatement,
}

impl CartStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        Ok(Self {
            load_cart: prepare(
                format!("SELECT lines, version, updated_at_ms FROM {ks}.carts WHERE owner = ?"),
                true,
            )
            .await?,
            // The write timestamp is the version, so replays and reorderings are harmless.
            save_cart: prepare(
                format!(
                    "INSERT INTO {ks}.carts (owner, lines, version, updated_at_ms) VALUES (?, ?, ?, ?) \
                     USING TIMESTAMP ? AND TTL ?"
                ),
                true,
            )
            .await?,
            delete_cart: prepare(
                format!("DELETE FROM {ks}.carts USING TIMESTAMP ? WHERE owner = ?"),
                true,
            )
            .await?,
        })
    }
}

impl ScyllaStore {
    async fn cart_statements(&self) -> Result<&CartStatements, StoreError> {
        Ok(&self.statements().await?.carts)
    }
}

impl CartStore for ScyllaStore {
    async fn save_cart(&self, cart: StoredCart) -> Result<(), StoreError> {
        let version = validate_cart(&cart)?;
        let statements = self.cart_statements().await?;
        let lines: Vec<LineTuple> = cart
            .lines
            .into_iter()
            .map(|line| {
                (
                    line.sku,
                    line.quantity,
                    line.unit_price_minor,
                    line.currency,
                    line.added_at_ms,
                )
            })
            .collect();
        self.run(
            &statements.save_cart,
            (
                &cart.owner,
                lines,
                version,
                cart.updated_at_ms,
                version,
                ttl_seconds(self.cart_ttl, cart.updated_at_ms, crate::now_ms()),
            ),
        )
        .await?;
        Ok(())
    }

    async fn load_cart(&self, owner: &str) -> Result<Option<StoredCart>, StoreError> {
        validate_owner(owner)?;
        let statements = self.cart_statements().await?;
        let rows = self
            .run(&statements.load_cart, (owner,))
            .await?
            .into_rows_result()
            .map_err(corrupt)?;
        let Some((lines, version, updated_at_ms)) = rows
            .maybe_first_row::<(Option<Vec<LineTuple>>, i64, i64)>()
            .map_err(corrupt)?
        else {
            return Ok(None);
        };
        Ok(Some(StoredCart {
            owner: owner.to_string(),
            lines: lines
                .unwrap_or_default()
                .into_iter()
                .map(
                    |(sku, quantity, unit_price_minor, currency, added_at_ms)| StoredCartLine {
                        sku,
                        quantity,
                        unit_price_minor,
                        currency,
                        added_at_ms,
                    },
                )
                .collect(),
            version: StoreError::version_from_i64(version)?,
            updated_at_ms,
        }))
    }

    async fn delete_cart(&self, owner: &str) -> Result<(), StoreError> {
        let Some(stored) = self.load_cart(owner).await? else {
            return Ok(());
        };
        let statements = self.cart_statements().await?;
        // A tombstone at the stored version: it shadows that version and older ones, and a
        // save that raced ahead with a newer version survives it.
        self.run(
            &statements.delete_cart,
            (StoreError::version_to_i64(stored.version)?, owner),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_TTL_SECONDS, ttl_seconds};

    #[test]
    fn ttl_counts_from_the_last_change_rounded_up_and_bounded() {
        let day = Duration::from_secs(86_400);
        assert_eq!(ttl_seconds(day, 1_000_000, 1_000_000), 86_401);
        assert_eq!(ttl_seconds(day, 1_000_000, 1_000_000 + 1_500), 86_400);
        assert_eq!(ttl_seconds(day, 0, 86_400_000 - 1), 2);
        assert_eq!(ttl_seconds(day, 0, 86_400_000), 1);
        assert_eq!(ttl_seconds(day, 0, 86_400_000 * 3), 1, "already past its ttl");
        assert_eq!(ttl_seconds(day, i64::MIN, 0), 1);
        assert_eq!(ttl_seconds(Duration::MAX, 0, 0), MAX_TTL_SECONDS);
        assert_eq!(ttl_seconds(day, i64::MAX, 0), MAX_TTL_SECONDS);
    }
}
