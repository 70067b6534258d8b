//! Inventory's durable truth on ScyllaDB: `stock_truth` written `USING TIMESTAMP <version>`
//! (last write wins by version, no LWT) and `stock_sales`, one idempotent row per
//! (SKU, reservation) in the SKU's partition. See `schema/scylla.cql`.

use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{READ_FAN_OUT, ScyllaStore, corrupt, prepare_statement};
use crate::stock_truth::{
    SaleRecord, StockTruth, StockTruthStore, StockWrite, page_size, validate_lookup, validate_sale,
    validate_stock,
};
use crate::{StoreError, now_ms};

/// A stock row: sku, stocked, version, updated_at_ms.
type TruthRow = (String, Option<i64>, Option<i64>, Option<i64>);

/// The truth statements, prepared.
pub(super) struct TruthStatements {
    write_stock: PreparedStatement,
    write_sale: PreparedStatement,
    get_stock: PreparedStatement,
    sold: PreparedStatement,
    sales_of: PreparedStatement,
    scan_first: PreparedStatement,
    scan_after: PreparedStatement,
}

impl TruthStatements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| prepare_statement(session, cql, idempotent);
        let columns = "sku, stocked, version, updated_at_ms";
        Ok(Self {
            // The write timestamp is the version: a lower version loses in any order.
            write_stock: prepare(
                format!(
                    "INSERT INTO {ks}.stock_truth (sku, stocked, version, updated_at_ms) VALUES (?, ?, ?, ?) \
                     USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            write_sale: prepare(
                format!("INSERT INTO {ks}.stock_sales (sku, reservation_id, qty, at_ms) VALUES (?, ?, ?, ?)"),
                true,
            )
            .await?,
            get_stock: prepare(format!("SELECT {columns} FROM {ks}.stock_truth WHERE sku = ?"), true).await?,
            sold: prepare(
                format!("SELECT sum(qty), count(*) FROM {ks}.stock_sales WHERE sku = ?"),
                true,
            )
            .await?,
            sales_of: prepare(
                format!(
                    "SELECT reservation_id, qty, at_ms FROM {ks}.stock_sales WHERE sku = ? AND reservation_id IN ?"
                ),
                true,
            )
            .await?,
            scan_first: prepare(format!("SELECT {columns} FROM {ks}.stock_truth LIMIT ?"), true).await?,
            scan_after: prepare(
                format!("SELECT {columns} FROM {ks}.stock_truth WHERE token(sku) > token(?) LIMIT ?"),
                true,
            )
            .await?,
        })
    }
}

impl ScyllaStore {
    async fn truth_statements(&self) -> Result<&TruthStatements, StoreError> {
        Ok(&self.statements().await?.truth)
    }

    /// (sold units, number of sales) of `sku`.
    async fn sold_units(&self, sku: &str) -> Result<(i64, i64), StoreError> {
        let statements = self.truth_statements().await?;
        let rows: Vec<(Option<i64>, i64)> = self.rows(&statements.sold, (sku,)).await?;
        Ok(rows
            .first()
            .map_or((0, 0), |(sum, count)| (sum.unwrap_or(0), *count)))
    }

    async fn with_sold(&self, row: TruthRow) -> Result<StockTruth, StoreError> {
        let (sku, stocked, version, updated_at_ms) = row;
        let (sold, _) = self.sold_units(&sku).await?;
        Ok(StockTruth {
            sku,
            stocked: stocked.unwrap_or(0),
            version: version.unwrap_or(0),
            sold,
            updated_at_ms: updated_at_ms.unwrap_or(0),
        })
    }
}

impl StockTruthStore for ScyllaStore {
    async fn record_stock(&self, writes: Vec<StockWrite>) -> Result<(), StoreError> {
        for write in &writes {
            validate_stock(write)?;
        }
        let statements = self.truth_statements().await?;
        let now = now_ms();
        stream::iter(writes)
            .map(|write| async move {
                self.run(
                    &statements.write_stock,
                    (&write.sku, write.stocked, write.version, now, write.version),
                )
                .await
            })
            .buffer_unordered(READ_FAN_OUT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn record_sales(&self, sales: Vec<SaleRecord>) -> Result<(), StoreError> {
        sales.iter().try_for_each(validate_sale)?;
        let statements = self.truth_statements().await?;
        for sale in &sales {
            self.run(
                &statements.write_sale,
                (&sale.sku, &sale.reservation_id, sale.qty, sale.at_ms),
            )
            .await?;
        }
        Ok(())
    }

    async fn get_stock_truth(&self, sku: &str) -> Result<Option<StockTruth>, StoreError> {
        let statements = self.truth_statements().await?;
        let rows: Vec<TruthRow> = self.rows(&statements.get_stock, (sku,)).await?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(Some(self.with_sold(row).await?));
        }
        let (sold, sales) = self.sold_units(sku).await?;
        Ok((sales > 0).then(|| StockTruth {
            sku: sku.to_string(),
            sold,
            ..StockTruth::default()
        }))
    }

    async fn sales_of(&self, sku: &str, reservation_ids: &[String]) -> Result<Vec<SaleRecord>, StoreError> {
        validate_lookup(sku, reservation_ids.len())?;
        if reservation_ids.is_empty() {
            return Ok(Vec::new());
        }
        let statements = self.truth_statements().await?;
        let rows: Vec<(String, Option<i64>, Option<i64>)> = self
            .rows(&statements.sales_of, (sku, reservation_ids.to_vec()))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(reservation_id, qty, at_ms)| SaleRecord {
                sku: sku.to_string(),
                reservation_id,
                qty: qty.unwrap_or(0),
                at_ms: at_ms.unwrap_or(0),
            })
            .collect())
    }

    async fn scan_stock_truth(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StockTruth>, StoreError> {
        let limit = i32::try_from(page_size(limit)?).map_err(corrupt)?;
        let statements = self.truth_statements().await?;
        let rows: Vec<TruthRow> = match after_sku {
            None => self.rows(&statements.scan_first, (limit,)).await?,
            Some(after) => self.rows(&statements.scan_after, (after, limit)).await?,
        };
        stream::iter(rows)
            .map(|row| self.with_sold(row))
            .buffered(READ_FAN_OUT)
            .try_collect()
            .await
    }
}
