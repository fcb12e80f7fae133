//! Opening, creating and checking Delta tables, and the commit metadata every write carries.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{DataType as DeltaType, StructField};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use serde_json::Value;
use url::Url;

use super::name::{TableName, Warehouse};
use super::spec::{ALL, ColumnType, TableSpec, Writer};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "table {table} at {location} exists with an incompatible schema ({details}); pfsync never rewrites a schema: \
         migrate or move the table, or map {table} to another location in the config file"
    )]
    IncompatibleSchema { table: String, location: String, details: String },
    #[error(
        "table {table} at {location} cannot be read as a source ({details}); pfsync reads {columns} from it: have \
         the upstream job write those with compatible types, or read the table through --payouts-sql / \
         --actions-sql"
    )]
    IncompatibleSource { table: String, location: String, details: String, columns: String },
    #[error(
        "table {table} at {location} needs a reader feature delta-rs cannot read: {features}; reading it \
         without the feature could return wrong rows or values (rows it deleted, say). Have its writer leave \
         the feature off, or upgrade pfsync"
    )]
    UnsupportedFeatures { table: String, location: String, features: String },
    #[error("table {table} at {location}: {source}")]
    Delta { table: String, location: String, source: Box<DeltaTableError> },
    #[error("cannot prepare the folder for {table} at {location}: {source}")]
    Folder { table: String, location: String, source: std::io::Error },
    #[error(
        "{location} holds files but no Delta table (e.g. {example}); pfsync creates {table} only in a new or empty \
         folder: map {table} to a folder of its own in the config file"
    )]
    NotATableFolder { table: String, location: String, example: String },
    #[error("query failed: {0}")]
    Query(String),
    #[error("{what}: no Delta table at {location}: check the path (a folder holding a _delta_log)")]
    NoTableAt { what: String, location: String },
}

impl TableError {
    pub fn class(&self) -> crate::errors::ErrorClass {
        match self {
            // The location is wrong, not the storage: a retry finds the same files.
            TableError::NotATableFolder { .. } | TableError::NoTableAt { .. } => crate::errors::ErrorClass::Usage,
            _ => crate::errors::ErrorClass::Storage,
        }
    }
}

/// Commit metadata written into every commit pfsync makes, so `DESCRIBE HISTORY` shows which run and step
/// wrote what.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub run_id: String,
    pub step: &'static str,
}

impl CommitInfo {
    pub fn properties(&self) -> CommitProperties {
        CommitProperties::default().with_metadata([
            ("pfsync.run_id".to_string(), Value::String(self.run_id.clone())),
            ("pfsync.step".to_string(), Value::String(self.step.to_string())),
            ("pfsync.version".to_string(), Value::String(env!("CARGO_PKG_VERSION").to_string())),
        ])
    }
}

fn delta_err(spec: &TableSpec, location: &Url) -> impl FnOnce(DeltaTableError) -> TableError {
    let table = spec.name.to_string();
    let location = location.to_string();
    move |source| TableError::Delta { table, location, source: Box::new(source) }
}

/// Open the table at its warehouse location, creating it from its spec when absent. An existing table
/// whose columns differ from the spec is refused, never altered.
pub async fn open_or_create(wh: &Warehouse, spec: &TableSpec, commit: &CommitInfo) -> Result<DeltaTable, TableError> {
    let location = wh.location(&spec.table_name());
    if location.scheme() == "file"
        && let Ok(path) = location.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|source| TableError::Folder {
            table: spec.name.to_string(),
            location: location.to_string(),
            source,
        })?;
    }
    let table = open_at(wh, spec, &location).await?;
    let table = if table.version().is_some() {
        table
    } else if let Some(example) = foreign_file(&table, spec, &location).await? {
        // Another run may have created the table, and written its first files, since we looked.
        let theirs = open_at(wh, spec, &location).await?;
        if theirs.version().is_none() {
            return Err(TableError::NotATableFolder {
                table: spec.name.to_string(),
                location: location.to_string(),
                example,
            });
        }
        theirs
    } else {
        let created = table
            .create()
            .with_table_name(spec.table_name().table)
            .with_comment(spec.comment)
            .with_columns(spec.delta_columns())
            .with_partition_columns(spec.partition_columns.iter().map(|c| c.to_string()))
            .with_configuration(spec.properties.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))))
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_commit_properties(commit.properties())
            .await;
        match created {
            Ok(t) => {
                tracing::info!(table = spec.name, %location, "created table");
                t
            }
            Err(create_error) => {
                // Another run created it between our look and our create: use theirs, after the check below.
                let theirs = open_at(wh, spec, &location).await?;
                if theirs.version().is_none() {
                    // Nobody did: the create itself failed (a folder we may not write), and says why.
                    return Err(delta_err(spec, &location)(create_error));
                }
                theirs
            }
        }
    };
    let table = add_new_columns(table, spec, &location).await?;
    check_schema(&table, spec, &location)?;
    Ok(table)
}

