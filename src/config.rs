//! Settings from flags, environment and an optional TOML file (flags win, then the environment, then the
//! file, then defaults), validated in full before any work starts. Every refusal names what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::http::{ClientConfig, RetryPolicy};
use crate::provider::Common;
use crate::provider::ProviderSettings;
use crate::provider::{DEFAULT_API_URL, DEFAULT_FAUCET_URL};
use crate::secret::{ApiKey, SecretError};
use crate::tables::{TableName, Warehouse};

pub const DEFAULT_WAREHOUSE: &str = "./pfsync-warehouse";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("{field}: {message}")]
    Value { field: String, message: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
}

fn value_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value { field: field.to_string(), message: message.into() }
}

/// The `[api]` section; every field optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub timeout_secs: Option<f64>,
    pub connect_timeout_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub max_elapsed_secs: Option<f64>,
    pub rate_limit_rps: Option<f64>,
    pub max_concurrency: Option<usize>,
}

/// The `[http]` section: how pfsync's HTTP clients reach the outside.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// A proxy for https requests to other machines (`http://host:port`). The environment's proxy
    /// variables are never read: a proxy sees every request it carries (see `http::outbound`).
    pub proxy: Option<String>,
}

/// A `[tables."catalog.schema.table"]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSection {
    pub location: Option<String>,
}

/// The `[unity]` section: resolve table locations through Unity Catalog (needs the `unity` feature). The
/// token is never here: it comes from `DATABRICKS_TOKEN` (or the other `DATABRICKS_*` credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitySection {
    /// Defaults to `DATABRICKS_HOST`.
    pub workspace_url: Option<String>,
    /// Ask the catalog for short-lived storage credentials per table (credential vending).
    #[serde(default = "yes")]
    pub vend_credentials: bool,
}

fn yes() -> bool {
    true
}

/// The TOML file, as written by a user. Unknown keys are refused so a typo cannot be silently ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub warehouse: Option<String>,
    pub api_url: Option<String>,
    pub faucet_url: Option<String>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub http: HttpSection,
    /// `[provider]`: `kind` picks the provider (`seed`, the default, or `live`); its other keys are that
    /// provider's own, checked by it (see `provider::registry`).
    #[serde(default)]
    pub provider: toml::Table,
    #[serde(default)]
    pub tables: BTreeMap<String, TableSection>,
    /// Object-store options handed to delta-rs (credentials, endpoints). Never logged.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
    pub unity: Option<UnitySection>,
    /// `pfsync mcp`: who may call which money tool, and how much (see `src/mcp/policy.rs`).
    #[serde(default)]
    pub mcp: crate::mcp::policy::McpSection,
    /// Change-feed sources of `pfsync payouts` (see `payouts::feed`).
    #[serde(default)]
    pub feeds: Vec<FeedSection>,
}

/// `[[feeds]]`: a Delta table's change data feed as a source of payouts or escrow actions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSection {
    pub name: String,
    /// The events table's location (a folder or an object-store URI).
    pub table: String,
    /// SQL over `changes` (the table's columns, `_change_type`, `_commit_version`, `_commit_timestamp`)
    /// producing the columns of the pending table (`kind = "payouts"`) or of the actions table.
    pub query: String,
    /// `payouts` (default) or `actions`.
    pub kind: Option<String>,
    /// Where a feed with no stored position starts reading (default 0, the table's first version).
    pub start_version: Option<i64>,
    /// The Delta table id the table must have: a feed re-pointed at another table starts there anew.
    pub table_id: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Unreadable { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid { path: path.display().to_string(), message: e.to_string() })
    }
}

/// What the flags and environment said (clap fills this; `None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub warehouse: Option<String>,
    pub api_url: Option<String>,
    pub faucet_url: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub api: ApiSection,
    /// The warehouse when neither the flags, the environment nor the file name one [default:
    /// [`DEFAULT_WAREHOUSE`]] (the demo has a folder of its own).
    pub default_warehouse: Option<&'static str>,
}

impl From<&crate::cli::GlobalArgs> for Overrides {
    /// What the global flags (and the environment clap reads for them) say.
    fn from(g: &crate::cli::GlobalArgs) -> Overrides {
        Overrides {
            config: g.config.clone(),
            warehouse: g.warehouse.clone(),
            api_url: g.api_url.clone(),
            faucet_url: g.faucet_url.clone(),
            api_key_file: g.api_key_file.clone(),
            api: ApiSection {
                timeout_secs: g.api.timeout_secs,
                connect_timeout_secs: g.api.connect_timeout_secs,
                max_attempts: g.api.max_attempts,
                max_elapsed_secs: g.api.max_elapsed_secs,
                rate_limit_rps: g.api.rate_limit_rps,
                max_concurrency: g.api.max_concurrency,
            },
            default_warehouse: None,
        }
    }
}

