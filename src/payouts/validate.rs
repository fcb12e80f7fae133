//! Validation of source rows, before any money moves. Pure functions: a raw row in, an operation or a
//! rejection with a machine-readable code out.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::money::{MoneyError, Usd};
use crate::operation::{Action, EscrowRef, Fingerprint, OpKind, Operation};
use crate::tables::row::Text;
use crate::text;

pub use crate::check::{MAX_ID_LEN, MAX_METADATA_BYTES, MAX_TEXT_LEN, check_id, check_text_chars};
/// A rejected row is stored as JSON, clipped to this many bytes.
pub const MAX_SOURCE_ROW_BYTES: usize = 4096;

/// Why a row was refused. The string form is what the rejects table's `code` column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    MissingId,
    InvalidId,
    InvalidAgentId,
    MissingAmount,
    InvalidAmount,
    MissingReason,
    FieldTooLong,
    ControlCharacter,
    DuplicateIdConflict,
    IdReused,
    UnknownAgent,
    UnknownAction,
    MissingEscrow,
    InvalidMetadata,
    SameBuyerAndSeller,
    UnknownCreateAction,
    AgentKeyNotHeld,
    InvalidTimeoutHours,
    InvalidRule,
}

impl RejectCode {
    pub const ALL: [RejectCode; 19] = [
        RejectCode::MissingId,
        RejectCode::InvalidId,
        RejectCode::InvalidAgentId,
        RejectCode::MissingAmount,
        RejectCode::InvalidAmount,
        RejectCode::MissingReason,
        RejectCode::FieldTooLong,
        RejectCode::ControlCharacter,
        RejectCode::DuplicateIdConflict,
        RejectCode::IdReused,
        RejectCode::UnknownAgent,
        RejectCode::UnknownAction,
        RejectCode::MissingEscrow,
        RejectCode::InvalidMetadata,
        RejectCode::SameBuyerAndSeller,
        RejectCode::UnknownCreateAction,
        RejectCode::AgentKeyNotHeld,
        RejectCode::InvalidTimeoutHours,
        RejectCode::InvalidRule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::MissingId => "missing_id",
            RejectCode::InvalidId => "invalid_id",
            RejectCode::InvalidAgentId => "invalid_agent_id",
            RejectCode::MissingAmount => "missing_amount",
            RejectCode::InvalidAmount => "invalid_amount",
            RejectCode::MissingReason => "missing_reason",
            RejectCode::FieldTooLong => "field_too_long",
            RejectCode::ControlCharacter => "control_character",
            RejectCode::DuplicateIdConflict => "duplicate_id_conflict",
            RejectCode::IdReused => "id_reused",
            RejectCode::UnknownAgent => "unknown_agent",
            RejectCode::UnknownAction => "unknown_action",
            RejectCode::MissingEscrow => "missing_escrow",
            RejectCode::InvalidMetadata => "invalid_metadata",
            RejectCode::SameBuyerAndSeller => "same_buyer_and_seller",
            RejectCode::UnknownCreateAction => "unknown_create_action",
            RejectCode::AgentKeyNotHeld => "agent_key_not_held",
            RejectCode::InvalidTimeoutHours => "invalid_timeout_hours",
            RejectCode::InvalidRule => "invalid_rule",
        }
    }
}

impl Text for RejectCode {
    const WHAT: &'static str = "a reject code";
    fn as_str(self) -> &'static str {
        RejectCode::as_str(self)
    }
    fn parse(s: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What a refused row was: an operation of a known kind, or an escrow-action row whose action could not
/// be read (`escrow_action` in the rejects table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Op(OpKind),
    EscrowAction,
    /// A metric rule (`purpleflea.escrow.rules`) that cannot be evaluated.
    EscrowRule,
}

impl RowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RowKind::Op(k) => k.as_str(),
            RowKind::EscrowAction => "escrow_action",
            RowKind::EscrowRule => "escrow_rule",
        }
    }
}

