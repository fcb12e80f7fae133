//! The `[mcp]` section of `pfsync.toml`: per money tool, what a call does (`execute`, `queue`, `deny`), the
//! limits that hold before anything moves, and the agents money may go to or come from.
//!
//! ```toml
//! [mcp]
//! max_per_call_usd = "100.00"     # one call's amount
//! max_per_day_usd = "1000.00"     # per client and UTC day, over what its calls queued or executed
//! allowed_agents = ["agent-000001", "agent-000002"]   # payees and escrow parties; absent = any
//! allowed_clients = ["mosaic-labeler"]                # --client names that may call money tools; absent = any
//! [mcp.policy]
//! request_payout = "execute"
//! create_escrow = "queue"
//! release_escrow = "execute"
//! dispute_escrow = "execute"
//! claim_faucet = "execute"        # execute | deny: nothing runs a queued claim
//! mark_complete = "execute"       # execute | deny
//! ```
//!
//! A money tool without a policy is denied: a server must be told what it may do.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tool::Tool;
use crate::money::{MoneyError, Usd};

/// What a money tool call does once its limits pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Append the row to the pending or actions table and run the engine for that one operation now.
    Execute,
    /// Append the row only: the scheduled `pfsync payouts` job runs it.
    Queue,
    /// Refuse every call.
    Deny,
}

/// Why an `[mcp]` section is refused when the config file is read (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{field} = {text:?}: {source} (write it like \"100.00\")")]
    Limit { field: &'static str, text: String, source: MoneyError },
    #[error("[mcp.policy] names {name:?}, which is not a money tool (one of {:?})", governed_names())]
    NotAMoneyTool { name: String },
    #[error(
        "[mcp.policy] {tool} = \"queue\": the scheduled payouts job runs payouts and escrow actions only, so a \
         queued {tool} would never run; use \"execute\" or \"deny\""
    )]
    NeverRuns { tool: Tool },
    #[error("{0}")]
    Namespace(String),
    #[error("allowed_agents: {id:?} {reason}")]
    Agent { id: String, reason: String },
    #[error("allowed_clients: {0}")]
    Client(BadClientName),
}

/// A refusal of the allowlists or the limit per call: text an agent reads, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("client {client:?} may not call money tools (not in [mcp] allowed_clients)")]
    Client { client: String },
    #[error("agent {agent:?} is not in the allowlist of agents this server may move money for ([mcp] allowed_agents)")]
    Agent { agent: String },
    #[error("amount {amount} USD is over the limit per call of {max} USD")]
    PerCall { amount: Usd, max: Usd },
}

/// The daily limit's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "over the daily limit: client {client:?} has requested {spent} USD today (UTC); {amount} USD more would exceed \
     the limit of {max} USD per day. Nothing was moved; try again tomorrow or ask an operator"
)]
pub struct OverDailyLimit {
    pub client: String,
    pub spent: Usd,
    pub amount: Usd,
    pub max: Usd,
}

/// A `--client` name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client name {0:?} must be 1..=32 characters of a-z, 0-9, _ and -")]
pub struct BadClientName(pub String);

/// A request id that breaks the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request_id must be 1..=64 characters of ASCII letters, digits, '.', '_' and '-'")]
pub struct BadRequestId;

fn governed_names() -> Vec<&'static str> {
    Tool::ALL.into_iter().filter(|t| t.governed()).map(Tool::name).collect()
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// Largest amount of one call (payouts and escrow creates), e.g. "100.00".
    pub max_per_call_usd: Option<String>,
    /// Largest total per client and UTC day, over the amounts its calls queued or executed.
    pub max_per_day_usd: Option<String>,
    /// Agents a payout may pay, and an escrow's buyer and seller; absent = any agent.
    pub allowed_agents: Option<Vec<String>>,
    /// Client names (`pfsync mcp --client`) that may call money tools; absent = any.
    pub allowed_clients: Option<Vec<String>>,
    /// Namespace of the operations the server runs (as `pfsync payouts --namespace`) [default: default].
    pub namespace: Option<String>,
    /// Per money tool: execute | queue | deny. A tool not named is denied.
    #[serde(default)]
    pub policy: BTreeMap<String, Decision>,
}

impl McpSection {
    fn limit(text: &Option<String>) -> Option<Usd> {
        text.as_deref().and_then(|t| Usd::parse_positive(t).ok())
    }

    pub fn max_per_call(&self) -> Option<Usd> {
        Self::limit(&self.max_per_call_usd)
    }

    pub fn max_per_day(&self) -> Option<Usd> {
        Self::limit(&self.max_per_day_usd)
    }

