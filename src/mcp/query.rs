//! Read-only SQL over the warehouse for the tools. Every value put in a query has passed the id rule (or
//! is the server's own), so no quote can reach the SQL text from an agent.

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use super::dispatch::Engine;
use super::error::McpError;
use crate::payouts::log::LogEvent;
use crate::tables::row::Row;
use crate::tables::{ALL, PAYOUT_LOG, RECONCILIATION, TableSpec, sql_context_of};

impl Engine {
    /// A session with only the tables `sql` names (and those under the views it names): opening a table
    /// reads its log, and a read tool should not pay for every table of the warehouse.
    pub(super) async fn ctx_for(&self, sql: &str) -> Result<SessionContext, McpError> {
        let specs: Vec<&TableSpec> = ALL
            .iter()
            .copied()
            .filter(|s| {
                sql.contains(s.name)
                    || (s.name == PAYOUT_LOG.name && sql.contains("purpleflea.payouts.status"))
                    || (s.name == RECONCILIATION.name && sql.contains("purpleflea.payouts.open_findings"))
            })
            .collect();
        sql_context_of(&self.wh, &specs).await.map_err(McpError::OpenTables)
    }

    /// Rows of a read-only query as JSON objects.
    pub(super) async fn rows(&self, sql: &str) -> Result<Vec<Map<String, Value>>, McpError> {
        to_json(&collect(&self.ctx_for(sql).await?, sql).await?)
    }

    pub(super) async fn table_exists(&self, name: &str) -> Result<bool, McpError> {
        let ctx = self.ctx_for(name).await?;
        Ok(ctx.table_exist(name).unwrap_or(false))
    }

    /// Rows of one table's row type: `sql` selects whole rows of it; none when the table is absent.
    pub(super) async fn typed_rows<R: Row>(&self, sql: &str) -> Result<Vec<R>, McpError> {
        let ctx = self.ctx_for(sql).await?;
        if !ctx.table_exist(R::SPEC.name).unwrap_or(false) {
            return Ok(Vec::new());
        }
        Ok(R::from_batches(&collect(&ctx, sql).await?)?)
    }
}

pub(super) async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, McpError> {
    ctx.sql(sql).await.map_err(McpError::query)?.collect().await.map_err(McpError::query)
}

/// The payout log's rows a query over `purpleflea.payouts.log` returns, decoded with their types.
pub(super) async fn log_rows(ctx: &SessionContext, sql: &str) -> Result<Vec<LogEvent>, McpError> {
    Ok(LogEvent::from_batches(&collect(ctx, sql).await?)?)
}

fn to_json(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, McpError> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Vec::new());
    }
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    Ok(serde_json::from_slice(&w.into_inner())?)
}
