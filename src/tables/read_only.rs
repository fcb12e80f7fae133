//! SQL written by a person (`pfsync sql`, the source queries of `pfsync payouts`, a feed's query) only
//! reads. The session those run in holds every table under its three-level name, and DataFusion executes
//! what it plans: an `INSERT INTO purpleflea.payouts.log` appended a forged row to the append-only log, and
//! one into a pending table rounded an amount without a word. pfsync's own tables are written by the
//! commands that own them, and a source table by the upstream job that owns it; never through a query.
//!
//! Two structural checks, no keyword matching: every parsed statement must be one that reads (a query,
//! `EXPLAIN` of one, `SHOW`, `DESCRIBE`), which also names the statements DataFusion cannot plan (`MERGE`,
//! `TRUNCATE`); then the logical plan must hold no DDL, DML or statement node (DataFusion's own
//! [`SQLOptions`] check, which also sees a write under `EXPLAIN ANALYZE`) before it is executed.

use std::ops::ControlFlow;

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Statement as Sql, visit_relations};

use super::spec::{ALL, PAYOUT_LOG, Writer};

/// A statement refused because it would change a table or the session.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    #[error("{verb} is refused. {where_to}")]
    Write { verb: String, where_to: String },
    #[error(transparent)]
    Engine(#[from] DataFusionError),
}

/// What a read-only session may plan: no DDL, no DML (`COPY` included), no statements (`SET`, `BEGIN`).
pub fn options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Plan `sql` in `ctx` as a read; a statement that would write is refused before anything runs.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<DataFrame, ReadOnlyError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    // Every statement of the text: DataFusion refuses more than one later, but a write after a harmless
    // first statement is named here. (The parser's dialect is not `Send`: it ends before any await.)
    let statements = {
        let parser_dialect = datafusion::sql::sqlparser::dialect::dialect_from_str(dialect)
            .ok_or_else(|| DataFusionError::Plan(format!("unknown SQL dialect {dialect}")))?;
        DFParserBuilder::new(sql).with_dialect(parser_dialect.as_ref()).build()?.parse_statements()?
    };
    for s in &statements {
        if let Some(verb) = write_of(s) {
            return Err(ReadOnlyError::Write { verb, where_to: where_to(&relations(s)) });
        }
    }
    let plan = state.create_logical_plan(sql).await?;
    if let Err(e) = options().verify_plan(&plan) {
        // "DML not supported: Insert Into": the node DataFusion found.
        let message = e.message();
        let verb = message.rsplit_once(": ").map_or(message.as_ref(), |(_, v)| v).to_uppercase();
        let tables = statements.iter().flat_map(relations).collect::<Vec<_>>();
        return Err(ReadOnlyError::Write { verb, where_to: where_to(&tables) });
    }
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// The statement's leading words when it does anything but read; `None` for a read.
fn write_of(statement: &Statement) -> Option<String> {
    match statement {
        Statement::Statement(s) => match s.as_ref() {
            Sql::Query(_)
            | Sql::ExplainTable { .. }
            | Sql::ShowTables { .. }
            | Sql::ShowColumns { .. }
            | Sql::ShowViews { .. }
            | Sql::ShowSchemas { .. }
            | Sql::ShowDatabases { .. }
            | Sql::ShowCatalogs { .. }
            | Sql::ShowObjects(_)
            | Sql::ShowFunctions { .. }
            | Sql::ShowVariable { .. }
            | Sql::ShowVariables { .. }
            | Sql::ShowCreate { .. }
            | Sql::ShowStatus { .. }
            | Sql::ShowCollation { .. }
            | Sql::ShowCharset(_) => None,
            Sql::Explain { statement, .. } => write_of(&Statement::Statement(statement.clone())),
            other => Some(leading_words(&other.to_string())),
        },
        Statement::Explain(e) => write_of(&e.statement),
        Statement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".into()),
        Statement::CopyTo(_) => Some("COPY".into()),
        Statement::Reset(_) => Some("RESET".into()),
    }
}