/// Validated settings for a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub warehouse: Warehouse,
    pub api_url: Url,
    pub faucet_url: Url,
    pub api_key_file: Option<PathBuf>,
    pub api: ApiSection,
    /// `[http] proxy`, checked.
    pub proxy: Option<crate::http::outbound::ProxyUrl>,
    pub provider: ProviderSettings,
    /// Resolve table locations through Unity Catalog before touching any table.
    pub unity: Option<UnitySection>,
    /// `[mcp]`: the MCP server's policy, checked when the file is read.
    pub mcp: crate::mcp::policy::McpSection,
    /// `[[feeds]]`, checked.
    pub feeds: Vec<crate::payouts::feed::FeedSpec>,
}

impl Settings {
    pub fn resolve(o: &Overrides) -> Result<Settings, ConfigError> {
        let file = match &o.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let warehouse_text = o
            .warehouse
            .clone()
            .or(file.warehouse.clone())
            .unwrap_or_else(|| o.default_warehouse.unwrap_or(DEFAULT_WAREHOUSE).to_string());
        let mut overrides = BTreeMap::new();
        for (name, section) in &file.tables {
            let table = owned_table(name)?;
            let Some(loc) = &section.location else {
                return Err(value_error(
                    &format!("[tables.\"{name}\"]"),
                    "has no location = ...; add one or remove the section",
                ));
            };
            let field = format!("[tables.\"{name}\"].location");
            let url = crate::tables::location_url(loc).map_err(|e| value_error(&field, e))?;
            let writes = crate::tables::ALL.iter().any(|spec| spec.name == name && spec.pfsync_writes());
            crate::tables::name::check_table_location(&url, writes).map_err(|e| value_error(&field, e))?;
            overrides.insert(table, url);
        }
        check_storage(&file.storage, std::env::var("AWS_S3_LOCKING_PROVIDER").ok())?;
        let root = crate::tables::location_url(&warehouse_text).map_err(|e| value_error("--warehouse", e))?;
        crate::tables::name::check_table_location(&root, true).map_err(|e| value_error("--warehouse", e))?;
        let warehouse = Warehouse::new(root, overrides, file.storage.clone().into_iter().collect());
        let api_url =
            parse_api_url("--api-url", o.api_url.as_deref().or(file.api_url.as_deref()).unwrap_or(DEFAULT_API_URL))?;
        let faucet_url = parse_api_url(
            "--faucet-url",
            o.faucet_url.as_deref().or(file.faucet_url.as_deref()).unwrap_or(DEFAULT_FAUCET_URL),
        )?;
        let api = merge_api(&o.api, &file.api);
        validate_api(&api)?;
        let proxy = file
            .http
            .proxy
            .as_deref()
            .map(crate::http::parse_proxy)
            .transpose()
            .map_err(|e| value_error("[http] proxy", e))?;
        check_unity_built(file.unity.is_some(), cfg!(feature = "unity"))?;
        let mut feeds: Vec<crate::payouts::feed::FeedSpec> = Vec::new();
        for f in &file.feeds {
            let field = format!("[[feeds]] {:?}", f.name);
            crate::payouts::feed::check_feed_name(&f.name).map_err(|e| value_error("[[feeds]] name", e))?;
            if feeds.iter().any(|g| g.name == f.name) {
                return Err(value_error(&field, "is declared twice"));
            }
            let location =
                crate::tables::location_url(&f.table).map_err(|e| value_error(&format!("{field} table"), e))?;
            if f.query.trim().is_empty() {
                return Err(value_error(&format!("{field} query"), "is empty"));
            }
            let shape = match f.kind.as_deref() {
                None | Some("payouts") => crate::payouts::source::RowShape::Payouts,
                Some("actions") => crate::payouts::source::RowShape::Actions,
                Some(other) => {
                    return Err(value_error(&format!("{field} kind"), format!("{other:?} is not payouts or actions")));
                }
            };
            if f.start_version.is_some_and(|v| v < 0) {
                return Err(value_error(&format!("{field} start_version"), "must not be negative"));
            }
            if f.table_id.as_deref().is_some_and(|id| id.trim().is_empty() || id.trim() != id) {
                return Err(value_error(&format!("{field} table_id"), "must be the table's id as Delta records it"));
            }
            feeds.push(crate::payouts::feed::FeedSpec {
                name: f.name.clone(),
                location,
                query: f.query.clone(),
                shape,
                start_version: f.start_version,
                table_id: f.table_id.clone(),
            });
        }
        let provider = ProviderSettings::from_table(file.provider.clone()).map_err(|e| value_error("[provider]", e))?;
        provider.check().map_err(|e| value_error("[provider]", e))?;
        let s = Settings {
            feeds,
            warehouse,
            api_url,
            faucet_url,
            api_key_file: o.api_key_file.clone(),
            provider,
            api,
            proxy,
            unity: file.unity.clone(),
            mcp: file.mcp.clone(),
        };
        s.mcp.check().map_err(|e| value_error("[mcp]", e.to_string()))?;
        Ok(s)
    }