/// A table pfsync writes, as an earlier version created it: every column it has is the spec's, in order,
/// and the spec's further columns are all nullable. pfsync's tables change only that way (a new column
/// at the end, which rows written before hold as null), so the table is brought up to the spec with one
/// metadata commit; anything else is left for [`check_schema`] to refuse.
async fn add_new_columns(table: DeltaTable, spec: &TableSpec, location: &Url) -> Result<DeltaTable, TableError> {
    if spec.writer != Writer::Pfsync {
        return Ok(table);
    }
    let Ok(snapshot) = table.snapshot() else { return Ok(table) };
    let actual: Vec<StructField> = snapshot.schema().fields().cloned().collect();
    let expected = spec.delta_columns();
    let same = |a: &StructField, e: &StructField| {
        a.name() == e.name() && a.data_type() == e.data_type() && a.is_nullable() == e.is_nullable()
    };
    let missing = &expected[actual.len().min(expected.len())..];
    let older = actual.len() < expected.len()
        && actual.iter().zip(&expected).all(|(a, e)| same(a, e))
        && missing.iter().all(StructField::is_nullable);
    if !older {
        return Ok(table);
    }
    let names: Vec<&str> = missing.iter().map(|f| f.name().as_str()).collect();
    tracing::info!(table = spec.name, columns = ?names, "adding the columns this version of pfsync writes");
    let commit = CommitInfo { run_id: format!("pfsync-{}", env!("CARGO_PKG_VERSION")), step: "add_columns" };
    match table.clone().add_columns().with_fields(missing.to_vec()).with_commit_properties(commit.properties()).await {
        Ok(t) => Ok(t),
        // Another process added them meanwhile: read the table as it is now.
        Err(_) => open_at_location(table, spec, location).await,
    }
}

async fn open_at_location(mut table: DeltaTable, spec: &TableSpec, location: &Url) -> Result<DeltaTable, TableError> {
    table.update_state().await.map_err(delta_err(spec, location))?;
    Ok(table)
}

/// The first file found at a location that holds no Delta table, if any. pfsync creates a table only in a
/// new or empty folder: a mapping to a folder of something else's (one holding `passwd`) would otherwise
/// get a `_delta_log` written into it, and a table whose log was lost would be started afresh over its data.
async fn foreign_file(table: &DeltaTable, spec: &TableSpec, location: &Url) -> Result<Option<String>, TableError> {
    use futures::StreamExt;

    let store = table.log_store().object_store(None);
    let mut listing = store.list(None);
    while let Some(item) = listing.next().await {
        let meta = match item {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(delta_err(spec, location)(e.into())),
        };
        let path = meta.location.as_ref();
        // An empty name is an object store's folder marker; `_delta_log/` holds a create another run began.
        if !path.is_empty() && !path.starts_with("_delta_log/") {
            return Ok(Some(path.to_string()));
        }
    }
    Ok(None)
}

/// Open an existing table (or an empty location) without creating anything.
pub async fn open_at(wh: &Warehouse, spec: &TableSpec, location: &Url) -> Result<DeltaTable, TableError> {
    let mut table = deltalake::DeltaTableBuilder::from_url(location.clone())
        .and_then(|b| b.with_storage_options(wh.storage_options_for(&spec.table_name())).build())
        .map_err(delta_err(spec, location))?;
    // Look before loading: loading an empty location makes delta-rs log an error for what is, here, the
    // normal first run.
    if table.verify_deltatable_existence().await.map_err(delta_err(spec, location))? {
        table.load().await.map_err(|e| unreadable(spec.name, location, e))?;
        check_readable(&table, spec.name, location)?;
    }
    Ok(table)
}