impl Text for RowKind {
    const WHAT: &'static str = "a rejected row's kind";
    fn as_str(self) -> &'static str {
        RowKind::as_str(self)
    }
    fn parse(s: &str) -> Option<RowKind> {
        match s {
            "escrow_action" => Some(RowKind::EscrowAction),
            "escrow_rule" => Some(RowKind::EscrowRule),
            other => OpKind::parse(other).map(RowKind::Op),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub operation_id: Option<String>,
    pub kind: RowKind,
    pub code: RejectCode,
    pub message: String,
    pub source_row: String,
}

/// An amount as read from a source column, already converted exactly (or refused) by the reader.
#[derive(Debug, Clone, PartialEq)]
pub enum RawAmount {
    Missing,
    Value(Result<Usd, MoneyError>),
}

/// A row of the pending-payouts source.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPayout {
    pub payout_id: Option<String>,
    pub agent_id: Option<String>,
    pub amount: RawAmount,
    pub reason: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub source_row: String,
}

/// A row of the escrow-actions source.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAction {
    pub action_id: Option<String>,
    pub action: Option<String>,
    pub escrow_id: Option<String>,
    pub create_action_id: Option<String>,
    pub buyer_agent_id: Option<String>,
    pub seller_agent_id: Option<String>,
    pub amount: RawAmount,
    pub description: Option<String>,
    pub metadata: Option<String>,
    pub reason: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub source_row: String,
}

/// `s` cut to `max` bytes, marked `...` where it was cut.
fn clip(s: &str, max: usize) -> String {
    let start = text::clip(s, max);
    if start.len() < s.len() { format!("{start}...") } else { s.to_string() }
}

struct RowCtx<'a> {
    id: Option<&'a str>,
    kind: RowKind,
    source_row: &'a str,
}

impl RowCtx<'_> {
    fn reject(&self, code: RejectCode, message: impl Into<String>) -> Reject {
        Reject {
            operation_id: self.id.map(|i| clip(i, MAX_ID_LEN * 2)),
            kind: self.kind,
            code,
            message: message.into(),
            source_row: clip_marked(self.source_row, MAX_SOURCE_ROW_BYTES),
        }
    }

    fn agent(&self, field: &str, value: &Option<String>) -> Result<String, Reject> {
        let v =
            value.as_deref().ok_or_else(|| self.reject(RejectCode::InvalidAgentId, format!("{field} is missing")))?;
        check_id(v).map_err(|e| self.reject(RejectCode::InvalidAgentId, format!("{field} {:?} {e}", clip(v, 64))))?;
        Ok(v.to_string())
    }

    fn amount(&self, raw: &RawAmount) -> Result<Usd, Reject> {
        match raw {
            RawAmount::Missing => Err(self.reject(RejectCode::MissingAmount, "amount_usd is missing")),
            RawAmount::Value(Err(e)) => Err(self.reject(RejectCode::InvalidAmount, format!("amount_usd: {e}"))),
            RawAmount::Value(Ok(u)) => {
                u.positive().map_err(|e| self.reject(RejectCode::InvalidAmount, format!("amount_usd: {e}")))
            }
        }
    }

    fn required_text(&self, field: &str, value: &Option<String>) -> Result<String, Reject> {
        self.text(field, value, true)?
            .ok_or_else(|| self.reject(RejectCode::MissingReason, format!("{field} is missing")))
    }

    fn text(&self, field: &str, value: &Option<String>, required: bool) -> Result<Option<String>, Reject> {
        match value.as_deref().map(str::trim) {
            None | Some("") if required => Err(self.reject(RejectCode::MissingReason, format!("{field} is missing"))),
            None | Some("") => Ok(None),
            Some(v) if v.chars().count() > MAX_TEXT_LEN => Err(self.reject(
                RejectCode::FieldTooLong,
                format!("{field} is {} characters long, more than {MAX_TEXT_LEN}", v.chars().count()),
            )),
            Some(v) => match check_text_chars(v) {
                Ok(()) => Ok(Some(v.to_string())),
                Err(e) => Err(self.reject(RejectCode::ControlCharacter, format!("{field} {e}"))),
            },
        }
    }
}

fn id_of<'a>(ctx_kind: RowKind, id: &'a Option<String>, source_row: &'a str, field: &str) -> Result<&'a str, Reject> {
    let ctx = RowCtx { id: id.as_deref(), kind: ctx_kind, source_row };
    let v = id.as_deref().ok_or_else(|| ctx.reject(RejectCode::MissingId, format!("{field} is missing")))?;
    check_id(v).map_err(|e| ctx.reject(RejectCode::InvalidId, format!("{field} {:?} {e}", clip(v, 64))))?;
    Ok(v)
}

