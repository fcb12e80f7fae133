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

use crate::money::Usd;

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

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Execute => "execute",
            Decision::Queue => "queue",
            Decision::Deny => "deny",
        }
    }
}

/// The tools a policy names: those that move money or change an escrow.
pub const MONEY_TOOLS: &[&str] =
    &["request_payout", "create_escrow", "release_escrow", "dispute_escrow", "claim_faucet", "mark_complete"];

/// The tools the scheduled `pfsync payouts` job can run from a queued row (payouts and escrow actions).
/// The faucet and the complete step are no operations of the engine: they run now or not at all.
pub const QUEUEABLE_TOOLS: &[&str] = &["request_payout", "create_escrow", "release_escrow", "dispute_escrow"];

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
    pub fn check(&self) -> Result<(), String> {
        for (field, v) in [("max_per_call_usd", &self.max_per_call_usd), ("max_per_day_usd", &self.max_per_day_usd)] {
            if let Some(t) = v {
                Usd::parse_positive(t).map_err(|e| format!("{field} = {t:?}: {e} (write it like \"100.00\")"))?;
            }
        }
        for (tool, decision) in &self.policy {
            if !MONEY_TOOLS.contains(&tool.as_str()) {
                return Err(format!("[mcp.policy] names {tool:?}, which is not a money tool (one of {MONEY_TOOLS:?})"));
            }
            if *decision == Decision::Queue && !QUEUEABLE_TOOLS.contains(&tool.as_str()) {
                return Err(format!(
                    "[mcp.policy] {tool} = \"queue\": the scheduled payouts job runs payouts and escrow actions only, \
                     so a queued {tool} would never run; use \"execute\" or \"deny\""
                ));
            }
        }
        if let Some(ns) = &self.namespace {
            crate::payouts::check_namespace(ns).map_err(|e| e.to_string())?;
        }
        for id in self.allowed_agents.iter().flatten() {
            crate::payouts::validate::check_id(id).map_err(|e| format!("allowed_agents: {id:?} {e}"))?;
        }
        for c in self.allowed_clients.iter().flatten() {
            check_client(c).map_err(|e| format!("allowed_clients: {e}"))?;
        }
        Ok(())
    }

    pub fn decision(&self, tool: &str) -> Decision {
        self.policy.get(tool).copied().unwrap_or(Decision::Deny)
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// The allowlists and the per-call limit: refusals an agent can read, before anything is written.
    pub fn admit(&self, client: &str, agents: &[&str], amount: Option<Usd>) -> Result<(), String> {
        if let Some(clients) = &self.allowed_clients
            && !clients.iter().any(|c| c == client)
        {
            return Err(format!("client {client:?} may not call money tools (not in [mcp] allowed_clients)"));
        }
        if let Some(allowed) = &self.allowed_agents {
            for a in agents {
                if !allowed.iter().any(|x| x == a) {
                    return Err(format!(
                        "agent {a:?} is not in the allowlist of agents this server may move money for ([mcp] allowed_agents)"
                    ));
                }
            }
        }
        if let (Some(max), Some(amount)) = (self.max_per_call(), amount)
            && amount > max
        {
            return Err(format!("amount {amount} USD is over the limit per call of {max} USD"));
        }
        Ok(())
    }

    /// The daily limit, given what this client already queued or executed today.
    pub fn admit_daily(&self, client: &str, spent_today: Usd, amount: Option<Usd>) -> Result<(), String> {
        let (Some(max), Some(amount)) = (self.max_per_day(), amount) else {
            return Ok(());
        };
        let total = spent_today.checked_add(amount).unwrap_or(Usd::from_cents(crate::money::MAX_CENTS).unwrap_or(max));
        if total > max {
            return Err(format!(
                "over the daily limit: client {client:?} has requested {spent_today} USD today (UTC); {amount} USD more \
                 would exceed the limit of {max} USD per day. Nothing was moved; try again tomorrow or ask an operator"
            ));
        }
        Ok(())
    }
}

/// Client names end up in operation ids and `requested_by`: lowercase letters, digits, `_` and `-`.
pub fn check_client(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(format!("client name {name:?} must be 1..=32 characters of a-z, 0-9, _ and -")) }
}

/// Request ids come from agents: the id alphabet without `:` (the separator in operation ids), 1..=64.
pub fn check_request_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err("request_id must be 1..=64 characters of ASCII letters, digits, '.', '_' and '-'".into())
    }
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
        assert!(s.admit("c", &["a1"], Some(usd("10.01"))).unwrap_err().contains("per call"));
        assert!(s.admit("c", &["a2"], Some(usd("1.00"))).unwrap_err().contains("allowlist"));
        assert!(s.admit_daily("c", usd("10.00"), Some(usd("5.00"))).is_ok());
        assert!(s.admit_daily("c", usd("10.00"), Some(usd("5.01"))).unwrap_err().contains("daily limit"));
        assert_eq!(s.decision("request_payout"), Decision::Execute);
        assert_eq!(s.decision("create_escrow"), Decision::Deny);
        let bad: McpSection = toml::from_str("[policy]\nsteal = \"execute\"\n").unwrap();
        assert!(bad.check().is_err());
        let queued: McpSection = toml::from_str("[policy]\nclaim_faucet = \"queue\"\n").unwrap();
        assert!(queued.check().unwrap_err().contains("would never run"));
        let direct: McpSection =
            toml::from_str("[policy]\nclaim_faucet = \"execute\"\nmark_complete = \"deny\"\n").unwrap();
        direct.check().unwrap();
    }
}
