//! Three-level table names (`catalog.schema.table`) and where their Delta tables live.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub catalog: String,
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `purpleflea.agents.wallets`: three parts of lowercase letters, digits and `_`, as Unity Catalog
    /// names them.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let [catalog, schema, table] = parts.as_slice() else {
            return Err(format!("{text:?} is not a three-level name like purpleflea.agents.wallets"));
        };
        for p in [catalog, schema, table] {
            if p.is_empty()
                || p.len() > 255
                || !p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(format!("{text:?}: each part must be lowercase letters, digits or _"));
            }
        }
        Ok(TableName { catalog: catalog.to_string(), schema: schema.to_string(), table: table.to_string() })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// A local path or an object-store URI as a URL. Local paths are made absolute (they need not exist yet).
pub fn location_url(text: &str) -> Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("location is empty".to_string());
    }
    if let Ok(url) = Url::parse(text) {
        // A Windows drive letter parses as a one-letter scheme; everything else with a scheme is a URI.
        if url.scheme().len() > 1 {
            return match url.scheme() {
                "file" | "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "adl" | "azure" => Ok(url),
                // delta-rs would take it, and a run would report rows written that vanish when it exits.
                // Tests that want one build their `Warehouse` from a URL directly.
                "memory" => Err(format!(
                    "{text:?} is in memory: nothing written there outlives the process; use a folder or an object store"
                )),
                "dbfs" => Err(format!("{text:?} is in DBFS: {NOT_A_FUSE_MOUNT}")),
                other => Err(format!("unsupported storage scheme {other:?} in {text:?}")),
            };
        }
    }
    let path = std::path::Path::new(text);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| format!("cannot resolve {text:?}: {e}"))?.join(path)
    };
    Url::from_directory_path(&abs).map_err(|_| format!("{text:?} is not a usable path"))
}

/// What to use instead of a Databricks FUSE mount, and why.
const NOT_A_FUSE_MOUNT: &str = "Delta tables cannot live in a Unity Catalog volume or in DBFS, and a \
     commit through their FUSE mount fails (delta-rs commits to a local path with a hard link or \
     rename-if-not-exists: \"Function not implemented (os error 38)\"); use the cloud URI of an external \
     location instead (abfss://..., s3://..., gs://...). Volumes are fine for the binary, the config file and \
     --report files";

/// Refuse a warehouse or table location that cannot hold a Delta table pfsync uses: a Databricks FUSE mount
/// (`/Volumes/...`, `/dbfs/...`) for any table, and Unity Catalog's managed storage for a table pfsync
/// writes (`writes`): only Databricks writes managed tables.
pub fn check_table_location(url: &Url, writes: bool) -> Result<(), String> {
    if url.scheme() == "file" {
        let path = url.path();
        let under = |root: &str| path == root || path.starts_with(&format!("{root}/"));
        if under("/dbfs") {
            return Err(format!("{path:?} is on the DBFS FUSE mount: {NOT_A_FUSE_MOUNT}"));
        }
        // macOS mounts every disk under /Volumes; the Databricks driver, where /Volumes is Unity Catalog's,
        // runs Linux.
        if !cfg!(target_os = "macos") && under("/Volumes") {
            return Err(format!("{path:?} is in a Unity Catalog volume: {NOT_A_FUSE_MOUNT}"));
        }
    }
    if writes && url.path_segments().is_some_and(|mut segs| segs.any(|s| s == "__unitystorage")) {
        return Err(format!(
            "{url} is Unity Catalog managed storage: Unity Catalog lets engines outside Databricks read managed \
             tables, not write them; put the table under an external location (`pfsync ddl --warehouse URI` \
             registers every table as an external table there)"
        ));
    }
    Ok(())
}

/// The warehouse root, per-table location overrides, and storage options for the object store.
#[derive(Clone)]
pub struct Warehouse {
    root: Url,
    overrides: BTreeMap<TableName, Url>,
    storage_options: HashMap<String, String>,
    /// Options for one table only (credentials Unity Catalog vended for it), over the shared ones.
    table_options: BTreeMap<TableName, HashMap<String, String>>,
}