pub fn validate_payout(raw: &RawPayout) -> Result<Operation, Reject> {
    let kind = RowKind::Op(OpKind::Payout);
    let id = id_of(kind, &raw.payout_id, &raw.source_row, "payout_id")?;
    let ctx = RowCtx { id: Some(id), kind, source_row: &raw.source_row };
    let agent = ctx.agent("agent_id", &raw.agent_id)?;
    let amount = ctx.amount(&raw.amount)?;
    let reason = ctx.required_text("reason", &raw.reason)?;
    Ok(Operation {
        id: id.to_string(),
        action: Action::Payout { agent, amount },
        reason,
        requested_at: raw.requested_at,
    })
}

pub fn validate_action(raw: &RawAction) -> Result<Operation, Reject> {
    let id = id_of(RowKind::EscrowAction, &raw.action_id, &raw.source_row, "action_id")?;
    // Only the three escrow kinds can come from an action row.
    #[derive(Clone, Copy, PartialEq)]
    enum Verb {
        Create,
        Release,
        Dispute,
    }
    let verb = match raw.action.as_deref().map(|a| a.trim().to_ascii_lowercase()).as_deref() {
        Some("create") => Verb::Create,
        Some("release") => Verb::Release,
        Some("dispute") => Verb::Dispute,
        other => {
            let ctx = RowCtx { id: Some(id), kind: RowKind::EscrowAction, source_row: &raw.source_row };
            return Err(ctx.reject(
                RejectCode::UnknownAction,
                format!("action {:?} is not create, release or dispute", other.map(|o| clip(o, 32))),
            ));
        }
    };
    let kind = match verb {
        Verb::Create => OpKind::EscrowCreate,
        Verb::Release => OpKind::EscrowRelease,
        Verb::Dispute => OpKind::EscrowDispute,
    };
    let ctx = RowCtx { id: Some(id), kind: RowKind::Op(kind), source_row: &raw.source_row };
    let reason = ctx.required_text("reason", &raw.reason)?;
    let action = match verb {
        Verb::Create => {
            let buyer = ctx.agent("buyer_agent_id", &raw.buyer_agent_id)?;
            let seller = ctx.agent("seller_agent_id", &raw.seller_agent_id)?;
            if buyer == seller {
                return Err(
                    ctx.reject(RejectCode::SameBuyerAndSeller, "buyer_agent_id and seller_agent_id are the same")
                );
            }
            let amount = ctx.amount(&raw.amount)?;
            let description = ctx.text("description", &raw.description, false)?.unwrap_or_else(|| reason.clone());
            let metadata = match raw.metadata.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                None => None,
                Some(m) if m.len() > MAX_METADATA_BYTES => {
                    return Err(ctx.reject(
                        RejectCode::InvalidMetadata,
                        format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
                    ));
                }
                Some(m) => match serde_json::from_str::<Value>(m) {
                    Ok(v @ Value::Object(_)) => Some(v),
                    _ => return Err(ctx.reject(RejectCode::InvalidMetadata, "metadata is not a JSON object")),
                },
            };
            Action::EscrowCreate { buyer, seller, amount, description, metadata }
        }
        Verb::Release | Verb::Dispute => {
            let escrow = match (raw.escrow_id.as_deref(), raw.create_action_id.as_deref()) {
                (Some(e), _) => {
                    check_id(e)
                        .map_err(|m| ctx.reject(RejectCode::InvalidId, format!("escrow_id {:?} {m}", clip(e, 64))))?;
                    EscrowRef::Id(e.to_string())
                }
                (None, Some(c)) => {
                    check_id(c).map_err(|m| {
                        ctx.reject(RejectCode::InvalidId, format!("create_action_id {:?} {m}", clip(c, 64)))
                    })?;
                    EscrowRef::CreatedBy(c.to_string())
                }
                (None, None) => {
                    return Err(ctx.reject(RejectCode::MissingEscrow, "escrow_id or create_action_id is required"));
                }
            };
            if verb == Verb::Release { Action::Release { escrow } } else { Action::Dispute { escrow } }
        }
    };
    Ok(Operation { id: id.to_string(), action, reason, requested_at: raw.requested_at })
}

