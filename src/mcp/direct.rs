//! `claim_faucet` and `mark_complete`: no operations of the engine (the platform pays a faucet claim, and
//! completing an escrow moves no money), so they act on the provider during the call, under the policy
//! (`execute` or `deny`), once per request id. Their first result is the audit row of the call that made
//! it; that they never act twice rests on what the provider declares (see `crate::provider::agent`).

use serde_json::{Map, Value, json};

use super::args::{ArgError, Args};
use super::audit::{CallDecision, CallRecord};
use super::dispatch::{Engine, Outcome};
use super::error::{McpError, Nothing};
use super::policy::Decision;
use super::request::{DirectRequest, EscrowRef};
use super::tool::{Kind, Tool};
use crate::http::IdempotencyKey;
use crate::money::Usd;
use crate::provider::FaucetAnswer;

/// What earlier calls with an operation id say about a direct tool's call.
#[derive(Debug)]
enum Prior {
    /// No call made it yet (none, or only ones that failed: those may be made again).
    Nothing,
    /// The id was used for another request; nothing more is done.
    OtherRequest,
    /// The first result.
    Done(Value),
}

impl Engine {
    /// A direct call, its request id known: replay, policy, allowlist, then the provider, once.
    pub(super) async fn direct(&self, tool: Tool, args: &Args<'_>, out: &mut Outcome) -> Result<Value, McpError> {
        let (request_id, op) = out.ids();
        let (request_id, op) = (request_id.to_string(), op.to_string());
        let req = DirectRequest::parse(tool, args, &self.client)?;
        let _one_at_a_time = self.money.lock().await;
        out.decision = CallDecision::Error;
        match self.prior(&op, tool, &req).await? {
            Prior::OtherRequest => {
                out.decision = CallDecision::Replayed;
                return Err(McpError::UsedForAnother(request_id));
            }
            Prior::Done(mut first) => {
                out.decision = CallDecision::Replayed;
                out.amount = amount_of(&first);
                if let Value::Object(m) = &mut first {
                    m.insert("replayed".into(), json!(true));
                }
                return Ok(first);
            }
            Prior::Nothing => {}
        }
        out.decision = CallDecision::Refused;
        match self.policy.decision(tool) {
            Decision::Execute => {}
            other => {
                out.decision = CallDecision::Deny;
                return Err(McpError::DirectDenied { tool, queued: other == Decision::Queue });
            }
        }
        self.can_act(&req)?;
        let agents = match &req {
            DirectRequest::Faucet { agent_id } => vec![agent_id.clone()],
            DirectRequest::Complete(escrow) => {
                let facts = self.escrow_facts(escrow).await.map_err(McpError::nothing_changed)?;
                out.amount = facts.amount;
                self.escrow_admission(escrow, &facts, Nothing::Changed).map_err(McpError::nothing_changed)?
            }
        };
        let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        self.policy
            .admit(&self.client, &agents, None)
            .map_err(|refusal| McpError::NotAdmitted { refusal, nothing: Nothing::Changed })?;
        out.decision = CallDecision::Execute;
        let v = self.act(&op, &req).await?;
        out.amount = amount_of(&v).or(out.amount);
        Ok(v)
    }

    /// Calls of a direct tool made under this operation id that acted (decision `execute`), oldest first.
    pub(super) async fn direct_calls(&self, op: &str) -> Result<Vec<CallRecord>, McpError> {
        let tools = Tool::names_of(Kind::Direct).iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        self.typed_rows(&format!(
            "SELECT * FROM purpleflea.ops.mcp_calls \
             WHERE operation_id = '{op}' AND decision = 'execute' AND tool IN ({tools}) ORDER BY started_at"
        ))
        .await
    }

