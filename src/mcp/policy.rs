//! The `[mcp]` section of `pfsync.toml`: per money tool, what a call does (`execute`, `queue`, `deny`), the
//! limits that hold before anything moves, the agents money may go to or come from, and whose escrows and
//! operations a client may touch.
//!
//! ```toml
//! [mcp]
//! max_per_call_usd = "100.00"     # one call's amount (a release or dispute: the escrow's amount)
//! max_per_day_usd = "1000.00"     # per client and UTC day, over what its calls queued or executed
//! allowed_agents = ["agent-000001", "agent-000002"]   # payees and escrow parties; absent = any
//! allowed_clients = ["mosaic-labeler"]                # --client names that may call money tools; absent = any
//! other_escrows = ["esc_000000000001"]  # escrows a client may act on besides its own ("*": any); absent = none
//! read_all_operations = false     # payout_status and open_findings: a client's own operations only
//! unresolvable_disputes = "deny"  # dispute_escrow where a dispute freezes the escrow with no resolve endpoint
//! [mcp.policy]
//! request_payout = "execute"
//! create_escrow = "queue"
//! release_escrow = "execute"
//! dispute_escrow = "execute"
//! claim_faucet = "execute"        # execute | deny: nothing runs a queued claim
//! mark_complete = "execute"       # execute | deny
//! ```
//!
//! A money tool without a policy is denied: a server must be told what it may do. So is a dispute that only
//! someone at the provider can end (the provider declares it: `Capabilities::dispute_resolvable`), unless
//! `unresolvable_disputes` says otherwise.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tool::Tool;
use crate::money::{MoneyError, Usd};

/// What a money tool call does once its limits pass. Ordered from the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Refuse every call.
    Deny,
    /// Append the row only: the scheduled `pfsync payouts` job runs it.
    Queue,
    /// Append the row to the pending or actions table and run the engine for that one operation now.
    Execute,
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
    #[error("other_escrows: {id:?} {reason} (or \"*\" for any escrow)")]
    Escrow { id: String, reason: String },
}

/// A refusal of the allowlists, of whose escrow it is, or of the limit per call: text an agent reads, before
/// anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "escrow {escrow} was not created by client {client:?} (through this server), and a client acts only on \
         its own escrows ([mcp] other_escrows names others it may act on)"
    )]
    NotOwnEscrow { escrow: String, client: String },
    #[error(
        "the amount of escrow {escrow} is not known here (not created through pfsync, and not synced yet), so the \
         limits cannot be checked"
    )]
    AmountUnknown { escrow: String },
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
    /// Escrows a client may release, dispute or complete though it did not create them (`"*"`: any);
    /// absent = only its own.
    pub other_escrows: Option<Vec<String>>,
    /// `payout_status` and `open_findings` answer about every operation, not only the client's own.
    #[serde(default)]
    pub read_all_operations: bool,
    /// `dispute_escrow` where the provider's disputes freeze the escrow with no endpoint to resolve them:
    /// execute | queue | deny [default: deny]. The stricter of this and the tool's policy holds.
    pub unresolvable_disputes: Option<Decision>,
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
        for id in self.other_escrows.iter().flatten().filter(|id| *id != ANY) {
            crate::payouts::validate::check_id(id).map_err(|reason| PolicyError::Escrow { id: id.clone(), reason })?;
        }
        Ok(())
    }

    pub fn decision(&self, tool: Tool) -> Decision {
        self.policy.get(tool.name()).copied().unwrap_or(Decision::Deny)
    }

    /// What a call of `tool` does with a provider whose disputes can (or cannot) be resolved: a dispute that
    /// freezes the escrow for good needs `unresolvable_disputes` as well as the tool's own policy.
    pub fn decision_with(&self, tool: Tool, disputes_resolvable: bool) -> Decision {
        let decision = self.decision(tool);
        if tool == Tool::DisputeEscrow && !disputes_resolvable {
            decision.min(self.unresolvable_disputes.unwrap_or(Decision::Deny))
        } else {
            decision
        }
    }

    /// A client acts on the escrows it created (through this server: the create's operation id is one of
    /// its own), and on those `other_escrows` names.
    pub fn may_act_on(&self, client: &str, escrow_id: Option<&str>, created_by: Option<&str>) -> Result<(), Refusal> {
        if created_by.is_some_and(|op| is_own(client, op)) {
            return Ok(());
        }
        let named = |id: &str| self.other_escrows.iter().flatten().any(|e| e == ANY || e == id);
        match escrow_id {
            Some(id) if named(id) => Ok(()),
            _ => Err(Refusal::NotOwnEscrow {
                escrow: escrow_id.or(created_by).unwrap_or_default().to_string(),
                client: client.to_string(),
            }),
        }
    }

    /// A read tool answers a client about its own operations, unless `read_all_operations`.
    pub fn may_read(&self, client: &str, operation_id: &str) -> bool {
        self.read_all_operations || is_own(client, operation_id)
    }

    /// Whether any limit applies to a call with an amount.
    pub fn limits_amounts(&self) -> bool {
        self.max_per_call().is_some() || self.max_per_day().is_some()
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
    format!("{}{request_id}", own_prefix(client))
}