/// Checks across rows: an id twice in one batch with different values (all copies refused; identical
/// copies count once), an id the log already holds with other values, an agent the wallets table does not
/// know (when the table is there to ask).
pub fn check_batch(
    ops: Vec<Operation>,
    logged: &HashMap<String, Fingerprint>,
    known_agents: Option<&HashSet<String>>,
    source_rows: &HashMap<String, String>,
) -> (Vec<Operation>, Vec<Reject>) {
    let mut by_id: HashMap<String, Vec<Operation>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for op in ops {
        if !by_id.contains_key(&op.id) {
            order.push(op.id.clone());
        }
        by_id.entry(op.id.clone()).or_default().push(op);
    }
    let mut keep = Vec::new();
    let mut rejects = Vec::new();
    for id in order {
        let copies = by_id.remove(&id).unwrap_or_default();
        let Some(first) = copies.first().cloned() else { continue };
        let row = source_rows.get(&id).cloned().unwrap_or_default();
        let reject = |code, message: String| Reject {
            operation_id: Some(id.clone()),
            kind: RowKind::Op(first.kind()),
            code,
            message,
            source_row: clip_marked(&row, MAX_SOURCE_ROW_BYTES),
        };
        if copies.iter().any(|c| c.fingerprint() != first.fingerprint()) {
            rejects.push(reject(
                RejectCode::DuplicateIdConflict,
                format!("{} rows share this id with different values; none is executed", copies.len()),
            ));
            continue;
        }
        if let Some(f) = logged.get(&id)
            && *f != first.fingerprint()
        {
            rejects.push(reject(
                RejectCode::IdReused,
                format!(
                    "this id was already used for {} {} to {}: an id cannot be reused with other values",
                    f.kind.as_str(),
                    f.amount.map(|a| a.to_string()).unwrap_or_default(),
                    f.agent_id.as_deref().unwrap_or("-")
                ),
            ));
            continue;
        }
        if let Some(agents) = known_agents {
            let unknown = [first.agent_id(), first.counterparty()].into_iter().flatten().find(|a| !agents.contains(*a));
            if let Some(a) = unknown {
                rejects
                    .push(reject(RejectCode::UnknownAgent, format!("agent {a:?} is not in purpleflea.agents.wallets")));
                continue;
            }
        }
        keep.push(first);
    }
    // A release or dispute that names its create by action id needs that create: valid in this batch or
    // already in the log. Otherwise it would wait forever, so it is refused with the reason instead.
    let creates: HashSet<String> = keep
        .iter()
        .filter(|o| o.kind() == OpKind::EscrowCreate)
        .map(|o| &o.id)
        .chain(logged.iter().filter(|(_, f)| f.kind == OpKind::EscrowCreate).map(|(id, _)| id))
        .cloned()
        .collect();
    let (keep, orphans): (Vec<Operation>, Vec<Operation>) = keep.into_iter().partition(|o| match o.escrow() {
        Some(EscrowRef::CreatedBy(c)) => creates.contains(c),
        _ => true,
    });
    for o in orphans {
        let c = match o.escrow() {
            Some(EscrowRef::CreatedBy(c)) => clip(c, 64),
            _ => String::new(),
        };
        rejects.push(Reject {
            operation_id: Some(o.id.clone()),
            kind: RowKind::Op(o.kind()),
            code: RejectCode::UnknownCreateAction,
            message: format!(
                "create_action_id {c:?} is no valid escrow create in purpleflea.escrow.actions or the payout log"
            ),
            source_row: clip_marked(
                source_rows.get(&o.id).map(String::as_str).unwrap_or_default(),
                MAX_SOURCE_ROW_BYTES,
            ),
        });
    }
    (keep, rejects)
}

