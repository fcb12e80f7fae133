//! The commands that read tables: `sql`, `status`, `tables`, and `maintain`, which compacts them.

use super::error::AppError;
use super::step::Context;
use crate::cli::{MaintainArgs, SqlArgs, SqlFormat, StatusArgs};
use crate::maintain::{MaintainOptions, maintain_all};
use crate::tables::read_only::{self, ReadOnlyError};
use crate::tables::{CommitInfo, TableError, sql_context};

pub(super) async fn query_count(ctx: &datafusion::prelude::SessionContext, table: &str) -> Result<i64, AppError> {
    let batches = ctx
        .sql(&format!("SELECT count(*) AS n FROM {table}"))
        .await
        .map_err(|e| TableError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| TableError::Query(e.to_string()))?;
    let n = batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(n)
}

pub(super) async fn print_query(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
    max_rows: usize,
) -> Result<usize, AppError> {
    let df = match read_only::query(ctx, query).await {
        Ok(df) => df,
        Err(e @ ReadOnlyError::Write { .. }) => return Err(AppError::Usage(format!("pfsync sql is read-only: {e}"))),
        Err(ReadOnlyError::Engine(e)) => return Err(TableError::Query(e.to_string()).into()),
    };
    let batches = df
        .limit(0, Some(max_rows))
        .map_err(|e| TableError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| TableError::Query(e.to_string()))?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let table = arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| AppError::Internal(e.to_string()))?;
    println!("{table}");
    Ok(rows)
}

pub(super) async fn sql(ctx: &Context, args: &SqlArgs) -> Result<(), AppError> {
    super::step::require_initialised(ctx).await?;
    let sql = sql_context(&ctx.settings.warehouse).await?;
    match args.format {
        SqlFormat::Table => {
            let rows = print_query(&sql, &args.query, args.max_rows.unwrap_or(100)).await?;
            println!("({rows} rows)");
        }
        SqlFormat::Arrow => write_arrow(&sql, &args.query, args.max_rows).await?,
    }
    Ok(())
}

/// The result as an Arrow IPC stream on stdout, batch by batch as the query yields them: a program reading
/// it gets every value with its type (a text table would turn an exact decimal, a NULL or an empty string
/// into the same characters), and a large result never sits in memory whole.
async fn write_arrow(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
    max_rows: Option<usize>,
) -> Result<(), AppError> {
    use futures::TryStreamExt;
    let query_error = |e: datafusion::error::DataFusionError| TableError::Query(e.to_string());
    let write_error = |e: arrow::error::ArrowError| AppError::Internal(format!("cannot write the result: {e}"));
    let df = ctx.sql(query).await.map_err(query_error)?;
    let df = match max_rows {
        Some(n) => df.limit(0, Some(n)).map_err(query_error)?,
        None => df,
    };
    let mut batches = df.execute_stream().await.map_err(query_error)?;
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(stdout, &batches.schema()).map_err(write_error)?;
    while let Some(batch) = batches.try_next().await.map_err(query_error)? {
        writer.write(&batch).map_err(write_error)?;
    }
    writer.finish().map_err(write_error)
}

/// Operations per kind and status, from the status view.
pub(super) const STATUS_SUMMARY: &str = "SELECT kind, status, count(*) AS operations, sum(amount_usd) AS amount_usd \
     FROM purpleflea.payouts.status GROUP BY kind, status ORDER BY kind, status";

pub(super) async fn status(ctx: &Context, args: &StatusArgs) -> Result<(), AppError> {
    super::step::require_initialised(ctx).await?;
    let sql = sql_context(&ctx.settings.warehouse).await?;
    if sql.table_exist("purpleflea.payouts.status").unwrap_or(false) {
        print_query(&sql, STATUS_SUMMARY, 1000).await?;
        let open = format!(
            "SELECT operation_id, kind, status, attempts, amount_usd, error_code, last_recorded_at \
             FROM purpleflea.payouts.status WHERE status IN ('unknown', 'in_flight') ORDER BY last_recorded_at LIMIT {}",
            args.show
        );
        println!("not final:");
        print_query(&sql, &open, args.show).await?;
    } else {
        println!("no payout log under {} yet", ctx.settings.warehouse.root());
    }
    Ok(())
}

pub(super) async fn tables(ctx: &Context) -> Result<(), AppError> {
    super::step::require_initialised(ctx).await?;
    use futures::TryStreamExt;
    let wh = &ctx.settings.warehouse;
    let sql = sql_context(wh).await?;
    println!("{:<36} {:>8} {:>10}  {:<38} location", "table", "version", "rows", "last commit's run id");
    for spec in crate::tables::ALL {
        let location = wh.location(&spec.table_name());
        match crate::tables::open_existing(wh, spec).await? {
            None => println!("{:<36} {:>8} {:>10}  {:<38} {location}", spec.name, "-", "-", "(not created)"),
            Some(t) => {
                let rows = query_count(&sql, spec.name).await?;
                let last: Vec<deltalake::kernel::CommitInfo> =
                    t.history(Some(1)).try_collect().await.map_err(|e| TableError::Query(e.to_string()))?;
                let run = last
                    .first()
                    .and_then(|c| c.info.get("pfsync.run_id"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string();
                println!("{:<36} {:>8} {:>10}  {:<38} {location}", spec.name, t.version().unwrap_or(0), rows, run);
            }
        }
    }
    Ok(())
}

pub(super) async fn maintain(ctx: &Context, args: &MaintainArgs) -> Result<(), AppError> {
    let opts = MaintainOptions { retention_hours: args.retention_hours, i_know: args.i_know, dry_run: args.dry_run };
    opts.validate()?;
    super::step::require_initialised(ctx).await?;
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "maintain" };
    let reports = maintain_all(&ctx.settings.warehouse, &opts, &commit).await?;
    if reports.is_empty() {
        println!("no pfsync tables under {}", ctx.settings.warehouse.root());
    }
    for r in reports {
        println!("{r}");
    }
    Ok(())
}
