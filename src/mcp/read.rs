//! The read tools: balances and escrows as of the last sync (or from the provider now, `live: true`), a
//! request's status, and open findings. They change nothing.

use chrono::Utc;
use serde_json::{Value, json};

use super::args::{ArgError, Args};
use super::dispatch::Engine;
use super::error::McpError;
use super::policy;

impl Engine {
    pub(super) async fn check_balance(&self, args: &Args<'_>) -> Result<Value, McpError> {
        let agent = args.id("agent_id")?;
        if args.live()? {
            // A provider that answers a balance only to the agent's own key answers None for the others.
            let v = self.provider.wallet_now(&agent).await.map_err(McpError::ProviderAnswered)?;
            return Ok(now(v.ok_or(McpError::NoKeyHeld { agent })?));
        }
        if !self.table_exists("purpleflea.agents.wallets").await? {
            return Err(McpError::WalletsNotSynced);
        }
        let rows = self
            .rows(&format!(
                "SELECT w.agent_id, w.balance_usd, w.total_earned_usd, w.active_escrow_count, w.last_synced_at, \
                 (SELECT max(last_synced_at) FROM purpleflea.agents.wallets) AS wallets_synced_at \
                 FROM purpleflea.agents.wallets w WHERE w.agent_id = '{agent}'"
            ))
            .await?;
        let mut row = rows.into_iter().next().ok_or(McpError::NoSuchWallet(agent))?;
        row.insert("source".into(), json!("purpleflea.agents.wallets (as of the last sync)"));
        Ok(Value::Object(row))
    }

    /// `check_escrow_status` and `get_escrow`.
    pub(super) async fn escrow(&self, args: &Args<'_>) -> Result<Value, McpError> {
        let id = args.id("escrow_id")?;
        if args.live()? {
            return Ok(now(self.provider.escrow_now(&id).await.map_err(McpError::ProviderAnswered)?));
        }
        if !self.table_exists("purpleflea.agents.escrows").await? {
            return Err(McpError::EscrowsNotSynced);
        }
        let rows = self
            .rows(&format!(
                "SELECT escrow_id, status, buyer_agent_id, seller_agent_id, CAST(amount_usd AS VARCHAR) AS amount_usd, \
                 description, created_at, updated_at, tx_id, last_synced_at \
                 FROM purpleflea.agents.escrows WHERE escrow_id = '{id}'"
            ))
            .await?;
        let mut row = rows.into_iter().next().ok_or(McpError::NoSuchEscrow(id))?;
        row.insert("source".into(), json!("purpleflea.agents.escrows (as of the last sync)"));
        Ok(Value::Object(row))
    }

    /// A request's status: the client's own, by `request_id`; by `operation_id`, any operation only where
    /// the policy says `read_all_operations`.
    pub(super) async fn payout_status(&self, args: &Args<'_>) -> Result<Value, McpError> {
        let op = match (args.text("request_id")?, args.text("operation_id")?) {
            (Some(r), None) => {
                policy::check_request_id(&r).map_err(ArgError::from)?;
                policy::operation_id(&self.client, &r)
            }
            (None, Some(o)) => {
                Args::check_id("operation_id", &o)?;
                if !self.policy.may_read(&self.client, &o) {
                    return Err(McpError::NotYours { operation: o, client: self.client.clone() });
                }
                o
            }
            _ => return Err(ArgError::ExactlyOne("request_id and operation_id").into()),
        };
        self.status_of(&op).await?.to_json()
    }

    /// Open findings of the client's own operations (of every operation, and of none, where the policy says
    /// `read_all_operations`).
    pub(super) async fn open_findings(&self, args: &Args<'_>) -> Result<Value, McpError> {
        let limit = args.number("limit", 1..=200, "an integer 1..=200")?.unwrap_or(20);
        let class = args.text("class")?;
        if let Some(c) = &class
            && !c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(ArgError::Expected { name: "class", expected: "a finding class, e.g. amount_mismatch" }.into());
        }
        if !self.table_exists("purpleflea.payouts.open_findings").await? {
            return Ok(json!({"findings": [], "detail": "reconcile has not run yet: no findings recorded"}));
        }
        // A client's own findings: those of its operations (findings of no operation are the operator's).
        let mut filters: Vec<String> = class.map(|c| format!("class = '{c}'")).into_iter().collect();
        if !self.policy.read_all_operations {
            filters.push(format!("starts_with(operation_id, '{}')", policy::own_prefix(&self.client)));
        }
        let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let rows = self
            .rows(&format!(
                "SELECT class, operation_id, agent_id, detail, first_seen_at, \
                 CAST(expected_amount_usd AS VARCHAR) AS expected_amount_usd, \
                 CAST(actual_amount_usd AS VARCHAR) AS actual_amount_usd \
                 FROM purpleflea.payouts.open_findings {filter} ORDER BY first_seen_at LIMIT {limit}"
            ))
            .await?;
        Ok(json!({"findings": rows}))
    }
}

/// A provider's answer, marked as read now.
fn now(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("source".into(), json!("the payments API, now"));
        m.insert("read_at".into(), json!(Utc::now().to_rfc3339()));
    }
    v
}