    /// What every provider is built from: the client settings with the payer's key, read only now (file,
    /// then `PURPLEFLEA_API_KEY`), so commands that need no provider never ask for one.
    pub fn provider_common(&self) -> Result<Common, ConfigError> {
        Ok(Common { client: self.client_config()?, faucet_url: self.faucet_url.clone() })
    }

    /// The client configuration against `--api-url`, with the payer's key.
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let key = ApiKey::resolve(self.api_key_file.as_deref(), std::env::var(crate::secret::API_KEY_ENV).ok())?;
        Ok(self.client_config_with_key(self.api_url.clone(), key))
    }

    /// The client configuration against a given URL and key (the demo's in-process sandbox).
    pub fn client_config_with_key(&self, api_url: Url, key: ApiKey) -> ClientConfig {
        let mut c = ClientConfig::new(api_url, key);
        let a = &self.api;
        let defaults = RetryPolicy::default();
        c.timeout = a.timeout_secs.map(Duration::from_secs_f64).unwrap_or(c.timeout);
        c.connect_timeout = a.connect_timeout_secs.map(Duration::from_secs_f64).unwrap_or(c.connect_timeout);
        c.retry.max_attempts = a.max_attempts.unwrap_or(defaults.max_attempts);
        c.retry.max_elapsed = a.max_elapsed_secs.map(Duration::from_secs_f64).unwrap_or(defaults.max_elapsed);
        c.rate_limit_rps = a.rate_limit_rps.filter(|r| *r > 0.0);
        c.max_concurrency = a.max_concurrency.unwrap_or(c.max_concurrency);
        c.proxy = self.proxy.as_ref().map(|p| p.url().clone());
        c
    }
}

/// A `[unity]` section needs a build with the `unity` feature; without it the run stops before anything is
/// touched. (The feature is a parameter so the tests check both answers whatever features they build with.)
fn check_unity_built(section: bool, built_with_unity: bool) -> Result<(), ConfigError> {
    if section && !built_with_unity {
        return Err(value_error(
            "[unity]",
            "this pfsync was built without the `unity` feature: rebuild with --features unity, or map each \
             table with [tables.\"catalog.schema.table\"] location = ...",
        ));
    }
    Ok(())
}

/// A `[tables."..."]` key must name a table pfsync owns. A mapping under a misspelt name would be ignored
/// and the table written to its default place: for the payout log, away from where auditors look.
fn owned_table(name: &str) -> Result<TableName, ConfigError> {
    let field = format!("[tables.\"{name}\"]");
    let table = TableName::parse(name).map_err(|e| value_error(&field, e))?;
    if crate::tables::ALL.iter().any(|spec| spec.name == name) {
        return Ok(table);
    }
    let closest = crate::tables::ALL.iter().map(|spec| spec.name).min_by_key(|owned| edit_distance(name, owned));
    let hint = match closest {
        Some(owned) if edit_distance(name, owned) <= 3 => format!("did you mean \"{owned}\"? "),
        _ => String::new(),
    };
    let owned: Vec<&str> = crate::tables::ALL.iter().map(|spec| spec.name).collect();
    Err(value_error(
        &field,
        format!("pfsync owns no table of that name; {hint}the tables it owns are {}", owned.join(", ")),
    ))
}

