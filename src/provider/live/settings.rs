//! `[provider]` for `kind = "live"`: the services' URLs, the keys of further agents the team owns, and the
//! escrow and evidence options. Checked when the settings are read; agent keys are read only when the
//! provider connects, so commands that need no provider never ask for them.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::{DEFAULT_CASINO_URL, DEFAULT_ESCROW_URL, DEFAULT_FAUCET_URL, LiveOptions};
use crate::secret::ApiKey;

/// `[provider]` keys of this provider (besides `kind`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSection {
    /// Refused when true: the live services read no `Idempotency-Key`.
    pub honours_idempotency_keys: Option<bool>,
    /// The casino's API base [default: https://casino.purpleflea.com/api/v1].
    pub casino_url: Option<String>,
    /// The escrow service's base [default: https://escrow.purpleflea.com].
    pub escrow_url: Option<String>,
    /// The faucet service's base (`POST /faucet/claim`, no key) [default: https://faucet.purpleflea.com].
    pub faucet_url: Option<String>,
    /// Keys of further agents the team owns, each from an environment variable (a Databricks secret mapped
    /// into the task's environment) or a file. Never the key itself.
    #[serde(default)]
    pub agent_keys: Vec<KeySource>,
    /// `timeout_hours` of an escrow whose action row does not set `metadata.timeout_hours`.
    pub escrow_timeout_hours: Option<u32>,
    /// How far the provider's clock may be behind this machine's, in seconds [default: 30].
    pub clock_skew_secs: Option<u32>,
    /// Escrows to sync besides those in the payout log (there is no list endpoint).
    #[serde(default)]
    pub escrow_ids: Vec<String>,
}

pub const FIELDS: &[&str] = &[
    "honours_idempotency_keys",
    "casino_url",
    "escrow_url",
    "faucet_url",
    "agent_keys",
    "escrow_timeout_hours",
    "clock_skew_secs",
    "escrow_ids",
];

/// Where one agent key is read from: exactly one of `env` (a variable name) and `file` (a path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl KeySource {
    /// The key, and where it came from (for the message when the provider refuses it).
    fn read(&self, field: &str) -> Result<(ApiKey, String), String> {
        match (&self.env, &self.file) {
            (Some(var), None) => {
                let v = std::env::var(var)
                    .map_err(|_| format!("{field}: environment variable {var} is not set (or not UTF-8)"))?;
                let key = ApiKey::new(&v, &format!("in {var}")).map_err(|e| format!("{field}: {e}"))?;
                Ok((key, format!("the agent key in {var} ({field})")))
            }
            (None, Some(path)) => {
                let key = ApiKey::resolve(Some(path), None).map_err(|e| format!("{field}: {e}"))?;
                Ok((key, format!("the agent key in {} ({field})", path.display())))
            }
            _ => Err(format!("{field}: give exactly one of env = \"VARIABLE\" or file = \"/path\"")),
        }
    }
}

/// The live provider's settings, checked, with the agent keys read.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub casino_url: Url,
    pub escrow_url: Url,
    pub faucet_url: Url,
    /// Each key with where it came from.
    pub agent_keys: Vec<(ApiKey, String)>,
    pub options: LiveOptions,
    pub escrow_ids: Vec<String>,
}

pub fn parse(section: &toml::Table) -> Result<LiveSection, String> {
    LiveSection::deserialize(toml::Value::Table(section.clone())).map_err(|e| e.to_string())
}

fn url(field: &str, text: &str) -> Result<Url, String> {
    let url =
        Url::parse(text).map_err(|e| format!("{field}: {:?} is not a URL: {e}", crate::http::shown_text(text)))?;
    crate::http::check_url(&url).map_err(|e| format!("{field}: {e}"))?;
    Ok(url)
}

/// The agent keys the section names, read now.
pub fn agent_keys(section: &toml::Table) -> Result<Vec<ApiKey>, String> {
    Ok(LiveSettings::resolve(section)?.agent_keys.into_iter().map(|(key, _)| key).collect())
}

