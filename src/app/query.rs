//! The commands that read tables: `sql`, `status`, `tables`, and `maintain`, which compacts them.

use super::error::AppError;
use super::step::Context;
use crate::cli::{MaintainArgs, Output, SqlArgs, SqlFormat, StatusArgs, TablesArgs};
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

/// A query that cannot be planned (a typo, a table or column that does not exist) is the user's to fix
/// (exit 2); one that fails while it runs is the storage's (exit 4, retry is safe).
fn query_error(e: datafusion::error::DataFusionError) -> AppError {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::SQL(..) | E::Plan(_) | E::SchemaError(..) => AppError::Usage(format!("the query cannot run: {e}")),
        _ => TableError::Query(e.to_string()).into(),
    }
}

pub(super) async fn print_query(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
    max_rows: usize,
) -> Result<usize, AppError> {
    let batches = read_query(ctx, query)
        .await?
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

/// A query's result: what the engine made of it, or a usage error for one that would write.
async fn read_query(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
) -> Result<datafusion::dataframe::DataFrame, AppError> {
    match read_only::query(ctx, query).await {
        Ok(df) => Ok(df),
        Err(e @ ReadOnlyError::Write { .. }) => Err(AppError::Usage(format!("pfsync sql is read-only: {e}"))),
        Err(ReadOnlyError::Engine(e)) => Err(query_error(e)),
    }
}

pub(super) async fn sql(ctx: &Context, args: &SqlArgs) -> Result<(), AppError> {
    super::step::require_initialised(ctx).await?;
    let sql = sql_context(&ctx.settings.warehouse).await?;
    match args.output {
        SqlFormat::Table => {
            let rows = print_query(&sql, &args.query, args.max_rows.unwrap_or(100)).await?;
            println!("({rows} rows)");
        }
        SqlFormat::Json => write_json(&sql, &args.query, args.max_rows).await?,
        SqlFormat::Arrow => write_arrow(&sql, &args.query, args.max_rows).await?,
    }
    Ok(())
}

/// The result as one JSON array on stdout, written batch by batch as the query yields them. Every column is
/// written (a NULL as null), so each object has the same keys; a DECIMAL is its exact decimal text.
async fn write_json(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
    max_rows: Option<usize>,
) -> Result<(), AppError> {
    use futures::TryStreamExt;
    let query_error = |e: datafusion::error::DataFusionError| TableError::Query(e.to_string());
    let df = read_query(ctx, query).await?;
    let df = match max_rows {
        Some(n) => df.limit(0, Some(n)).map_err(query_error)?,
        None => df,
    };
    let mut batches = df.execute_stream().await.map_err(query_error)?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut writer = json_writer(&mut stdout);
    while let Some(batch) = batches.try_next().await.map_err(query_error)? {
        writer.write(&batch).map_err(json_error)?;
    }
    writer.finish().map_err(json_error)?;
    drop(writer);
    use std::io::Write as _;
    writeln!(stdout)
        .and_then(|()| stdout.flush())
        .map_err(|e| AppError::Internal(format!("cannot write the result: {e}")))
}

fn json_writer<W: std::io::Write>(w: W) -> arrow::json::Writer<W, arrow::json::writer::JsonArray> {
    arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow::json::writer::JsonArray>(w)
}

fn json_error(e: arrow::error::ArrowError) -> AppError {
    AppError::Internal(format!("cannot write the result as JSON: {e}"))
}

/// A query's rows as a JSON array, in memory (the status view's summaries are small).
async fn json_rows(
    ctx: &datafusion::prelude::SessionContext,
    query: &str,
) -> Result<Box<serde_json::value::RawValue>, AppError> {
    let batches = ctx
        .sql(query)
        .await
        .map_err(|e| TableError::Query(e.to_string()))?
        .collect()
        .await
        .map_err(|e| TableError::Query(e.to_string()))?;
    let mut bytes = Vec::new();
    let mut writer = json_writer(&mut bytes);
    for b in &batches {
        writer.write(b).map_err(json_error)?;
    }
    writer.finish().map_err(json_error)?;
    drop(writer);
    let text = String::from_utf8(bytes).map_err(|e| AppError::Internal(e.to_string()))?;
    serde_json::value::RawValue::from_string(text).map_err(|e| AppError::Internal(e.to_string()))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), AppError> {
    use std::io::Write as _;
    let text = serde_json::to_string_pretty(value).map_err(|e| AppError::Internal(e.to_string()))?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        // A reader that stopped early (`| head`) wanted no more.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::Internal(format!("cannot write the result: {e}")))
        }
        _ => Ok(()),
    }
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
    let write_error = |e: arrow::error::ArrowError| AppError::Internal(format!("cannot write the result: {e}"));
    let df = read_query(ctx, query).await?;
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
    if let Some(id) = &args.operation_id {
        return operation_status(ctx, id, args).await;
    }
    let sql = sql_context(&ctx.settings.warehouse).await?;
    let logged = sql.table_exist("purpleflea.payouts.status").unwrap_or(false);
    let open = format!(
        "SELECT operation_id, kind, status, attempts, amount_usd, error_code, last_recorded_at \
         FROM purpleflea.payouts.status WHERE status IN ('unknown', 'in_flight') ORDER BY last_recorded_at LIMIT {}",
        args.show
    );
    if args.output == Output::Json {
        #[derive(serde::Serialize)]
        struct Status {
            warehouse: String,
            payout_log: bool,
            summary: Box<serde_json::value::RawValue>,
            not_final: Box<serde_json::value::RawValue>,
        }
        let empty =
            || serde_json::value::RawValue::from_string("[]".into()).map_err(|e| AppError::Internal(e.to_string()));
        let (summary, not_final) = if logged {
            (json_rows(&sql, STATUS_SUMMARY).await?, json_rows(&sql, &open).await?)
        } else {
            (empty()?, empty()?)
        };
        let warehouse = ctx.settings.warehouse.root().to_string();
        return print_json(&Status { warehouse, payout_log: logged, summary, not_final });
    }
    if logged {
        print_query(&sql, STATUS_SUMMARY, 1000).await?;
        println!("not final:");
        if query_count(&sql, &format!("({open})")).await? == 0 {
            println!("(none: every operation in the log is final)");
        } else {
            print_query(&sql, &open, args.show).await?;
        }
    } else {
        println!("no payout log under {} yet", ctx.settings.warehouse.root());
    }
    Ok(())
}

