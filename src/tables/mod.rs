//! The tables pfsync owns: names and locations, declared schemas, and opening/creating them.

pub mod arrays;
pub mod ddl;
pub mod name;
pub mod position;
pub mod read_only;
pub mod row;
pub mod spec;
pub mod store;
#[cfg(feature = "unity")]
pub mod unity;

pub use name::{TableName, Warehouse, location_url};
pub use spec::{
    ALL, CLASSIFICATION, ColumnSpec, ColumnType, DAILY_TOTALS, ESCROW_ACTIONS, ESCROW_RULES, ESCROW_TERMS, ESCROWS,
    IMPLIED_BALANCES, LEDGER_ENTRIES, LEDGER_GAPS, MCP_CALLS, PAYOUT_LOG, PENDING_PAYOUTS, RECONCILIATION, REJECTS,
    RULE_SIGHTINGS, RUNS, TRANSACTIONS, TableSpec, WALLETS, Writer,
};
pub use store::{
    CommitInfo, TableError, any_table_exists, open_existing, open_or_create, open_version, register_location,
    register_tables, sql_context, sql_context_of, version_of,
};
