//! The one place that knows providers by name: `[provider] kind = "..."` picks one of [`KINDS`], whose
//! other `[provider]` keys are its own, checked by it when the settings are read (before anything is
//! touched) and read again when it connects. Adding a provider is a folder under `src/provider/` and
//! one line in [`KINDS`].

use std::sync::Arc;

use super::{Common, Provider, ProviderError};
use crate::secret::ApiKey;
use futures::future::BoxFuture;

/// A provider connecting: from its `[provider]` keys and what every provider is built from.
pub type Connect = for<'a> fn(&'a toml::Table, &'a Common) -> BoxFuture<'a, Result<Arc<dyn Provider>, ProviderError>>;

/// One provider: its name, the `[provider]` keys it takes, how those are checked, the secrets they name,
/// and how it connects.
pub struct Kind {
    pub name: &'static str,
    pub fields: &'static [&'static str],
    pub check: fn(&toml::Table) -> Result<(), String>,
    /// The keys its section holds besides the payer's, read now (no network).
    pub keys: fn(&toml::Table) -> Result<Vec<ApiKey>, String>,
    pub connect: Connect,
}

fn no_keys(_: &toml::Table) -> Result<Vec<ApiKey>, String> {
    Ok(Vec::new())
}

/// Every provider pfsync can use; the first is the default.
pub static KINDS: &[Kind] = &[
    Kind {
        name: "seed",
        fields: super::seed::FIELDS,
        check: super::seed::check,
        keys: no_keys,
        connect: |s, c| Box::pin(super::seed::connect(s, c)),
    },
    Kind {
        name: "live",
        fields: super::live::FIELDS,
        check: super::live::check,
        keys: super::live::agent_keys,
        connect: |s, c| Box::pin(super::live::connect(s, c)),
    },
    #[cfg(feature = "test-hooks")]
    Kind {
        name: "scripted",
        fields: super::scripted::FIELDS,
        check: super::scripted::check,
        keys: no_keys,
        connect: |s, c| Box::pin(super::scripted::connect(s, c)),
    },
];

/// The `[provider]` section as written: `kind`, and the chosen provider's own keys.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    pub kind: Option<String>,
    pub section: toml::Table,
}

impl ProviderSettings {
    /// Split `[provider]` into its kind and the rest.
    pub fn from_table(mut table: toml::Table) -> Result<ProviderSettings, String> {
        let kind = match table.remove("kind") {
            None => None,
            Some(toml::Value::String(k)) => Some(k),
            Some(other) => return Err(format!("kind must be a string, got {other}")),
        };
        Ok(ProviderSettings { kind, section: table })
    }

    fn kind(&self) -> Result<&'static Kind, String> {
        match &self.kind {
            None => Ok(&KINDS[0]),
            Some(name) => KINDS.iter().find(|k| k.name == name.as_str()).ok_or_else(|| {
                let names: Vec<String> = KINDS.iter().map(|k| format!("{:?}", k.name)).collect();
                format!("kind {name:?} is not a provider pfsync knows; use one of {}", names.join(", "))
            }),
        }
    }

    /// The chosen provider's name.
    pub fn kind_name(&self) -> Result<&'static str, String> {
        self.kind().map(|k| k.name)
    }

    /// Check the section for its kind before anything runs: a key that belongs to another provider is
    /// named with the kind it belongs to.
    pub fn check(&self) -> Result<(), String> {
        let kind = self.kind()?;
        let mut foreign: Vec<&str> = Vec::new();
        let mut owner = "";
        for key in self.section.keys() {
            if kind.fields.contains(&key.as_str()) {
                continue;
            }
            match KINDS.iter().find(|k| k.fields.contains(&key.as_str())) {
                Some(other) => {
                    foreign.push(key);
                    owner = other.name;
                }
                None => return Err(format!("unknown key {key:?} for kind = {:?}", kind.name)),
            }
        }
        if !foreign.is_empty() {
            return Err(format!(
                "{} {} for kind = {owner:?}; set it, or remove {}",
                foreign.join(", "),
                if foreign.len() == 1 { "is" } else { "are" },
                if foreign.len() == 1 { "it" } else { "them" }
            ));
        }
        (kind.check)(&self.section)
    }
}

impl ProviderSettings {
    /// The keys the section holds besides the payer's (`[[provider.agent_keys]]`), read now: what another
    /// secret (the MCP server's bearer token) must never equal.
    pub fn held_keys(&self) -> Result<Vec<ApiKey>, String> {
        (self.kind()?.keys)(&self.section)
    }
}

/// Connect the chosen provider. Keys it needs besides the payer's are read now, and every held key is
/// checked with the provider before any step runs.
pub async fn connect(settings: &ProviderSettings, common: &Common) -> Result<Arc<dyn Provider>, ProviderError> {
    let kind = settings.kind().map_err(|e| ProviderError::Setting(format!("[provider] {e}")))?;
    (kind.connect)(&settings.section, common).await
}
