//! Inventory's durable truth on SQLite: `stock_truth` (one row per SKU, replaced only by a
//! higher version) and `stock_sales` (one row per (SKU, reservation), insert-or-ignore).

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, sqlite_error};
use crate::stock_truth::{
    SaleRecord, StockTruth, StockTruthStore, StockWrite, page_size, validate_lookup, validate_sale,
    validate_stock,
};
use crate::{StoreError, now_ms};

/// A truth row with its SKU's sold units summed from `stock_sales`.
const TRUTH_SELECT: &str = "SELECT t.sku, t.stocked, t.version, t.updated_at_ms,
        (SELECT coalesce(sum(s.qty), 0) FROM stock_sales s WHERE s.sku = t.sku)
     FROM stock_truth t";

fn read_truth(row: &rusqlite::Row<'_>) -> rusqlite::Result<StockTruth> {
    Ok(StockTruth {
        sku: row.get(0)?,
        stocked: row.get(1)?,
        version: row.get(2)?,
        updated_at_ms: row.get(3)?,
        sold: row.get(4)?,
    })
}

fn sold_of(conn: &Connection, sku: &str) -> Result<(i64, i64), StoreError> {
    conn.prepare_cached("SELECT coalesce(sum(qty), 0), count(*) FROM stock_sales WHERE sku = ?1")
        .and_then(|mut statement| statement.query_row(params![sku], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sqlite_error)
}

impl StockTruthStore for SqliteStore {
    async fn record_stock(&self, writes: Vec<StockWrite>) -> Result<(), StoreError> {
        for write in &writes {
            validate_stock(write)?;
        }
        self.write(move |conn| {
            let tx = conn;
            let now = now_ms();
            {
                let mut statement = tx
                    .prepare_cached(
                        "INSERT INTO stock_truth (sku, stocked, version, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (sku) DO UPDATE SET stocked = excluded.stocked,
                             version = excluded.version, updated_at_ms = excluded.updated_at_ms
                         WHERE excluded.version > stock_truth.version",
                    )
                    .map_err(sqlite_error)?;
                for write in &writes {
                    statement
                        .execute(params![write.sku, write.stocked, write.version, now])
                        .map_err(sqlite_error)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn record_sales(&self, sales: Vec<SaleRecord>) -> Result<(), StoreError> {
        sales.iter().try_for_each(validate_sale)?;
        if sales.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "INSERT INTO stock_sales (sku, reservation_id, qty, at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (sku, reservation_id) DO NOTHING",
                )
                .map_err(sqlite_error)?;
            for sale in &sales {
                statement
                    .execute(params![sale.sku, sale.reservation_id, sale.qty, sale.at_ms])
                    .map_err(sqlite_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_stock_truth(&self, sku: &str) -> Result<Option<StockTruth>, StoreError> {
        let sku = sku.to_string();
        self.read(move |conn| {
            let stored = conn
                .prepare_cached(&format!("{TRUTH_SELECT} WHERE t.sku = ?1"))
                .and_then(|mut statement| statement.query_row(params![sku], read_truth).optional())
                .map_err(sqlite_error)?;
            if stored.is_some() {
                return Ok(stored);
            }
            let (sold, sales) = sold_of(conn, &sku)?;
            Ok((sales > 0).then(|| StockTruth {
                sku,
                sold,
                ..StockTruth::default()
            }))
        })
        .await
    }

    async fn sales_of(&self, sku: &str, reservation_ids: &[String]) -> Result<Vec<SaleRecord>, StoreError> {
        validate_lookup(sku, reservation_ids.len())?;
        let (sku, ids) = (sku.to_string(), reservation_ids.to_vec());
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached("SELECT qty, at_ms FROM stock_sales WHERE sku = ?1 AND reservation_id = ?2")
                .map_err(sqlite_error)?;
            let mut found = Vec::new();
            for id in ids {
                let row: Option<(i64, i64)> = statement
                    .query_row(params![sku, id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(sqlite_error)?;
                if let Some((qty, at_ms)) = row {
                    found.push(SaleRecord {
                        sku: sku.clone(),
                        reservation_id: id,
                        qty,
                        at_ms,
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    async fn scan_stock_truth(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StockTruth>, StoreError> {
        let limit = page_size(limit)?;
        let after = after_sku.unwrap_or("").to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "{TRUTH_SELECT} WHERE t.sku > ?1 ORDER BY t.sku LIMIT ?2"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map(params![after, limit], read_truth)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sqlite_error)
        })
        .await
    }
}
