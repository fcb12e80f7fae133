//! The rows of the tables that request operations: `purpleflea.payouts.pending` and
//! `purpleflea.escrow.actions`. Upstream jobs write them (the payouts step reads them through `source.rs`,
//! converting what Spark may write); the MCP server writes and reads back its own requests with these types.

use chrono::{DateTime, Utc};

use crate::money::Usd;
use crate::tables::row::table_row;
use crate::tables::{ESCROW_ACTIONS, PENDING_PAYOUTS};

table_row! {
    /// One row of `purpleflea.payouts.pending`.
    pub struct PendingPayoutRow: PENDING_PAYOUTS, key(payout_id) {
        pub payout_id: String,
        pub agent_id: Option<String>,
        pub amount_usd: Option<Usd>,
        pub reason: Option<String>,
        pub requested_at: Option<DateTime<Utc>>,
        pub requested_by: Option<String>,
    }
}

table_row! {
    /// One row of `purpleflea.escrow.actions`. `action` stays text: an upstream row with an action this
    /// version does not know is refused by validation (`unknown_action`), not when it is read.
    pub struct EscrowActionRow: ESCROW_ACTIONS, key(action_id) {
        pub action_id: String,
        pub action: Option<String>,
        pub escrow_id: Option<String>,
        pub create_action_id: Option<String>,
        pub buyer_agent_id: Option<String>,
        pub seller_agent_id: Option<String>,
        pub amount_usd: Option<Usd>,
        pub description: Option<String>,
        pub metadata: Option<String>,
        pub reason: Option<String>,
        pub requested_at: Option<DateTime<Utc>>,
        pub requested_by: Option<String>,
    }
}