/// What every operation id of a client's requests starts with (the client name holds no `:`, so no other
/// client's ids do).
pub fn own_prefix(client: &str) -> String {
    format!("mcp:{client}:")
}

fn is_own(client: &str, operation_id: &str) -> bool {
    operation_id.starts_with(&own_prefix(client))
}

/// `other_escrows = ["*"]`: any escrow.
const ANY: &str = "*";

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

    #[test]
    fn a_dispute_the_provider_cannot_resolve_needs_its_own_policy() {
        let s: McpSection = toml::from_str("[policy]\ndispute_escrow = \"execute\"\n").unwrap();
        assert_eq!(s.decision_with(Tool::DisputeEscrow, true), Decision::Execute);
        assert_eq!(s.decision_with(Tool::DisputeEscrow, false), Decision::Deny, "deny by default");
        assert_eq!(s.decision_with(Tool::ReleaseEscrow, false), Decision::Deny, "not named: denied");
        let queued: McpSection =
            toml::from_str("unresolvable_disputes = \"queue\"\n[policy]\ndispute_escrow = \"execute\"\n").unwrap();
        assert_eq!(queued.decision_with(Tool::DisputeEscrow, false), Decision::Queue, "the stricter of the two");
        let denied: McpSection =
            toml::from_str("unresolvable_disputes = \"execute\"\n[policy]\ndispute_escrow = \"deny\"\n").unwrap();
        assert_eq!(denied.decision_with(Tool::DisputeEscrow, false), Decision::Deny);
    }

    #[test]
    fn a_client_acts_on_its_own_escrows_and_reads_its_own_operations() {
        let s = McpSection::default();
        let own = operation_id("c", "e1");
        assert!(s.may_act_on("c", Some("esc_1"), Some(&own)).is_ok());
        assert!(s.may_act_on("c", None, Some(&own)).is_ok());
        let other = s.may_act_on("c", Some("esc_1"), Some("mcp:c2:e1")).unwrap_err();
        assert!(other.to_string().contains("was not created by client \"c\""), "{other}");
        assert!(s.may_act_on("c", Some("esc_1"), None).is_err(), "a creator not known");
        assert!(s.may_act_on("ab", Some("esc_1"), Some("mcp:abc:e1")).is_err(), "a prefix of a name is not the name");
        let named: McpSection = toml::from_str("other_escrows = [\"esc_1\"]\n").unwrap();
        named.check().unwrap();
        assert!(named.may_act_on("c", Some("esc_1"), None).is_ok());
        assert!(named.may_act_on("c", Some("esc_2"), None).is_err());
        let any: McpSection = toml::from_str("other_escrows = [\"*\"]\n").unwrap();
        any.check().unwrap();
        assert!(any.may_act_on("c", Some("esc_2"), Some("pipeline-1")).is_ok());
        let bad: McpSection = toml::from_str("other_escrows = [\"esc'1\"]\n").unwrap();
        assert!(bad.check().is_err());

        assert!(s.may_read("c", &own));
        assert!(!s.may_read("c", "mcp:c2:e1"));
        assert!(!s.may_read("c", "pipeline-1"));
        let all: McpSection = toml::from_str("read_all_operations = true\n").unwrap();
        assert!(all.may_read("c", "pipeline-1"));
    }
}