    /// Checked when the config file is read.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (field, v) in [("max_per_call_usd", &self.max_per_call_usd), ("max_per_day_usd", &self.max_per_day_usd)] {
            if let Some(t) = v {
                Usd::parse_positive(t).map_err(|source| PolicyError::Limit { field, text: t.clone(), source })?;
            }
        }
        for (name, decision) in &self.policy {
            let Some(tool) = Tool::parse(name).filter(|t| t.governed()) else {
                return Err(PolicyError::NotAMoneyTool { name: name.clone() });
            };
            if *decision == Decision::Queue && !tool.queueable() {
                return Err(PolicyError::NeverRuns { tool });
            }
        }
        if let Some(ns) = &self.namespace {
            crate::payouts::check_namespace(ns).map_err(|e| PolicyError::Namespace(e.to_string()))?;
        }
        for id in self.allowed_agents.iter().flatten() {
            crate::payouts::validate::check_id(id).map_err(|reason| PolicyError::Agent { id: id.clone(), reason })?;
        }
        for c in self.allowed_clients.iter().flatten() {
            check_client(c).map_err(PolicyError::Client)?;
        }
        Ok(())
    }

    pub fn decision(&self, tool: Tool) -> Decision {
        self.policy.get(tool.name()).copied().unwrap_or(Decision::Deny)
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// The allowlists and the per-call limit: refusals an agent can read, before anything is written.
    pub fn admit(&self, client: &str, agents: &[&str], amount: Option<Usd>) -> Result<(), Refusal> {
        if let Some(clients) = &self.allowed_clients
            && !clients.iter().any(|c| c == client)
        {
            return Err(Refusal::Client { client: client.to_string() });
        }
        if let Some(allowed) = &self.allowed_agents {
            for a in agents {
                if !allowed.iter().any(|x| x == a) {
                    return Err(Refusal::Agent { agent: a.to_string() });
                }
            }
        }
        if let (Some(max), Some(amount)) = (self.max_per_call(), amount)
            && amount > max
        {
            return Err(Refusal::PerCall { amount, max });
        }
        Ok(())
    }

    /// The daily limit, given what this client already queued or executed today.
    pub fn admit_daily(&self, client: &str, spent_today: Usd, amount: Option<Usd>) -> Result<(), OverDailyLimit> {
        let (Some(max), Some(amount)) = (self.max_per_day(), amount) else {
            return Ok(());
        };
        let total = spent_today.checked_add(amount).unwrap_or(Usd::from_cents(crate::money::MAX_CENTS).unwrap_or(max));
        if total > max {
            return Err(OverDailyLimit { client: client.to_string(), spent: spent_today, amount, max });
        }
        Ok(())
    }
}

/// Client names end up in operation ids and `requested_by`: lowercase letters, digits, `_` and `-`.
pub fn check_client(name: &str) -> Result<(), BadClientName> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(BadClientName(name.to_string())) }
}

/// Request ids come from agents: the id alphabet without `:` (the separator in operation ids), 1..=64.
pub fn check_request_id(id: &str) -> Result<(), BadRequestId> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok { Ok(()) } else { Err(BadRequestId) }
}

/// The operation id of a request: one per client and request id, so a retry is the same operation in the
/// log and the engine runs it at most once. `:` separates the parts and occurs in neither.
pub fn operation_id(client: &str, request_id: &str) -> String {
    format!("mcp:{client}:{request_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_valid_payout_ids_and_unambiguous() {
        let id = operation_id("mosaic-1", "req.42_a-b");
        assert_eq!(id, "mcp:mosaic-1:req.42_a-b");
        crate::payouts::validate::check_id(&id).unwrap();
        assert!(check_request_id("a:b").is_err());
        assert!(check_request_id("a'b").is_err());
        assert!(check_client("A").is_err());
    }

    #[test]
    fn limits_and_allowlists_refuse_with_a_reason() {
        let s: McpSection = toml::from_str(
            "max_per_call_usd = \"10.00\"\nmax_per_day_usd = \"15.00\"\nallowed_agents = [\"a1\"]\n[policy]\nrequest_payout = \"execute\"\n",
        )
        .unwrap();
        s.check().unwrap();
        let usd = |t: &str| Usd::parse(t).unwrap();
        assert!(s.admit("c", &["a1"], Some(usd("10.00"))).is_ok());
        assert!(s.admit("c", &["a1"], Some(usd("10.01"))).unwrap_err().to_string().contains("per call"));
        assert!(s.admit("c", &["a2"], Some(usd("1.00"))).unwrap_err().to_string().contains("allowlist"));
        assert!(s.admit_daily("c", usd("10.00"), Some(usd("5.00"))).is_ok());
        assert!(s.admit_daily("c", usd("10.00"), Some(usd("5.01"))).unwrap_err().to_string().contains("daily limit"));
        assert_eq!(s.decision(Tool::RequestPayout), Decision::Execute);
        assert_eq!(s.decision(Tool::CreateEscrow), Decision::Deny);
        let bad: McpSection = toml::from_str("[policy]\nsteal = \"execute\"\n").unwrap();
        assert!(bad.check().is_err());
        let queued: McpSection = toml::from_str("[policy]\nclaim_faucet = \"queue\"\n").unwrap();
        assert!(queued.check().unwrap_err().to_string().contains("would never run"));
        let direct: McpSection =
            toml::from_str("[policy]\nclaim_faucet = \"execute\"\nmark_complete = \"deny\"\n").unwrap();
        direct.check().unwrap();
    }
}