/// `s` within `max` bytes: as it is when it fits, else its start, `...` and a digest of the whole
/// (`(sha256:` and 16 hex digits`)`).
pub fn clip_marked(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(s.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mark = format!("...(sha256:{hex})");
    format!("{}{mark}", crate::text::clip(s, max.saturating_sub(mark.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reject_code_is_listed_and_reads_back() {
        // Exhaustive: a new code fails to compile here until it is listed in ALL too.
        let listed = |c: RejectCode| match c {
            RejectCode::MissingId
            | RejectCode::InvalidId
            | RejectCode::InvalidAgentId
            | RejectCode::MissingAmount
            | RejectCode::InvalidAmount
            | RejectCode::MissingReason
            | RejectCode::FieldTooLong
            | RejectCode::ControlCharacter
            | RejectCode::DuplicateIdConflict
            | RejectCode::IdReused
            | RejectCode::UnknownAgent
            | RejectCode::UnknownAction
            | RejectCode::MissingEscrow
            | RejectCode::InvalidMetadata
            | RejectCode::SameBuyerAndSeller
            | RejectCode::UnknownCreateAction
            | RejectCode::AgentKeyNotHeld
            | RejectCode::InvalidTimeoutHours
            | RejectCode::InvalidRule => RejectCode::ALL.contains(&c),
        };
        for c in RejectCode::ALL {
            assert!(listed(c));
            assert_eq!(<RejectCode as Text>::parse(c.as_str()), Some(c));
        }
        for k in [RowKind::EscrowAction, RowKind::EscrowRule].into_iter().chain(OpKind::ALL.map(RowKind::Op)) {
            assert_eq!(<RowKind as Text>::parse(k.as_str()), Some(k));
        }
    }

    fn payout(id: &str, agent: &str, amount: &str, reason: &str) -> RawPayout {
        RawPayout {
            payout_id: Some(id.into()),
            agent_id: Some(agent.into()),
            amount: RawAmount::Value(Usd::parse(amount)),
            reason: Some(reason.into()),
            requested_at: None,
            source_row: "{}".into(),
        }
    }

    fn code(r: Result<Operation, Reject>) -> &'static str {
        r.unwrap_err().code.as_str()
    }

    #[test]
    fn every_bad_payout_class_has_its_code() {
        assert!(validate_payout(&payout("p1", "agent-1", "1.00", "r")).is_ok());
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "-1", "r"))), "invalid_amount");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "0", "r"))), "invalid_amount");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "0.001", "r"))), "invalid_amount");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "NaN", "r"))), "invalid_amount");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "1e300", "r"))), "invalid_amount");
        assert_eq!(code(validate_payout(&payout("", "agent-1", "1", "r"))), "invalid_id");
        assert_eq!(code(validate_payout(&payout("p 1", "agent-1", "1", "r"))), "invalid_id");
        assert_eq!(code(validate_payout(&payout("p1", "agent-00\u{430}", "1", "r"))), "invalid_agent_id");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1; DROP TABLE x", "1", "r"))), "invalid_agent_id");
        assert_eq!(code(validate_payout(&payout(&"x".repeat(129), "agent-1", "1", "r"))), "invalid_id");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "1", ""))), "missing_reason");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "1", &"r".repeat(10_000_000)))), "field_too_long");
        assert_eq!(code(validate_payout(&payout("p1", "agent-1", "1", "task\u{0}9"))), "control_character");
        assert!(validate_payout(&payout("p1", "agent-1", "1", "line one\nline two\tend")).is_ok());
        let mut missing = payout("p1", "agent-1", "1", "r");
        missing.amount = RawAmount::Missing;
        assert_eq!(code(validate_payout(&missing)), "missing_amount");
        missing.payout_id = None;
        assert_eq!(code(validate_payout(&missing)), "missing_id");
    }

    #[test]
    fn a_rejection_never_carries_megabytes() {
        let mut p = payout("p1", "agent-1", "1", &"r".repeat(10_000_000));
        p.source_row = "x".repeat(10_000_000);
        let r = validate_payout(&p).unwrap_err();
        assert!(r.source_row.len() <= MAX_SOURCE_ROW_BYTES + 3 && r.message.len() < 200);
    }

    #[test]
    fn escrow_actions_validate_by_action() {
        let base = RawAction {
            action_id: Some("a1".into()),
            action: Some("create".into()),
            escrow_id: None,
            create_action_id: None,
            buyer_agent_id: Some("buyer".into()),
            seller_agent_id: Some("seller".into()),
            amount: RawAmount::Value(Usd::parse("50")),
            description: Some("task".into()),
            metadata: Some(r#"{"task_id":"t1"}"#.into()),
            reason: Some("bounty".into()),
            requested_at: None,
            source_row: "{}".into(),
        };
        let op = validate_action(&base).unwrap();
        assert_eq!((op.kind(), op.counterparty()), (OpKind::EscrowCreate, Some("seller")));
        assert_eq!(
            code(validate_action(&RawAction { metadata: Some("[1]".into()), ..base.clone() })),
            "invalid_metadata"
        );
        assert_eq!(
            code(validate_action(&RawAction { seller_agent_id: Some("buyer".into()), ..base.clone() })),
            "same_buyer_and_seller"
        );
        assert_eq!(
            code(validate_action(&RawAction { action: Some("refund".into()), ..base.clone() })),
            "unknown_action"
        );
        let release = RawAction { action: Some("release".into()), create_action_id: Some("a1".into()), ..base.clone() };
        assert_eq!(validate_action(&release).unwrap().escrow(), Some(&EscrowRef::CreatedBy("a1".into())));
        let orphan = RawAction { action: Some("dispute".into()), ..base };
        assert_eq!(code(validate_action(&orphan)), "missing_escrow");
    }

    #[test]
    fn batch_checks_duplicates_reuse_and_agents() {
        let a = validate_payout(&payout("p1", "agent-1", "1.00", "r")).unwrap();
        let same = a.clone();
        let other = validate_payout(&payout("p2", "agent-2", "2.00", "r")).unwrap();
        let conflict1 = validate_payout(&payout("p3", "agent-1", "1.00", "r")).unwrap();
        let conflict2 = validate_payout(&payout("p3", "agent-1", "9.00", "r")).unwrap();
        let reused = validate_payout(&payout("p4", "agent-1", "5.00", "r")).unwrap();
        let stranger = validate_payout(&payout("p5", "nobody", "1.00", "r")).unwrap();
        let mut logged = HashMap::new();
        logged.insert("p4".to_string(), validate_payout(&payout("p4", "agent-1", "4.00", "r")).unwrap().fingerprint());
        logged.insert("p1".to_string(), a.fingerprint());
        let agents: HashSet<String> = ["agent-1", "agent-2"].iter().map(|s| s.to_string()).collect();
        let (keep, rejects) = check_batch(
            vec![a, same, other, conflict1, conflict2, reused, stranger],
            &logged,
            Some(&agents),
            &HashMap::new(),
        );
        let kept: Vec<&str> = keep.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(kept, ["p1", "p2"]);
        let codes: Vec<(&str, &str)> =
            rejects.iter().map(|r| (r.operation_id.as_deref().unwrap(), r.code.as_str())).collect();
        assert_eq!(codes, [("p3", "duplicate_id_conflict"), ("p4", "id_reused"), ("p5", "unknown_agent")]);
    }

    #[test]
    fn a_release_needs_its_create_in_the_batch_or_the_log() {
        let action = |id: &str, action: &str, create: Option<&str>| RawAction {
            action_id: Some(id.into()),
            action: Some(action.into()),
            escrow_id: None,
            create_action_id: create.map(Into::into),
            buyer_agent_id: Some("buyer".into()),
            seller_agent_id: Some("seller".into()),
            amount: RawAmount::Value(Usd::parse("5")),
            description: None,
            metadata: None,
            reason: Some("r".into()),
            requested_at: None,
            source_row: "{}".into(),
        };
        let ops: Vec<Operation> = [
            action("c1", "create", None),
            action("r1", "release", Some("c1")),
            action("r2", "release", Some("c-old")),
            action("d3", "dispute", Some("c-nowhere")),
        ]
        .iter()
        .map(|a| validate_action(a).unwrap())
        .collect();
        let mut logged = HashMap::new();
        logged.insert("c-old".to_string(), validate_action(&action("c-old", "create", None)).unwrap().fingerprint());
        let (keep, rejects) = check_batch(ops, &logged, None, &HashMap::new());
        let kept: Vec<&str> = keep.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(kept, ["c1", "r1", "r2"]);
        let codes: Vec<(&str, &str)> =
            rejects.iter().map(|r| (r.operation_id.as_deref().unwrap(), r.code.as_str())).collect();
        assert_eq!(codes, [("d3", "unknown_create_action")]);
    }

    #[test]
    fn a_clipped_text_keeps_a_digest_of_what_was_cut() {
        assert_eq!(clip_marked("short", 64), "short");
        let (a, b) = ("x".repeat(100) + "a", "x".repeat(100) + "b");
        let (ca, cb) = (clip_marked(&a, 64), clip_marked(&b, 64));
        assert!(ca.len() <= 64 && cb.len() <= 64, "{ca}");
        assert_ne!(ca, cb, "two rows that differ only past the clip are two versions");
        assert!(ca.starts_with("xxx") && ca.contains("...(sha256:"), "{ca}");
        // Never cut inside a character.
        assert!(clip_marked(&"é".repeat(100), 64).len() <= 64);
    }
}
