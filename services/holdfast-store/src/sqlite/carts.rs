//! Carts on SQLite: one row per owner, its lines as a JSON column.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::carts::{CartStore, StoredCart, StoredCartLine, validate_cart, validate_owner};

use super::{SqliteStore, sqlite_error};

/// from the Rust struct.
/// A cart line as stored in the `lines` JSON: short names keep the on-disk format apart
#[derive(Serialize, Deserialize)]
struct LineRecord {
    sku: String,
    qty: i64,
    price: i64,
    cur: String,
    at: i64,
}

impl CartStore for SqliteStore {
    async fn save_cart(&self, cart: StoredCart) -> Result<(), StoreError> {
        let version = validate_cart(&cart)?;
        let lines: Vec<LineRecord> = cart
            .lines
            .into_iter()
            .map(|line| LineRecord {
                sku: line.sku,
                qty: line.quantity,
                price: line.unit_price_minor,
                cur: line.currency,
                at: line.added_at_ms,
            })
            .collect();
        let lines = serde_json::to_string(&lines)
            .map_err(|e| StoreError::InvalidArgument(format!("cart lines: {e}")))?;
        let (owner, updated_at_ms) = (cart.owner, cart.updated_at_ms);
        self.write(move |conn| {
            // One statement: the version comparison and the write cannot interleave.
            conn.prepare_cached(
                "INSERT INTO carts (owner, lines, version, updated_at_ms, deleted)
                 VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT (owner) DO UPDATE SET
                     lines = excluded.lines, version = excluded.version,
                     updated_at_ms = excluded.updated_at_ms, deleted = 0
                 WHERE excluded.version > carts.version",
            )
            .and_then(|mut statement| statement.execute(params![owner, lines, version, updated_at_ms]))
            .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }

    async fn load_cart(&self, owner: &str) -> Result<Option<StoredCart>, StoreError> {
        validate_owner(owner)?;
        let owner = owner.to_string();
        self.lookup(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT lines, version, updated_at_ms FROM carts WHERE owner = ?1 AND deleted = 0",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row([&owner], |row| {
                            Ok((
                                row.get::<_, String>(0)?,
                                row.get::<_, i64>(1)?,
                                row.get::<_, i64>(2)?,
                            ))
                        })
                        .optional()
                })
                .map_err(sqlite_error)?;
            let Some((lines, version, updated_at_ms)) = row else {
                return Ok(None);
            };
            let lines: Vec<LineRecord> = serde_json::from_str(&lines)
                .map_err(|e| StoreError::Corrupt(format!("cart {owner:?} lines: {e}")))?;
            Ok(Some(StoredCart {
                lines: lines
                    .into_iter()
                    .map(|line| StoredCartLine {
                        sku: line.sku,
                        quantity: line.qty,
                        unit_price_minor: line.price,
                        currency: line.cur,
                        added_at_ms: line.at,
                    })
                    .collect(),
                version: StoreError::version_from_i64(version)?,
                updated_at_ms,
                owner,
            }))
        })
        .await
    }

    async fn delete_cart(&self, owner: &str) -> Result<(), StoreError> {
        validate_owner(owner)?;
        let owner = owner.to_string();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE carts SET deleted = 1, lines = '[]' WHERE owner = ?1")
                .and_then(|mut statement| statement.execute([&owner]))
                .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }
}