/// Levenshtein distance, for the "did you mean" of a misspelt table name.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn merge_api(flags: &ApiSection, file: &ApiSection) -> ApiSection {
    ApiSection {
        timeout_secs: flags.timeout_secs.or(file.timeout_secs),
        connect_timeout_secs: flags.connect_timeout_secs.or(file.connect_timeout_secs),
        max_attempts: flags.max_attempts.or(file.max_attempts),
        max_elapsed_secs: flags.max_elapsed_secs.or(file.max_elapsed_secs),
        rate_limit_rps: flags.rate_limit_rps.or(file.rate_limit_rps),
        max_concurrency: flags.max_concurrency.or(file.max_concurrency),
    }
}

fn validate_api(a: &ApiSection) -> Result<(), ConfigError> {
    let positive = |field: &str, v: Option<f64>, max: f64| match v {
        Some(x) if !(x.is_finite() && x > 0.0 && x <= max) => {
            Err(value_error(field, format!("must be a number of seconds in (0, {max}], got {x}")))
        }
        _ => Ok(()),
    };
    positive("--timeout-secs", a.timeout_secs, 3600.0)?;
    positive("--connect-timeout-secs", a.connect_timeout_secs, 3600.0)?;
    positive("--max-elapsed-secs", a.max_elapsed_secs, 86_400.0)?;
    if let Some(r) = a.rate_limit_rps
        && !(r.is_finite() && r >= 0.0)
    {
        return Err(value_error("--rate-limit-rps", format!("must be >= 0 (0 = no limit), got {r}")));
    }
    if a.max_attempts == Some(0) {
        return Err(value_error("--max-attempts", "must be at least 1"));
    }
    if matches!(a.max_concurrency, Some(0) | Some(1025..)) {
        return Err(value_error("--max-concurrency", "must be within 1..=1024"));
    }
    Ok(())
}

/// Object-store settings that would make concurrent commits unsafe. delta-rs 1.x commits to S3 with a
/// conditional put (If-None-Match), which S3 and most S3-compatible stores support; it dropped its DynamoDB
/// lock, and a leftover `AWS_S3_LOCKING_PROVIDER=dynamodb` now silently selects the unsafe-rename backend,
/// under which two writers (shards, an overlapping retry) can overwrite each other's commit.
fn check_storage(storage: &BTreeMap<String, String>, env_locking: Option<String>) -> Result<(), ConfigError> {
    let locking = storage.iter().find(|(k, _)| k.eq_ignore_ascii_case("aws_s3_locking_provider")).map(|(_, v)| v);
    if let Some(v) = locking.cloned().or(env_locking).filter(|v| !v.trim().is_empty()) {
        return Err(value_error(
            "[storage] aws_s3_locking_provider / AWS_S3_LOCKING_PROVIDER",
            format!(
                "{v:?} is not supported: delta-rs 1.x has no DynamoDB lock and would fall back to unsafe renames. \
                 Remove it: commits use S3 conditional put (for S3-compatible stores without it, see the README)"
            ),
        ));
    }
    let unsafe_rename = storage
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("aws_s3_allow_unsafe_rename") && v.trim().eq_ignore_ascii_case("true"));
    if unsafe_rename {
        tracing::warn!(
            "aws_s3_allow_unsafe_rename is set: safe for one writer only; never run two pfsync processes (shards, \
             overlapping retries) against this warehouse"
        );
    }
    Ok(())
}