/// `INSERT`, `DROP TABLE`, `CREATE VIEW`: enough of the statement to say what was refused, none of its values.
fn leading_words(text: &str) -> String {
    let mut words = text.split_whitespace().map(str::to_uppercase);
    let first = words.next().unwrap_or_default();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => match words.next() {
            Some(w) if w.chars().all(|c| c.is_ascii_alphabetic()) => format!("{first} {w}"),
            _ => first,
        },
        _ => first,
    }
}

/// The tables a statement names (written or read), as written.
fn relations(statement: &Statement) -> Vec<String> {
    let mut out = Vec::new();
    match statement {
        Statement::Statement(s) => {
            let _ = visit_relations(s.as_ref(), |name| {
                out.push(name.to_string().to_lowercase());
                ControlFlow::<()>::Continue(())
            });
        }
        Statement::Explain(e) => out = relations(&e.statement),
        _ => {}
    }
    out
}

/// Where to write instead, for the tables the statement names.
fn where_to(tables: &[String]) -> String {
    let mut lines = Vec::new();
    for spec in ALL {
        if !tables.iter().any(|t| t == spec.name) {
            continue;
        }
        let line = match spec.writer {
            _ if spec.name == PAYOUT_LOG.name => format!(
                "{} is append-only and written only by `pfsync payouts` and `pfsync rules`; a person's \
                 correction is recorded with `pfsync resolve`",
                spec.name
            ),
            Writer::Pfsync => format!("{} is pfsync's own: only the pfsync command that owns it writes it", spec.name),
            Writer::Upstream { .. } => {
                format!("{} is a source: write it in the upstream job that owns it (pfsync only reads it)", spec.name)
            }
        };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return "pfsync's own tables are written only by the commands that own them (the payout log: \
                `pfsync payouts` and `pfsync rules`; corrections: `pfsync resolve`), a source table by the \
                upstream job that owns it"
            .into();
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(sql: &str) -> Option<String> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.unwrap().collect().await.unwrap();
        match query(&ctx, sql).await {
            Err(ReadOnlyError::Write { verb, where_to }) => Some(format!("{verb}: {where_to}")),
            Err(ReadOnlyError::Engine(_)) | Ok(_) => None,
        }
    }

    #[tokio::test]
    async fn reads_pass_and_every_kind_of_write_is_refused_by_its_statement_or_its_plan() {
        for read in
            ["SELECT * FROM t", "EXPLAIN SELECT 1", "SHOW TABLES", "DESCRIBE t", "WITH x AS (SELECT 1) SELECT * FROM x"]
        {
            assert_eq!(refused(read).await, None, "{read}");
        }
        for (write, verb) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("insert into t select 1", "INSERT"),
            ("UPDATE t SET a = 2", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("TRUNCATE TABLE t", "TRUNCATE"),
            ("MERGE INTO t USING t s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE"),
            ("CREATE TABLE u (a INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE t", "DROP TABLE"),
            ("COPY t TO '/tmp/x.csv'", "COPY"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "INSERT"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("SELECT 1; DROP TABLE t", "DROP TABLE"),
        ] {
            let r = refused(write).await.unwrap_or_else(|| panic!("{write} was not refused"));
            assert!(r.starts_with(verb), "{write}: {r}");
        }
        for write in [
            "INSERT INTO purpleflea.payouts.log VALUES (1)",
            "EXPLAIN ANALYZE INSERT INTO purpleflea.payouts.log VALUES (1)",
        ] {
            let log = refused(write).await.unwrap();
            assert!(log.contains("purpleflea.payouts.log is append-only") && log.contains("pfsync resolve"), "{log}");
        }
        let pending = refused("DELETE FROM purpleflea.payouts.pending").await.unwrap();
        assert!(pending.contains("upstream job"), "{pending}");
    }
}