/// `pfsync status OPERATION_ID`: the operation's events, oldest first, and why it waits.
async fn operation_status(ctx: &Context, id: &str, args: &StatusArgs) -> Result<(), AppError> {
    use crate::payouts::waiting::{utc, why};
    let log = crate::tables::open_existing(&ctx.settings.warehouse, &crate::tables::PAYOUT_LOG).await?;
    let mut events = match &log {
        Some(log) => crate::payouts::log::history(log, &[id.to_string()]).await?.remove(id).unwrap_or_default(),
        None => Vec::new(),
    };
    if events.is_empty() {
        return Err(AppError::Usage(format!(
            "no operation {id:?} in the payout log at {}: check the id (payout_id or action_id as in the source); \
             a row refused by validation is in purpleflea.payouts.rejects",
            super::step::display_location(&ctx.settings.warehouse)
        )));
    }
    events.sort_by_key(|e| (e.recorded_at, e.attempt));
    println!("operation {id} ({})", events[0].kind.as_str());
    for e in &events {
        let outcome = [
            e.http_status.map(|s| format!("http {s}")),
            e.tx_id.as_ref().map(|t| format!("tx {t}")),
            e.escrow_id.as_ref().map(|t| format!("escrow {t}")),
            e.error_code.clone(),
            e.error_message.as_ref().map(|m| crate::text::clip(m, 200).to_string()),
            e.decided_by.as_ref().map(|b| format!("by {b}")),
        ];
        let outcome: Vec<String> = outcome.into_iter().flatten().collect();
        println!(
            "  {}  {:<10} attempt {}  run {}  {}",
            utc(e.recorded_at),
            e.event.as_str(),
            e.attempt,
            e.run_id,
            crate::logging::escape_control(&outcome.join("; "))
        );
    }
    let opts = crate::payouts::plan::PlanOptions {
        namespace: String::new(),
        shard: None,
        max_total: None,
        max_count: None,
        in_flight_timeout: chrono::Duration::seconds(args.in_flight_timeout as i64),
        // A provider that cannot look outcomes up leaves an unknown to a person (see the README).
        can_look_up: true,
        now: crate::clock::process_clock().now(),
    };
    let status = crate::payouts::state::status(&events);
    match why(&events, &opts) {
        Some(wait) => println!("waits: {wait}"),
        None if status.is_final() => println!("final: nothing more is sent for it"),
        None => println!("not final: the next run sends it (a new attempt)"),
    }
    Ok(())
}

/// One table of `pfsync tables --output json`.
#[derive(serde::Serialize)]
struct TableLine {
    table: &'static str,
    location: String,
    /// Whether the table exists; a table not created yet has no version, rows or last run.
    created: bool,
    version: Option<u64>,
    rows: Option<i64>,
    last_commit_run_id: Option<String>,
}

pub(super) async fn tables(ctx: &Context, args: &TablesArgs) -> Result<(), AppError> {
    super::step::require_initialised(ctx).await?;
    use futures::TryStreamExt;
    let wh = &ctx.settings.warehouse;
    let sql = sql_context(wh).await?;
    let mut lines = Vec::new();
    for spec in crate::tables::ALL {
        let location = wh.location(&spec.table_name()).to_string();
        let line = match crate::tables::open_existing(wh, spec).await? {
            None => TableLine {
                table: spec.name,
                location,
                created: false,
                version: None,
                rows: None,
                last_commit_run_id: None,
            },
            Some(t) => {
                let rows = query_count(&sql, spec.name).await?;
                let last: Vec<deltalake::kernel::CommitInfo> =
                    t.history(Some(1)).try_collect().await.map_err(|e| TableError::Query(e.to_string()))?;
                let run =
                    last.first().and_then(|c| c.info.get("pfsync.run_id")).and_then(|v| v.as_str()).map(str::to_string);
                TableLine {
                    table: spec.name,
                    location,
                    created: true,
                    version: Some(t.version().unwrap_or(0)),
                    rows: Some(rows),
                    last_commit_run_id: run,
                }
            }
        };
        lines.push(line);
    }
    if args.output == Output::Json {
        return print_json(&lines);
    }
    println!("{:<36} {:>8} {:>10}  {:<38} location", "table", "version", "rows", "last commit's run id");
    for l in lines {
        let dash = || "-".to_string();
        println!(
            "{:<36} {:>8} {:>10}  {:<38} {}",
            l.table,
            l.version.map_or_else(dash, |v| v.to_string()),
            l.rows.map_or_else(dash, |r| r.to_string()),
            if l.created { l.last_commit_run_id.unwrap_or_else(dash) } else { "(not created)".to_string() },
            l.location
        );
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