fn parse_api_url(field: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|e| value_error(field, format!("{:?} is not a URL: {e}", crate::http::shown_text(text))))?;
    crate::http::check_url(&url).map_err(|e| value_error(field, e.to_string()))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pfsync.toml");
        std::fs::write(
            &p,
            r#"
warehouse = "/tmp/wh-from-file"
api_url = "https://api.example.com/api"
[api]
max_attempts = 3
rate_limit_rps = 20
[tables."purpleflea.agents.wallets"]
location = "/tmp/elsewhere/wallets"
"#,
        )
        .unwrap();
        let o = Overrides { config: Some(p.clone()), warehouse: Some("/tmp/wh-flag".into()), ..Overrides::default() };
        let s = Settings::resolve(&o).unwrap();
        assert_eq!(s.warehouse.root().path(), "/tmp/wh-flag/");
        assert_eq!(s.api_url.as_str(), "https://api.example.com/api");
        assert_eq!(s.api.max_attempts, Some(3));
        let wallets = TableName::parse("purpleflea.agents.wallets").unwrap();
        assert_eq!(s.warehouse.location(&wallets).path(), "/tmp/elsewhere/wallets/");

        std::fs::write(&p, "warehose = \"/tmp/x\"\n").unwrap();
        let err = Settings::resolve(&Overrides { config: Some(p), ..Overrides::default() }).unwrap_err().to_string();
        assert!(err.contains("warehose"), "{err}");
    }

    #[test]
    fn a_table_mapping_must_name_a_table_pfsync_owns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pfsync.toml");
        let resolve = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Settings::resolve(&Overrides { config: Some(p.clone()), ..Overrides::default() })
        };
        let e = resolve("[tables.\"purpleflea.agents.walets\"]\nlocation = \"/tmp/w\"\n").unwrap_err().to_string();
        assert!(e.starts_with("[tables.\"purpleflea.agents.walets\"]"), "{e}");
        assert!(e.contains("did you mean \"purpleflea.agents.wallets\"?"), "{e}");
        let e = resolve("[tables.\"sales.crm.accounts\"]\nlocation = \"/tmp/w\"\n").unwrap_err().to_string();
        assert!(
            e.contains("owns no table") && !e.contains("did you mean") && e.contains("purpleflea.payouts.log"),
            "{e}"
        );
        let e = resolve("[tables.\"purpleflea.payouts.log\"]\n").unwrap_err().to_string();
        assert!(e.contains("no location"), "{e}");
        assert!(resolve("[tables.\"purpleflea.payouts.log\"]\nlocation = \"/tmp/log\"\n").is_ok());
        assert_eq!(edit_distance("walets", "wallets"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn managed_storage_is_refused_only_for_a_table_pfsync_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pfsync.toml");
        let resolve = |table: &str| {
            let loc = "s3://b/metastore/__unitystorage/catalogs/c1/tables/t1";
            std::fs::write(&p, format!("[tables.\"{table}\"]\nlocation = \"{loc}\"\n")).unwrap();
            Settings::resolve(&Overrides { config: Some(p.clone()), ..Overrides::default() })
        };
        let e = resolve("purpleflea.payouts.log").unwrap_err().to_string();
        assert!(e.starts_with("[tables.\"purpleflea.payouts.log\"].location") && e.contains("managed"), "{e}");
        assert!(resolve("purpleflea.payouts.pending").is_ok(), "a source pfsync only reads may be a managed table");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let o = Overrides { api_url: Some("http://purpleflea.com/api".into()), ..Overrides::default() };
        assert!(Settings::resolve(&o).unwrap_err().to_string().starts_with("--api-url"));
        let o =
            Overrides { api: ApiSection { max_concurrency: Some(0), ..ApiSection::default() }, ..Overrides::default() };
        assert!(Settings::resolve(&o).unwrap_err().to_string().starts_with("--max-concurrency"));
        let o = Overrides {
            api: ApiSection { timeout_secs: Some(f64::NAN), ..ApiSection::default() },
            ..Overrides::default()
        };
        assert!(Settings::resolve(&o).unwrap_err().to_string().starts_with("--timeout-secs"));
    }

    #[test]
    fn a_unity_section_needs_the_unity_feature() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pfsync.toml");
        std::fs::write(&p, "[unity]\nworkspace_url = \"https://adb.example.com\"\n").unwrap();
        let r = Settings::resolve(&Overrides { config: Some(p), ..Overrides::default() });
        assert_eq!(r.is_ok(), cfg!(feature = "unity"), "{:?}", r.err());
        // A build without the feature refuses the section, saying how to rebuild.
        let e = check_unity_built(true, false).unwrap_err().to_string();
        assert!(e.starts_with("[unity]") && e.contains("--features unity"), "{e}");
        assert!(check_unity_built(false, false).is_ok() && check_unity_built(true, true).is_ok());
    }

    #[test]
    fn a_dynamodb_lock_setting_is_refused_because_it_would_mean_unsafe_renames() {
        let mut storage = BTreeMap::new();
        assert!(check_storage(&storage, None).is_ok());
        storage.insert("AWS_S3_LOCKING_PROVIDER".to_string(), "dynamodb".to_string());
        let e = check_storage(&storage, None).unwrap_err().to_string();
        assert!(e.contains("conditional put") && e.contains("dynamodb"), "{e}");
        assert!(check_storage(&BTreeMap::new(), Some("dynamodb".into())).is_err());
        let single = BTreeMap::from([("aws_s3_allow_unsafe_rename".to_string(), "true".to_string())]);
        assert!(check_storage(&single, None).is_ok(), "allowed, with a warning");
    }
}