    /// What earlier calls with this operation id did: the id names a queued payout or escrow action, or
    /// another direct request (refused); a call that succeeded (its result is the answer); or nothing yet.
    async fn prior(&self, op: &str, tool: Tool, req: &DirectRequest) -> Result<Prior, McpError> {
        if self.queued(op).await?.is_some() {
            return Ok(Prior::OtherRequest);
        }
        for call in self.direct_calls(op).await? {
            let same = call.tool == tool.name()
                && serde_json::from_str::<Map<String, Value>>(&call.arguments)
                    .ok()
                    .and_then(|a| DirectRequest::parse(tool, &Args::new(&a), &self.client).ok())
                    .is_some_and(|r| r == *req);
            if !same {
                return Ok(Prior::OtherRequest);
            }
            if !call.is_error {
                let first = serde_json::from_str::<Value>(&call.result.unwrap_or_default())
                    .map_err(|source| McpError::FirstResult { op: op.to_string(), source })?;
                return Ok(Prior::Done(first));
            }
        }
        Ok(Prior::Nothing)
    }

    /// What the provider declares decides whether the request can be made exactly once at all.
    fn can_act(&self, req: &DirectRequest) -> Result<(), McpError> {
        let caps = self.provider.capabilities();
        match req {
            DirectRequest::Faucet { .. } if !caps.faucet_once_per_agent => Err(McpError::NoOnceFaucet),
            DirectRequest::Complete(_) if !caps.escrow_completion => Err(McpError::NoCompleteStep),
            _ => Ok(()),
        }
    }

    /// Carry out a direct request at the provider (which [`Engine::can_act`] said it can).
    async fn act(&self, op: &str, req: &DirectRequest) -> Result<Value, McpError> {
        match req {
            DirectRequest::Faucet { agent_id } => self.claim_faucet(op, agent_id).await,
            DirectRequest::Complete(escrow) => self.mark_complete(op, escrow).await,
        }
    }

    async fn claim_faucet(&self, op: &str, agent_id: &str) -> Result<Value, McpError> {
        let key = IdempotencyKey::derive(&self.opts.namespace, "faucet", op).map_err(McpError::ClaimKey)?;
        match self.provider.claim_faucet(agent_id, &key).await {
            Ok(FaucetAnswer::Credited(c)) => Ok(json!({
                "operation_id": op,
                "status": "credited",
                "agent_id": c.agent_id,
                "amount_usd": c.amount.to_string(),
                "claim_id": c.claim_id,
                "detail": if c.replayed {
                    "credited by an earlier attempt of this request (the provider's record); nothing more now"
                } else {
                    "credited now; the provider credits an agent once"
                },
            })),
            Ok(FaucetAnswer::AlreadyClaimed { message }) => {
                Err(McpError::AlreadyClaimed { agent: agent_id.to_string(), message })
            }
            Err(source) => Err(McpError::ClaimFailed { agent: agent_id.to_string(), source }),
        }
    }

    async fn mark_complete(&self, op: &str, escrow: &EscrowRef) -> Result<Value, McpError> {
        let id = match (&escrow.escrow_id, &escrow.create_action_id) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => match self.completed_create(c).await {
                Ok(Some(e)) => e,
                Ok(None) => return Err(McpError::NoEscrowYet { create: c.clone(), state: "completed".into() }),
                Err(state) => return Err(McpError::NoEscrowYet { create: c.clone(), state }),
            },
            (None, None) => return Err(ArgError::ExactlyOne("escrow_id and create_request_id").into()),
        };
        match self.provider.mark_complete(&id).await {
            Ok(c) => Ok(json!({
                "operation_id": op,
                "escrow_id": c.escrow_id,
                "status": c.status,
                "counterparty_agent_id": c.counterparty_id,
                "completed_at": c.completed_at,
                "detail": if c.already {
                    "it was marked complete before this call; nothing more was done"
                } else {
                    "marked complete by its counterparty; the buyer can now release_escrow"
                },
            })),
            Err(source) => Err(McpError::NotMarkedComplete { id, source }),
        }
    }
}

/// The amount a direct tool's answer names (a faucet credit), exact.
fn amount_of(answer: &Value) -> Option<Usd> {
    answer.get("amount_usd").and_then(Value::as_str).and_then(|a| Usd::parse(a).ok())
}