impl fmt::Debug for Warehouse {
    /// Storage options hold credentials: only their keys are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Warehouse")
            .field("root", &self.root.as_str())
            .field("overrides", &self.overrides)
            .field("storage_option_keys", &self.storage_options.keys().collect::<Vec<_>>())
            .field("tables_with_own_options", &self.table_options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Warehouse {
    pub fn new(root: Url, overrides: BTreeMap<TableName, Url>, storage_options: HashMap<String, String>) -> Warehouse {
        let mut root = root;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Warehouse { root, overrides, storage_options, table_options: BTreeMap::new() }
    }

    pub fn local(dir: &std::path::Path) -> Result<Warehouse, String> {
        Ok(Warehouse::new(location_url(&dir.to_string_lossy())?, BTreeMap::new(), HashMap::new()))
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The object-store options for one table: the shared ones, and any of its own over them.
    pub fn storage_options_for(&self, name: &TableName) -> HashMap<String, String> {
        let mut o = self.storage_options.clone();
        if let Some(own) = self.table_options.get(name) {
            o.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        o
    }

    /// Point one table at `location`, with options of its own (from the catalog).
    pub fn set_table(&mut self, name: TableName, location: Url, options: HashMap<String, String>) {
        if !options.is_empty() {
            self.table_options.insert(name.clone(), options);
        }
        self.overrides.insert(name, location);
    }

    /// Whether the config file mapped this name to a location itself.
    /// Whether any table has a location of its own (the config file's `[tables."..."]`, or Unity Catalog's).
    pub fn has_overrides(&self) -> bool {
        !self.overrides.is_empty()
    }

    pub fn is_mapped(&self, name: &TableName) -> bool {
        self.overrides.contains_key(name)
    }

    /// `<warehouse>/<catalog>/<schema>/<table>/`, unless the config maps the name elsewhere.
    pub fn location(&self, name: &TableName) -> Url {
        if let Some(u) = self.overrides.get(name) {
            return u.clone();
        }
        let mut u = self.root.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().push(&name.catalog).push(&name.schema).push(&name.table).push("");
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations() {
        let n = TableName::parse("purpleflea.agents.wallets").unwrap();
        assert_eq!(n.to_string(), "purpleflea.agents.wallets");
        assert!(TableName::parse("agents.wallets").is_err());
        assert!(TableName::parse("a.b.C").is_err());
        assert!(TableName::parse("a..c").is_err());
        let wh = Warehouse::new(Url::parse("s3://bucket/lake").unwrap(), BTreeMap::new(), HashMap::new());
        assert_eq!(wh.location(&n).as_str(), "s3://bucket/lake/purpleflea/agents/wallets/");
        let local = location_url("/tmp/wh").unwrap();
        assert_eq!(local.as_str(), "file:///tmp/wh/");
        assert!(location_url("ftp://x/y").is_err());
        assert!(location_url("memory:///").unwrap_err().contains("outlives the process"));
        assert!(location_url("relative/dir").unwrap().path().ends_with("/relative/dir/"));
        assert!(location_url("dbfs:/mnt/wh").unwrap_err().contains("external location"));
    }

    #[test]
    fn fuse_mounts_and_managed_storage_are_refused_as_table_locations() {
        let check = |text: &str, writes: bool| check_table_location(&location_url(text).unwrap(), writes);
        let e = check("/dbfs/mnt/wh", false).unwrap_err();
        assert!(e.contains("DBFS") && e.contains("os error 38") && e.contains("abfss://"), "{e}");
        assert!(check("/dbfsx/wh", true).is_ok());
        if !cfg!(target_os = "macos") {
            let e = check("/Volumes/purpleflea/ops/wh", true).unwrap_err();
            assert!(e.contains("Unity Catalog volume") && e.contains("s3://"), "{e}");
        }
        assert!(check("s3://b/w/Volumes/x", true).is_ok());
        let managed = "abfss://c@a.dfs.core.windows.net/m/__unitystorage/catalogs/1/tables/2";
        assert!(check(managed, true).unwrap_err().contains("managed storage"));
        assert!(check(managed, false).is_ok(), "a table pfsync only reads may be managed");
        assert!(check("gs://b/w", true).is_ok());
    }

    #[test]
    fn debug_hides_storage_secrets() {
        let mut opts = HashMap::new();
        opts.insert("aws_secret_access_key".to_string(), "hunter2".to_string());
        let wh = Warehouse::new(Url::parse("s3://b/").unwrap(), BTreeMap::new(), opts);
        assert!(!format!("{wh:?}").contains("hunter2"));
    }
}
