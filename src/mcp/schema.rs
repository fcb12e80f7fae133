//! What `tools/list` answers: each tool's JSON schema, its description (the text an LLM acts on) and its
//! annotations, generated from [`Tool::ALL`]; and the server's instructions.

use std::sync::Arc;

use rmcp::model::{Tool as Definition, ToolAnnotations};
use serde_json::{Map, Value, json};

use super::tool::{Kind, Tool};

pub const INSTRUCTIONS: &str = "Purple Flea payments through pfsync. Read tools (check_balance, check_escrow_status, \
get_escrow, payout_status, open_findings) answer from the lakehouse copy, with the time of the last sync (live: true \
asks the provider now). Money tools (request_payout, create_escrow, release_escrow, dispute_escrow, claim_faucet, \
mark_complete) need a request_id you choose: calling again with the same request_id returns the first result and \
never moves money twice, so retry with the SAME id after a timeout. An escrow's life: create_escrow (buyer), \
mark_complete (seller, when the task is done; live provider only), release_escrow (pays the seller). \
A refusal (policy, limits, allowlist) comes back as a tool error whose text says why; nothing moved.";

fn schema(properties: Value, required: &[&str]) -> Arc<Map<String, Value>> {
    let v = json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn definition(tool: Tool, description: &'static str, properties: Value, required: &[&str]) -> Definition {
    let money = tool.kind() != Kind::Read;
    let mut t = Definition::new(tool.name(), description, schema(properties, required));
    let mut a = ToolAnnotations::default();
    a.read_only_hint = Some(!money);
    a.destructive_hint = Some(money);
    a.idempotent_hint = Some(true);
    a.open_world_hint = Some(money);
    t.annotations = Some(a);
    t
}

const LIVE: &str = "true: ask the payments provider now instead of the last sync (with the live provider, a balance \
only of an agent whose key pfsync holds). Slower; use it when the synced copy may be stale.";

const REQUEST_ID: &str = "Your id for this request, 1-64 characters of letters, digits, '.', '_' and '-'. Calling \
again with the same request_id returns the first result and never moves money twice: reuse it when you retry.";

/// Every tool, with its JSON schema.
pub fn definitions() -> Vec<Definition> {
    Tool::ALL.into_iter().map(Tool::definition).collect()
}

impl Tool {
    /// The tool's schema, description and annotations.
    pub fn definition(self) -> Definition {
        let agent = |d: &str| json!({"type": "string", "description": d, "maxLength": 128});
        let request_id = json!({"type": "string", "description": REQUEST_ID, "maxLength": 64});
        let create_request_id =
            json!({"type": "string", "maxLength": 64, "description": "Or: the request_id of your create_escrow call"});
        match self {
            Tool::CheckBalance => definition(
                self,
                "An agent's Purple Flea wallet as of the last sync (the purpleflea.agents.wallets table): balance_usd, \
                 total_earned_usd, active_escrow_count, and last_synced_at (when pfsync last wrote the row) with \
                 wallets_synced_at (the newest sync of the table). Read-only.",
                json!({
                    "agent_id": agent("The agent whose balance to read, e.g. agent-000001"),
                    "live": {"type": "boolean", "default": false, "description": LIVE}
                }),
                &["agent_id"],
            ),
            Tool::CheckEscrowStatus => definition(
                self,
                "An escrow's status (funded, released, refunded; live also completed, disputed), amount and parties as \
                 of the last sync (the purpleflea.agents.escrows table), with last_synced_at. Read-only.",
                json!({"escrow_id": agent("The escrow id, as create_escrow returned it"), "live": {"type": "boolean", "default": false, "description": LIVE}}),
                &["escrow_id"],
            ),
            Tool::GetEscrow => definition(
                self,
                "The same as check_escrow_status (the name Purple Flea's escrow server uses): an escrow as of the last \
                 sync. Read-only.",
                json!({"escrow_id": agent("The escrow id"), "live": {"type": "boolean", "default": false, "description": LIVE}}),
                &["escrow_id"],
            ),
            Tool::PayoutStatus => definition(
                self,
                "The status of a money request: queued (waiting for the scheduled job), in_flight, completed (with \
                 tx_id or escrow_id), rejected (with error_code and error_message) or unknown (being resolved; never \
                 paid twice). Give the request_id you used, or an operation_id from the payout log. Read-only.",
                json!({
                    "request_id": {"type": "string", "description": "The request_id of your earlier money tool call", "maxLength": 64},
                    "operation_id": agent("Or: any operation id of purpleflea.payouts.log")
                }),
                &[],
            ),
            Tool::OpenFindings => definition(
                self,
                "Open reconciliation findings (the purpleflea.payouts.open_findings view): money pfsync logged that the \
                 provider does not show the same way, balances that do not add up. Read-only.",
                json!({
                    "class": {"type": "string", "description": "Only this class, e.g. amount_mismatch, stale_unknown", "maxLength": 64},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20, "description": "At most this many findings"}
                }),
                &[],
            ),
            Tool::RequestPayout => definition(
                self,
                "Pay an agent from the treasury, exactly once per request_id. Depending on the server's policy it is \
                 paid now (returns status completed and tx_id), queued for the scheduled payout job (returns status \
                 queued), or refused. Limits per call and per day, and an allowlist of agents, apply before anything \
                 moves; a refusal says why.",
                json!({
                    "request_id": request_id,
                    "agent_id": agent("The agent to pay"),
                    "amount_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Amount in USD, at most 2 decimals, e.g. 12.50"},
                    "reason": {"type": "string", "maxLength": 4096, "description": "Why the agent is paid (recorded with the payout)"}
                }),
                &["request_id", "agent_id", "amount_usd", "reason"],
            ),
            Tool::CreateEscrow => definition(
                self,
                "Lock amount_usd from buyer_agent_id in an escrow for counterparty_agent_id (the seller), exactly once \
                 per request_id. Returns the escrow_id when the policy runs it now, or status queued. Release it with \
                 release_escrow when the work is done, or dispute_escrow to return the money to the buyer.",
                json!({
                    "request_id": request_id,
                    "buyer_agent_id": agent("The agent whose funds are locked"),
                    "counterparty_agent_id": agent("The agent paid on release (the seller)"),
                    "amount_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Amount in USD, at most 2 decimals"},
                    "description": {"type": "string", "maxLength": 4096, "description": "The task or agreement"},
                    "timeout_hours": {"type": "integer", "minimum": 1, "maximum": 720, "description": "Hours until the escrow may be refunded (live provider)"}
                }),
                &["request_id", "buyer_agent_id", "counterparty_agent_id", "amount_usd", "description"],
            ),
            Tool::ReleaseEscrow => definition(
                self,
                "Release a funded escrow to its seller, exactly once per request_id: calling it again with the same \
                 request_id returns the first result and releases nothing more. Give escrow_id, or create_request_id \
                 (the request_id of the create_escrow call) when the escrow id is not known yet.",
                json!({
                    "request_id": request_id,
                    "escrow_id": agent("The escrow to release"),
                    "create_request_id": create_request_id,
                    "reason": {"type": "string", "maxLength": 4096, "description": "Why (recorded with the release)"}
                }),
                &["request_id"],
            ),
            Tool::DisputeEscrow => definition(
                self,
                "Dispute a funded escrow (the seed's provider refunds the buyer; the live one freezes it for review), \
                 exactly once per request_id. Give escrow_id, or create_request_id.",
                json!({
                    "request_id": request_id,
                    "escrow_id": agent("The escrow to dispute"),
                    "create_request_id": create_request_id,
                    "reason": {"type": "string", "maxLength": 4096, "description": "What went wrong"}
                }),
                &["request_id", "reason"],
            ),
            Tool::MarkComplete => definition(
                self,
                "The seller's side of an escrow: mark the task done (funded -> completed), so the buyer can release it. \
                 Acts as the escrow's counterparty (seller), whose key pfsync must hold; exactly once per request_id \
                 (calling again returns the first result). Only the live provider has this step: the seed's API \
                 releases a funded escrow directly (use release_escrow). Give escrow_id, or create_request_id.",
                json!({
                    "request_id": request_id,
                    "escrow_id": agent("The escrow whose task is done (esc_... on the live provider)"),
                    "create_request_id": create_request_id
                }),
                &["request_id"],
            ),
            Tool::ClaimFaucet => definition(
                self,
                "Claim the Purple Flea faucet's free startup funds for an agent (the provider credits each agent once: \
                 $1 at the live faucet, only for agents without deposits; registration usually claims it already). \
                 Exactly once per request_id: calling again returns the first result. Returns status credited with \
                 amount_usd and claim_id; a claim the provider refuses (already claimed) is a tool error saying so. \
                 Give agent_id, or agent_casino_id (the same id, as Purple Flea's faucet names it).",
                json!({
                    "request_id": request_id,
                    "agent_id": agent("The agent to credit, e.g. agent-000001 or ag_0123456789ab"),
                    "agent_casino_id": agent("Or: the same agent id, under the name Purple Flea's faucet uses")
                }),
                &["request_id"],
            ),
        }
    }

    /// The arguments the tool's schema declares.
    pub fn arguments(self) -> Vec<String> {
        let def = self.definition();
        def.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_list_is_the_tool_enum_and_every_governed_tool_takes_a_request_id() {
        let defs = definitions();
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_ref()).collect();
        assert_eq!(names, Tool::ALL.iter().map(|t| t.name()).collect::<Vec<_>>());
        for t in Tool::ALL {
            let def = t.definition();
            let required: Vec<&str> =
                def.input_schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(required.iter().all(|r| t.arguments().iter().any(|a| a == r)), "{t}: {required:?}");
            assert_eq!(t.governed(), required.contains(&"request_id"), "{t}");
            assert_eq!(def.annotations.unwrap().read_only_hint, Some(!t.governed()), "{t}");
        }
    }
}
