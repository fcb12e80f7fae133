//! A provider that answers from a script and records every call: for tests only (built with the
//! `test-hooks` feature, never a user-facing kind). It is also the proof that a provider is a folder plus
//! one line in `registry::KINDS`: nothing else in pfsync knows it.
//!
//! `[provider] kind = "scripted"`, `script = "PATH"` (JSON), `record = "PATH"` (one JSON line per call
//! appended). The script declares the capabilities and, per operation id, the answers to its sends and
//! lookups in order (the last one repeats); an operation the script does not name is executed.
//!
//! ```json
//! {"capabilities": {"honours_idempotency_keys": true, "lookup_by_key": true},
//!  "operations": {"p-1": {"execute": ["unknown"], "lookup": ["executed"]}}}
//! ```
//! Answers: `executed` (a `tx_<n>` reference), `refused` (a final refusal), `unknown` (a 502: may have run);
//! lookups also `not_executed`, `inconclusive` and `pending`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Capabilities, Common, Evidence, Lookup, LookupContext, Provider, ProviderError, Receipt};
use crate::http::{HttpError, IdempotencyKey};
use crate::operation::Operation;

pub const FIELDS: &[&str] = &["script", "record"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    script: PathBuf,
    record: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[serde(default)]
    capabilities: DeclaredCapabilities,
    #[serde(default)]
    operations: HashMap<String, Answers>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclaredCapabilities {
    #[serde(default)]
    honours_idempotency_keys: bool,
    #[serde(default)]
    lookup_by_key: bool,
    #[serde(default)]
    dispute_resolvable: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answers {
    #[serde(default)]
    execute: Vec<String>,
    #[serde(default)]
    lookup: Vec<String>,
}

fn parse(section: &toml::Table) -> Result<Section, String> {
    Section::deserialize(toml::Value::Table(section.clone())).map_err(|e| e.to_string())
}

pub fn check(section: &toml::Table) -> Result<(), String> {
    parse(section).map(|_| ())
}

pub async fn connect(section: &toml::Table, _common: &Common) -> Result<Arc<dyn Provider>, ProviderError> {
    let s = parse(section).map_err(ProviderError::Setting)?;
    let text = std::fs::read_to_string(&s.script)
        .map_err(|e| ProviderError::Setting(format!("[provider] script {}: {e}", s.script.display())))?;
    let script: Script = serde_json::from_str(&text)
        .map_err(|e| ProviderError::Setting(format!("[provider] script {}: {e}", s.script.display())))?;
    Ok(Arc::new(Scripted { script, record: s.record, state: Mutex::new(State::default()) }))
}

#[derive(Default)]
struct State {
    /// Calls so far per operation and kind of call.
    calls: HashMap<(String, &'static str), usize>,
    /// References handed out, per operation (the first one is what a lookup finds).
    executed: HashMap<String, String>,
    next_tx: u64,
}

struct Scripted {
    script: Script,
    record: Option<PathBuf>,
    state: Mutex<State>,
}

impl Scripted {
    /// The scripted answer to this call, and the reference of the operation's first execution.
    fn answer(&self, op: &Operation, call: &'static str) -> (String, Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.calls.entry((op.id.clone(), call)).or_default();
        let i = *n;
        *n += 1;
        let list = self.script.operations.get(&op.id).map(|a| if call == "execute" { &a.execute } else { &a.lookup });
        let answer = match list {
            Some(l) if !l.is_empty() => l[i.min(l.len() - 1)].clone(),
            _ if call == "execute" => "executed".into(),
            _ => "not_executed".into(),
        };
        // An execution that may have run ("unknown") ran, as a provider that commits before it fails does.
        if call == "execute" && matches!(answer.as_str(), "executed" | "unknown") {
            st.next_tx += 1;
            let tx = format!("tx_{}", st.next_tx);
            st.executed.entry(op.id.clone()).or_insert(tx);
        }
        let tx = st.executed.get(&op.id).cloned();
        drop(st);
        self.record(op, call, &answer);
        (answer, tx)
    }

    fn record(&self, op: &Operation, call: &str, answer: &str) {
        let Some(path) = &self.record else { return };
        let line = serde_json::json!({"operation_id": op.id, "call": call, "answer": answer}).to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn unknown() -> ProviderError {
    ProviderError::Http(HttpError::Server {
        endpoint: "POST /scripted".into(),
        status: 502,
        message: "scripted: unknown outcome".into(),
        attempts: 1,
    })
}

impl Provider for Scripted {
    fn capabilities(&self) -> Capabilities {
        let d = &self.script.capabilities;
        Capabilities {
            honours_idempotency_keys: d.honours_idempotency_keys,
            lookup_by_key: d.lookup_by_key,
            dispute_resolvable: d.dispute_resolvable,
            ..Capabilities::default()
        }
    }

    fn execute<'a>(
        &'a self,
        op: &'a Operation,
        _key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<Receipt, ProviderError>> {
        Box::pin(async move {
            match self.answer(op, "execute") {
                (a, tx) if a == "executed" => Ok(Receipt { tx_id: tx, escrow_id: None, replayed: false }),
                (a, _) if a == "refused" => {
                    Err(ProviderError::refused(409, "scripted_refusal", "refused", "scripted".into()))
                }
                _ => Err(unknown()),
            }
        })
    }

    fn lookup<'a>(
        &'a self,
        op: &'a Operation,
        _key: &'a IdempotencyKey,
        _ctx: &'a LookupContext<'a>,
    ) -> BoxFuture<'a, Result<Lookup, ProviderError>> {
        Box::pin(async move {
            let (answer, tx) = self.answer(op, "lookup");
            Ok(match answer.as_str() {
                "executed" => Lookup::Executed { tx_id: tx, escrow_id: None, duplicates: 0, evidence: Evidence::Key },
                "not_executed" => Lookup::NotExecuted,
                "pending" => Lookup::Pending { why: "scripted".into() },
                "unknown" => return Err(unknown()),
                _ => Lookup::Inconclusive { why: "scripted".into() },
            })
        })
    }

    fn wallet_now<'a>(&'a self, _agent_id: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }

    fn escrow_now<'a>(&'a self, escrow_id: &'a str) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>> {
        Box::pin(async move { Err(ProviderError::Setting(format!("the scripted provider has no escrow {escrow_id}"))) })
    }
}
