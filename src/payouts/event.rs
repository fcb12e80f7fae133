//! The payout log's row (`purpleflea.payouts.log`), declared once, and the events an operation's row can
//! record. Everything that writes or reads the log (the engine, the status machine, reconcile, the MCP
//! tools) uses these types.

use chrono::{DateTime, NaiveDate, Utc};

use crate::money::Usd;
use crate::operation::OpKind;
use crate::tables::PAYOUT_LOG;
use crate::tables::row::{Text, table_row};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    Intent,
    Completed,
    Rejected,
    Unknown,
    /// The attempt provably did not run (a person's decision, `pfsync resolve never-ran`): the next attempt
    /// may be sent.
    NeverRan,
    /// A person decided the operation is not to be paid (`pfsync resolve abandoned`): final, nothing sent.
    Abandoned,
}

impl Text for Event {
    const WHAT: &'static str = "a payout log event (intent, completed, rejected, unknown, never_ran, abandoned)";
    fn as_str(self) -> &'static str {
        Event::as_str(self)
    }
    fn parse(s: &str) -> Option<Event> {
        Event::parse(s)
    }
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Intent => "intent",
            Event::Completed => "completed",
            Event::Rejected => "rejected",
            Event::Unknown => "unknown",
            Event::NeverRan => "never_ran",
            Event::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Some(match s {
            "intent" => Event::Intent,
            "completed" => Event::Completed,
            "rejected" => Event::Rejected,
            "unknown" => Event::Unknown,
            "never_ran" => Event::NeverRan,
            "abandoned" => Event::Abandoned,
            _ => return None,
        })
    }
}

table_row! {
    /// One row of the payout log: what the engine writes, what `history` reads back for the status machine,
    /// and what reconcile and the MCP server read. Every event of an operation carries the same agent,
    /// amount and reason (an id reused with other values is refused before it is logged).
    pub struct LogEvent: PAYOUT_LOG, key(operation_id, event, attempt) {
        pub operation_id: String,
        pub kind: OpKind,
        pub event: Event,
        pub attempt: i32,
        pub agent_id: Option<String>,
        pub counterparty_agent_id: Option<String>,
        pub amount_usd: Option<Usd>,
        pub reason: Option<String>,
        pub idempotency_key: String,
        pub tx_id: Option<String>,
        pub escrow_id: Option<String>,
        pub http_status: Option<i32>,
        pub error_code: Option<String>,
        pub error_message: Option<String>,
        pub run_id: String,
        pub recorded_at: DateTime<Utc>,
        /// Day (UTC) of `recorded_at`: the partition column.
        pub recorded_date: NaiveDate,
        /// The agent the operation debits, where the provider pays from an agent's balance.
        pub payer_agent_id: Option<String>,
        /// A person's event: who recorded it (`pfsync resolve --by`).
        pub decided_by: Option<String>,
        /// A person's event: why (`pfsync resolve --note`).
        pub note: Option<String>,
        /// An escrow create's intent: the tag sent in the escrow's description (`Provider::escrow_tag`).
        pub escrow_tag: Option<String>,
    }
}

impl LogEvent {
    /// An event with the columns every row has and no other: the caller sets the rest (`..LogEvent::new(..)`).
    pub fn new(
        operation_id: impl Into<String>,
        kind: OpKind,
        event: Event,
        attempt: i32,
        idempotency_key: impl Into<String>,
        run_id: impl Into<String>,
        recorded_at: DateTime<Utc>,
    ) -> LogEvent {
        LogEvent {
            operation_id: operation_id.into(),
            kind,
            event,
            attempt,
            agent_id: None,
            counterparty_agent_id: None,
            amount_usd: None,
            reason: None,
            idempotency_key: idempotency_key.into(),
            tx_id: None,
            escrow_id: None,
            http_status: None,
            error_code: None,
            error_message: None,
            run_id: run_id.into(),
            recorded_at,
            recorded_date: recorded_at.date_naive(),
            payer_agent_id: None,
            decided_by: None,
            note: None,
            escrow_tag: None,
        }
    }
}
