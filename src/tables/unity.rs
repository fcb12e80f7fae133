//! Table locations from Unity Catalog (the `unity` cargo feature), through delta-rs's Unity Catalog
//! client: each three-level name pfsync owns is looked up once per process, before any table is touched,
//! and its storage location (plus, when asked, short-lived credentials the catalog vends for it: READ for
//! the tables upstream jobs write, READ_WRITE for pfsync's own) replaces the warehouse default. A table
//! pfsync writes must be an external table. A name the catalog does not know stops the run: writing to a
//! guessed location would put the money trail where auditors do not look.

use std::collections::HashMap;

use deltalake_catalog_unity::models::{GetTableResponse, TableTempCredentialsResponse, TableType};
use deltalake_catalog_unity::{UnityCatalog, UnityCatalogBuilder};
use url::Url;

use super::name::{TableName, Warehouse, location_url};

#[derive(Debug, thiserror::Error)]
pub enum UnityError {
    #[error(
        "Unity Catalog is not configured: {0} (set DATABRICKS_HOST and DATABRICKS_TOKEN, or [unity] workspace_url)"
    )]
    Setup(String),
    #[error("Unity Catalog workspace URL {0:?} must be https (plain http only to loopback)")]
    Insecure(String),
    #[error(
        "{table} is not usable in Unity Catalog ({code}: {message}); register it with the statements \
         `pfsync ddl --warehouse URI` prints (sql/ddl/{table}.sql with its location), or map it with \
         [tables.\"{table}\"] location = ..."
    )]
    NotRegistered { table: String, code: String, message: String },
    #[error("{table}: Unity Catalog gives no storage location (a view, or not a Delta table?)")]
    NoLocation { table: String },
    #[error(
        "{table} is not an external table in Unity Catalog (table_type {kind}), and pfsync writes it: Unity \
         Catalog lets engines outside Databricks read managed tables, not write them. Register it as an external table over the warehouse \
         (`pfsync ddl --warehouse URI` prints the statements), or map it with [tables.\"{table}\"] location = ..."
    )]
    NotExternal { table: String, kind: String },
    #[error("{table}: Unity Catalog location {location:?}: {message}")]
    BadLocation { table: String, location: String, message: String },
    #[error(
        "{table}: Unity Catalog refused credentials ({code}: {message}); grant EXTERNAL USE SCHEMA, or set \
             [unity] vend_credentials = false to use the cluster's own storage access"
    )]
    Credentials { table: String, code: String, message: String },
    #[error("{table}: Unity Catalog request failed: {message}")]
    Request { table: String, message: String },
}

/// Where the catalog is and what to ask of it: the configuration's `[unity]` section and `[http] proxy`.
pub struct Catalog<'a> {
    /// Defaults to `DATABRICKS_HOST` (or `UNITY_WORKSPACE_URL`).
    pub workspace_url: Option<&'a str>,
    /// Ask for short-lived storage credentials per table (credential vending).
    pub vend_credentials: bool,
    pub proxy: Option<&'a Url>,
}

/// The catalog client, from `DATABRICKS_*` / `UNITY_*` environment variables plus the configuration. The
/// token only ever comes from the environment.
fn catalog(c: &Catalog<'_>) -> Result<UnityCatalog, UnityError> {
    let proxy = c.proxy;
    let host = match c.workspace_url {
        Some(u) => Some(u.to_string()),
        None => std::env::var("DATABRICKS_HOST").ok().or_else(|| std::env::var("UNITY_WORKSPACE_URL").ok()),
    };
    let Some(host) = host else {
        return Err(UnityError::Setup("no workspace URL".into()));
    };
    let url = Url::parse(&host).map_err(|e| UnityError::Setup(format!("workspace URL {host:?}: {e}")))?;
    // The same rule as for the Purple Flea API: https, or plain http to loopback only.
    crate::http::check_url(&url).map_err(|_| UnityError::Insecure(host.clone()))?;
    // The catalog client reads no proxy variable (the binary removes them before it starts): the configured
    // proxy is the only one, and only for https to another machine, as for pfsync's own clients.
    let mut builder = match proxy.filter(|_| crate::http::outbound::proxied(&url)) {
        Some(p) => UnityCatalogBuilder::builder()
            .client_options(deltalake_catalog_unity::client::ClientOptions::builder().proxy_url(p.as_str()).build())
            .build(),
        None => UnityCatalogBuilder::builder().build(),
    };
    // What `UnityCatalogBuilder::from_env` reads, onto a builder that carries the client options.
    let env = std::env::vars()
        .filter(|(k, _)| k.starts_with("UNITY_") || k.starts_with("DATABRICKS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v));
    builder = builder.try_with_options(env).map_err(|e| UnityError::Setup(e.to_string()))?;
    let opts = [("workspace_url", host.clone()), ("allow_http_url", (url.scheme() == "http").to_string())];
    builder = builder.try_with_options(opts).map_err(|e| UnityError::Setup(e.to_string()))?;
    builder.build().map_err(|e| UnityError::Setup(e.to_string()))
}

/// Look up every name in `names` and point the warehouse at what the catalog says.
pub async fn resolve(
    wh: &mut Warehouse,
    at: &Catalog<'_>,
    names: impl IntoIterator<Item = TableName>,
) -> Result<Vec<(TableName, Url)>, UnityError> {
    let uc = catalog(at)?;
    let mut resolved = Vec::new();
    for name in names {
        let table = name.to_string();
        let request = |e: deltalake_catalog_unity::UnityCatalogError| UnityError::Request {
            table: table.clone(),
            message: e.to_string(),
        };
        let info = match uc.get_table(&name.catalog, &name.schema, &name.table).await.map_err(request)? {
            GetTableResponse::Success(t) => t,
            GetTableResponse::Error(e) => {
                return Err(UnityError::NotRegistered { table, code: e.error_code, message: e.message });
            }
        };
        // Which access pfsync needs: the tables upstream jobs write it only reads (they may be managed
        // tables: outside engines may read those), the rest it writes.
        let writes = crate::tables::ALL.iter().find(|s| s.table_name() == name).is_none_or(|s| s.pfsync_writes());
        if writes && !matches!(info.table_type, TableType::External) {
            return Err(UnityError::NotExternal { table, kind: info.table_type.to_string().to_uppercase() });
        }
        let Some(location) = info.storage_location.filter(|l| !l.trim().is_empty()) else {
            return Err(UnityError::NoLocation { table });
        };
        let url = location_url(&location).map_err(|message| UnityError::BadLocation {
            table: table.clone(),
            location: location.clone(),
            message,
        })?;
        let mut options = HashMap::new();
        if at.vend_credentials {
            let creds = uc
                .get_temp_table_credentials_with_permission(
                    name.catalog.as_str(),
                    name.schema.as_str(),
                    name.table.as_str(),
                    if writes { "READ_WRITE" } else { "READ" },
                )
                .await
                .map_err(request)?;
            match creds {
                // Credentials for a backend this build lacks come back empty; the open then fails naming
                // the scheme, which says which feature to build with.
                TableTempCredentialsResponse::Success(c) => options.extend(c.get_credentials().unwrap_or_default()),
                TableTempCredentialsResponse::Error(e) => {
                    return Err(UnityError::Credentials { table, code: e.error_code, message: e.message });
                }
            }
        }
        wh.set_table(name.clone(), url.clone(), options);
        resolved.push((name, url));
    }
    Ok(resolved)
}