impl LiveSettings {
    /// Every value checked, agent keys read (a missing variable stops the run before anything moves).
    pub fn resolve(section: &toml::Table) -> Result<LiveSettings, String> {
        let p = parse(section)?;
        let mut s = LiveSettings::check(&p)?;
        s.agent_keys = p
            .agent_keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.read(&format!("[[provider.agent_keys]] #{}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(s)
    }

    /// Every value but the agent keys.
    fn check(p: &LiveSection) -> Result<LiveSettings, String> {
        if p.honours_idempotency_keys == Some(true) {
            return Err("[provider] honours_idempotency_keys: Purple Flea's live services read no Idempotency-Key; \
                        remove the setting"
                .into());
        }
        let casino_url = url("[provider] casino_url", p.casino_url.as_deref().unwrap_or(DEFAULT_CASINO_URL))?;
        let escrow_url = url("[provider] escrow_url", p.escrow_url.as_deref().unwrap_or(DEFAULT_ESCROW_URL))?;
        let faucet_url = url("[provider] faucet_url", p.faucet_url.as_deref().unwrap_or(DEFAULT_FAUCET_URL))?;
        let mut options = LiveOptions::default();
        if let Some(h) = p.escrow_timeout_hours {
            if !(1..=720).contains(&h) {
                return Err(format!("[provider] escrow_timeout_hours: must be within 1..=720, got {h}"));
            }
            options.escrow_timeout_hours = h;
        }
        if let Some(s) = p.clock_skew_secs {
            if s > 3600 {
                return Err(format!("[provider] clock_skew_secs: must be at most 3600, got {s}"));
            }
            options.clock_skew_secs = s as i64;
        }
        for id in &p.escrow_ids {
            if !id.starts_with("esc_") || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("[provider] escrow_ids: {id:?} is not an escrow id (esc_ and letters/digits)"));
            }
        }
        for (i, k) in p.agent_keys.iter().enumerate() {
            if k.env.is_some() == k.file.is_some() {
                return Err(format!(
                    "[[provider.agent_keys]] #{}: give exactly one of env = \"VARIABLE\" or file = \"/path\"",
                    i + 1
                ));
            }
        }
        Ok(LiveSettings {
            casino_url,
            escrow_url,
            faucet_url,
            agent_keys: Vec::new(),
            options,
            escrow_ids: p.escrow_ids.clone(),
        })
    }
}

/// Check `[provider]` for this provider when the settings are read: everything but the agent keys.
pub fn check(section: &toml::Table) -> Result<(), String> {
    LiveSettings::check(&parse(section)?).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderSettings;

    fn section(text: &str) -> ProviderSettings {
        let t: toml::Table = toml::from_str(text).unwrap();
        let p = t.get("provider").and_then(|v| v.as_table()).cloned().unwrap_or_default();
        ProviderSettings::from_table(p).unwrap()
    }

    #[test]
    fn the_live_provider_settings_are_checked_before_anything_runs() {
        let load = |text: &str| {
            let s = section(text);
            s.check().map(|()| s)
        };
        let live = |s: ProviderSettings| LiveSettings::resolve(&s.section);
        // Live-only keys without kind = "live": refused, naming what to do.
        let e = load("[provider]\ncasino_url = \"https://casino.example/api/v1\"\n").unwrap_err();
        assert!(e.contains("kind = \"live\""), "{e}");
        let e = load("[provider]\nfaucet_url = \"https://faucet.example\"\n").unwrap_err();
        assert!(e.contains("faucet_url") && e.contains("kind = \"live\""), "{e}");
        // The live services read no Idempotency-Key: declaring otherwise is refused.
        let e = load("[provider]\nkind = \"live\"\nhonours_idempotency_keys = true\n").unwrap_err();
        assert!(e.contains("honours_idempotency_keys"), "{e}");
        // An agent key from a variable that is not set: named, never a silent skip.
        let s = load("[provider]\nkind = \"live\"\n[[provider.agent_keys]]\nenv = \"PFSYNC_TEST_UNSET_KEY_VAR\"\n")
            .unwrap();
        let e = live(s).unwrap_err();
        assert!(e.contains("PFSYNC_TEST_UNSET_KEY_VAR") && e.contains("not set"), "{e}");
        // Both or neither of env and file: refused. Plain http off loopback: refused.
        let e = load("[provider]\nkind = \"live\"\n[[provider.agent_keys]]\n").unwrap_err();
        assert!(e.contains("exactly one of env"), "{e}");
        let e = load("[provider]\nkind = \"live\"\ncasino_url = \"http://casino.example/api/v1\"\n").unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        let e = load("[provider]\nkind = \"live\"\nescrow_timeout_hours = 0\n").unwrap_err();
        assert!(e.contains("1..=720"), "{e}");
        // Defaults: the public hosts.
        let l = live(load("[provider]\nkind = \"live\"\n").unwrap()).unwrap();
        assert_eq!(l.casino_url.as_str(), "https://casino.purpleflea.com/api/v1");
        assert_eq!((l.options.escrow_timeout_hours, l.options.clock_skew_secs), (24, 30));
    }
}