/// Refuse a table whose protocol needs a reader feature delta-rs does not implement (checked before any
/// scan: a reader that ignored, say, a new kind of deletion could return rows the table no longer holds).
pub fn check_readable(table: &DeltaTable, name: &str, location: &Url) -> Result<(), TableError> {
    use deltalake::kernel::transaction::{PROTOCOL, TransactionError};
    let Ok(snapshot) = table.snapshot() else { return Ok(()) };
    match PROTOCOL.can_read_from_protocol(snapshot.protocol()) {
        Err(TransactionError::UnsupportedTableFeatures(features)) => {
            let mut names: Vec<String> = features.iter().map(|f| f.to_string()).collect();
            names.sort();
            Err(TableError::UnsupportedFeatures {
                table: name.to_string(),
                location: location.to_string(),
                features: names.join(", "),
            })
        }
        _ => Ok(()),
    }
}

/// A load that failed. delta_kernel refuses a reader feature it does not know while loading the snapshot
/// (`Unsupported: Feature 'x' is not supported`); that is reported like [`check_readable`]'s refusal,
/// naming the feature.
fn unreadable(name: &str, location: &Url, e: DeltaTableError) -> TableError {
    let text = e.to_string();
    let feature = text
        .split_once("Feature '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .filter(|(_, rest)| rest.starts_with(" is not supported"))
        .map(|(feature, _)| feature.to_string());
    match feature {
        Some(features) => {
            TableError::UnsupportedFeatures { table: name.to_string(), location: location.to_string(), features }
        }
        None => TableError::Delta { table: name.to_string(), location: location.to_string(), source: Box::new(e) },
    }
}

/// Whether any table pfsync owns is where the warehouse puts it. A warehouse with none was never
/// initialised, or is not the one meant (a mistyped `--warehouse`): every command but `init` and `demo`
/// refuses it rather than report zero rows forever.
pub async fn any_table_exists(wh: &Warehouse) -> Result<bool, TableError> {
    // The log first: the table a warehouse in use is least likely to lack.
    let order = std::iter::once(&super::spec::PAYOUT_LOG)
        .chain(ALL.iter().copied().filter(|s| s.name != super::spec::PAYOUT_LOG.name));
    for spec in order {
        let location = wh.location(&spec.table_name());
        let table = deltalake::DeltaTableBuilder::from_url(location.clone())
            .and_then(|b| b.with_storage_options(wh.storage_options_for(&spec.table_name())).build())
            .map_err(delta_err(spec, &location))?;
        if table.verify_deltatable_existence().await.map_err(delta_err(spec, &location))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Open a table that must exist.
pub async fn open_existing(wh: &Warehouse, spec: &TableSpec) -> Result<Option<DeltaTable>, TableError> {
    let location = wh.location(&spec.table_name());
    let table = open_at(wh, spec, &location).await?;
    if table.version().is_none() {
        return Ok(None);
    }
    Ok(Some(add_new_columns(table, spec, &location).await?))
}

/// Check a table's schema against its spec: exactly for a table pfsync writes, and for one upstream jobs
/// write only the columns pfsync reads (see [`check_source_schema`]).
pub fn check_schema(table: &DeltaTable, spec: &TableSpec, location: &Url) -> Result<(), TableError> {
    match spec.writer {
        Writer::Pfsync => check_own_schema(table, spec, location),
        Writer::Upstream { requires, reads } => check_source_schema(table, spec, location, requires, reads),
    }
}

/// A table upstream jobs write, as Spark writes it: every column may be nullable, there may be columns of
/// their own, in any order. Only the columns pfsync reads are checked: the required ones must be there, and
/// each one there must have a type the source reader converts exactly.
fn check_source_schema(
    table: &DeltaTable,
    spec: &TableSpec,
    location: &Url,
    requires: &[&str],
    reads: &[&str],
) -> Result<(), TableError> {
    let snapshot = table.snapshot().map_err(delta_err(spec, location))?;
    let schema = snapshot.schema();
    let mut problems = Vec::new();
    for name in requires.iter().chain(reads) {
        let Some(expected) = spec.column(name) else { continue };
        match schema.field(name) {
            None if requires.contains(name) => problems.push(format!("column `{name}` is missing")),
            None => {}
            Some(actual) if !readable_as(expected.kind, actual.data_type()) => problems.push(format!(
                "column `{name}` is {}, which pfsync cannot read as {}",
                sql_type_name(actual.data_type()),
                expected.kind.sql()
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(TableError::IncompatibleSource {
        table: spec.name.to_string(),
        location: location.to_string(),
        details: problems.join("; "),
        columns: requires.iter().chain(reads).copied().collect::<Vec<_>>().join(", "),
    })
}

/// Whether the source reader (`payouts::source`) converts a column of type `actual` into `kind` exactly:
/// amounts from any decimal, double, float, integer or text (refused per row when not whole cents), times
/// from timestamps with or without a zone and dates, text from text.
fn readable_as(kind: ColumnType, actual: &DeltaType) -> bool {
    use deltalake::kernel::PrimitiveType as P;
    let DeltaType::Primitive(p) = actual else { return false };
    match kind {
        ColumnType::String => matches!(p, P::String),
        ColumnType::Money => {
            matches!(p, P::Decimal(_) | P::Double | P::Float | P::Long | P::Integer | P::Short | P::String)
        }
        ColumnType::Timestamp => matches!(p, P::Timestamp | P::TimestampNtz | P::Date),
        other => *actual == other.delta(),
    }
}

/// Compare column names, types and nullability, in order; comments and properties may differ (an admin
/// may have edited them in Unity Catalog).
fn check_own_schema(table: &DeltaTable, spec: &TableSpec, location: &Url) -> Result<(), TableError> {
    let snapshot = table.snapshot().map_err(delta_err(spec, location))?;
    let actual: Vec<StructField> = snapshot.schema().fields().cloned().collect();
    let expected = spec.delta_columns();
    let describe = |f: &StructField| {
        format!("{} {}{}", f.name(), type_name(f.data_type()), if f.is_nullable() { "" } else { " NOT NULL" })
    };
    let mut problems = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        match actual.get(i) {
            Some(a) if a.name() == e.name() && a.data_type() == e.data_type() && a.is_nullable() == e.is_nullable() => {
            }
            Some(a) => problems.push(format!("column {} is `{}`, expected `{}`", i + 1, describe(a), describe(e))),
            None => problems.push(format!("column `{}` is missing", describe(e))),
        }
    }
    for a in actual.iter().skip(expected.len()) {
        problems.push(format!("unexpected column `{}`", describe(a)));
    }
    let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let want: Vec<String> = spec.partition_columns.iter().map(|s| s.to_string()).collect();
    if partitions != want {
        problems.push(format!("partitioned by {partitions:?}, expected {want:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TableError::IncompatibleSchema {
            table: spec.name.to_string(),
            location: location.to_string(),
            details: problems.join("; "),
        })
    }
}

/// A Delta type as Databricks SQL spells it (`BIGINT`, not Delta's `long`).
fn sql_type_name(t: &DeltaType) -> String {
    use deltalake::kernel::PrimitiveType as P;
    match t {
        DeltaType::Primitive(P::String) => "STRING".into(),
        DeltaType::Primitive(P::Long) => "BIGINT".into(),
        DeltaType::Primitive(P::Integer) => "INT".into(),
        DeltaType::Primitive(P::Short) => "SMALLINT".into(),
        DeltaType::Primitive(P::Byte) => "TINYINT".into(),
        DeltaType::Primitive(P::TimestampNtz) => "TIMESTAMP_NTZ".into(),
        DeltaType::Primitive(P::Decimal(d)) => format!("DECIMAL({},{})", d.precision(), d.scale()),
        other => type_name(other),
    }
}

fn type_name(t: &DeltaType) -> String {
    match t {
        DeltaType::Primitive(p) => serde_json::to_value(p)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_else(|| format!("{p:?}")),
        other => format!("{other:?}"),
    }
}

/// A DataFusion session in which every existing pfsync table is registered under its three-level name
/// (`SELECT ... FROM purpleflea.agents.wallets`), so analyst queries from `sql/` run as written.
pub async fn sql_context(wh: &Warehouse) -> Result<SessionContext, TableError> {
    sql_context_of(wh, ALL).await
}

/// [`sql_context`] with only these tables (and the views over them): opening a table reads its log, so a
/// short query (an MCP read tool) opens only what it reads.
pub async fn sql_context_of(wh: &Warehouse, specs: &[&'static TableSpec]) -> Result<SessionContext, TableError> {
    let config = datafusion::prelude::SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    register_tables(&ctx, wh, specs).await?;
    Ok(ctx)
}

/// Register every one of `specs` that exists in `ctx` under its three-level name, and the views over them;
/// returns the version of each table registered (what every query in `ctx` reads).
pub async fn register_tables(
    ctx: &SessionContext,
    wh: &Warehouse,
    specs: &[&'static TableSpec],
) -> Result<HashMap<&'static str, i64>, TableError> {
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};

    let mut versions = HashMap::new();
    let mut catalogs: HashMap<String, Arc<MemoryCatalogProvider>> = HashMap::new();
    for spec in specs {
        let Some(table) = open_existing(wh, spec).await? else {
            continue;
        };
        versions.insert(spec.name, version_of(&table));
        let name: TableName = spec.table_name();
        let location = wh.location(&name);
        table.update_datafusion_session(&ctx.state()).map_err(delta_err(spec, &location))?;
        let provider = table.table_provider().await.map_err(|e| TableError::Query(e.to_string()))?;
        let catalog = catalogs.entry(name.catalog.clone()).or_insert_with(|| Arc::new(MemoryCatalogProvider::new()));
        let schema = match catalog.schema(&name.schema) {
            Some(s) => s,
            None => {
                let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                catalog.register_schema(&name.schema, Arc::clone(&s)).map_err(|e| TableError::Query(e.to_string()))?;
                s
            }
        };
        schema.register_table(name.table.clone(), provider).map_err(|e| TableError::Query(e.to_string()))?;
    }
    for (name, catalog) in catalogs {
        ctx.register_catalog(name, catalog);
    }
    for (name, sql) in VIEWS {
        // A view whose tables do not exist yet (no payout has run) is simply not there.
        if let Err(e) = ctx.sql(sql).await {
            tracing::debug!(view = name, error = %e, "view not registered");
        }
    }
    Ok(versions)
}

/// A table's version as a signed number (-1: nothing committed), as the versions reconcile records are.
pub fn version_of(table: &DeltaTable) -> i64 {
    table.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(-1)
}

/// A table as it was at `version` (time travel), or `None` when the table or that version cannot be read.
pub async fn open_version(wh: &Warehouse, spec: &TableSpec, version: i64) -> Result<Option<DeltaTable>, TableError> {
    let location = wh.location(&spec.table_name());
    let mut table = deltalake::DeltaTableBuilder::from_url(location.clone())
        .and_then(|b| b.with_storage_options(wh.storage_options_for(&spec.table_name())).build())
        .map_err(delta_err(spec, &location))?;
    if !table.verify_deltatable_existence().await.map_err(delta_err(spec, &location))? {
        return Ok(None);
    }
    let Ok(version) = u64::try_from(version) else { return Ok(None) };
    match table.load_version(version).await {
        Ok(()) => {
            check_readable(&table, spec.name, &location)?;
            Ok(Some(table))
        }
        Err(e) => {
            tracing::warn!(table = spec.name, version, error = %e, "cannot read the table at this version");
            Ok(None)
        }
    }
}

/// Register a Delta table at `location` under a plain `name` (for user source queries).
pub async fn register_location(
    ctx: &SessionContext,
    wh: &Warehouse,
    name: &str,
    location: &Url,
) -> Result<(), TableError> {
    let err = |e: String| TableError::Query(format!("--register {name}={location}: {e}"));
    let table = deltalake::DeltaTableBuilder::from_url(location.clone())
        .and_then(|b| b.with_storage_options(wh.storage_options().clone()).build())
        .map_err(|e| err(e.to_string()))?;
    let mut table = table;
    let label = format!("--register {name}");
    // A path that holds no table is the user's to fix (exit 2), not a storage failure to retry.
    if !table.verify_deltatable_existence().await.map_err(|e| err(e.to_string()))? {
        return Err(TableError::NoTableAt { what: label, location: location.to_string() });
    }
    table.load().await.map_err(|e| match unreadable(&label, location, e) {
        TableError::Delta { source, .. } => err(source.to_string()),
        other => other,
    })?;
    check_readable(&table, &label, location)?;
    table.update_datafusion_session(&ctx.state()).map_err(|e| err(e.to_string()))?;
    let provider = table.table_provider().await.map_err(|e| err(e.to_string()))?;
    ctx.register_table(name, provider).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The views in `sql/views/`, registered in every SQL session pfsync opens.
pub const VIEWS: &[(&str, &str)] = &[
    ("purpleflea.payouts.status", include_str!("../../sql/views/purpleflea.payouts.status.sql")),
    ("purpleflea.payouts.open_findings", include_str!("../../sql/views/purpleflea.payouts.open_findings.sql")),
    ("purpleflea.agents.wallet_freshness", include_str!("../../sql/views/purpleflea.agents.wallet_freshness.sql")),
];
