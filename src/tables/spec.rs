//! Every table pfsync owns, declared once: columns with types, nullability and comments, partitioning,
//! the table comment and its properties. The Arrow schema, the Delta schema and (tested against them) the
//! DDL in `sql/` all come from these declarations.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType as DeltaType, StructField};

use super::name::TableName;
use crate::micros::{MICROS_PRECISION, MICROS_SCALE};
use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE};

/// The column types pfsync uses, with their Spark SQL, Delta and Arrow spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    /// The seed's published wallet columns, and metric thresholds (never money).
    Double,
    Int,
    Long,
    Boolean,
    /// UTC instant, microseconds.
    Timestamp,
    Date,
    /// Money: DECIMAL(18,2).
    Money,
    /// Provider-reported money in micro-dollars: DECIMAL(18,6) (the live provider's 1% escrow commission
    /// and its balances carry six decimals; see `micros.rs`).
    Micros,
}

impl ColumnType {
    pub fn arrow(self) -> ArrowType {
        match self {
            ColumnType::String => ArrowType::Utf8,
            ColumnType::Double => ArrowType::Float64,
            ColumnType::Int => ArrowType::Int32,
            ColumnType::Long => ArrowType::Int64,
            ColumnType::Boolean => ArrowType::Boolean,
            ColumnType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => ArrowType::Date32,
            ColumnType::Money => ArrowType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
            ColumnType::Micros => ArrowType::Decimal128(MICROS_PRECISION, MICROS_SCALE),
        }
    }

    pub fn delta(self) -> DeltaType {
        match self {
            ColumnType::String => DeltaType::STRING,
            ColumnType::Double => DeltaType::DOUBLE,
            ColumnType::Int => DeltaType::INTEGER,
            ColumnType::Long => DeltaType::LONG,
            ColumnType::Boolean => DeltaType::BOOLEAN,
            ColumnType::Timestamp => DeltaType::TIMESTAMP,
            ColumnType::Date => DeltaType::DATE,
            ColumnType::Money => {
                DeltaType::decimal(DECIMAL_PRECISION, DECIMAL_SCALE as u8).unwrap_or(DeltaType::STRING)
            }
            ColumnType::Micros => DeltaType::decimal(MICROS_PRECISION, MICROS_SCALE as u8).unwrap_or(DeltaType::STRING),
        }
    }

    /// As written in Databricks SQL DDL.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::String => "STRING",
            ColumnType::Double => "DOUBLE",
            ColumnType::Int => "INT",
            ColumnType::Long => "BIGINT",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Money => "DECIMAL(18,2)",
            ColumnType::Micros => "DECIMAL(18,6)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: ColumnType,
    pub nullable: bool,
    pub comment: &'static str,
}

const fn col(name: &'static str, kind: ColumnType, nullable: bool, comment: &'static str) -> ColumnSpec {
    ColumnSpec { name, kind, nullable, comment }
}

/// Who writes a table. It decides how pfsync opens it, checks its schema and asks for access to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// pfsync writes it: created from the spec when absent, its schema must equal the spec's, and the job
    /// needs MODIFY on it (and READ_WRITE credentials).
    Pfsync,
    /// Upstream jobs write it (as Spark writes: every column nullable, extra columns of their own); pfsync
    /// only reads it, never creates it at run time (`pfsync init` may), and checks only the columns it reads:
    /// `requires` must be there, `reads` may be missing (read as null); each one present must have a type
    /// the source reader converts.
    Upstream { requires: &'static [&'static str], reads: &'static [&'static str] },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// Three-level name.
    pub name: &'static str,
    pub writer: Writer,
    pub comment: &'static str,
    pub columns: &'static [ColumnSpec],
    pub partition_columns: &'static [&'static str],
    pub properties: &'static [(&'static str, &'static str)],
}

/// Field metadata key under which Delta (and Spark) keep a column comment.
pub const COMMENT_KEY: &str = "comment";

impl TableSpec {
    pub fn table_name(&self) -> TableName {
        // Every spec below is a literal three-level name; the test `every_spec_is_consistent` proves it.
        TableName::parse(self.name).unwrap_or_else(|_| TableName {
            catalog: "invalid".into(),
            schema: "invalid".into(),
            table: self.name.replace('.', "_"),
        })
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                Field::new(c.name, c.kind.arrow(), c.nullable)
                    .with_metadata(HashMap::from([(COMMENT_KEY.to_string(), c.comment.to_string())]))
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    pub fn delta_columns(&self) -> Vec<StructField> {
        self.columns
            .iter()
            .map(|c| StructField::new(c.name, c.kind.delta(), c.nullable).with_metadata([(COMMENT_KEY, c.comment)]))
            .collect()
    }

    /// Whether pfsync writes this table (as opposed to only reading what upstream jobs write).
    pub const fn pfsync_writes(&self) -> bool {
        matches!(self.writer, Writer::Pfsync)
    }

    /// For a table upstream jobs write, the columns pfsync cannot read it without (empty for pfsync's own
    /// tables, whose whole schema is checked).
    pub const fn required_columns(&self) -> &'static [&'static str] {
        match self.writer {
            Writer::Pfsync => &[],
            Writer::Upstream { requires, .. } => requires,
        }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn property(&self, key: &str) -> Option<&'static str> {
        self.properties.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

use ColumnType::*;

/// `purpleflea.agents.wallets`: exactly the seed's published table (column names, types, comments, table
/// comment, change data feed). `balance_usd` and `total_earned_usd` are DOUBLE because the seed says so;
/// pfsync computes nothing in them.
pub const WALLETS: TableSpec = TableSpec {
    name: "purpleflea.agents.wallets",
    writer: Writer::Pfsync,
    comment: "Purple Flea agent wallets synced from purpleflea.com/api",
    columns: &[
        col("agent_id", String, false, "Purple Flea agent identifier (NOT NULL, PK)"),
        col("wallet_address", String, true, "On-chain wallet address"),
        col("balance_usd", Double, true, "Current USD-equivalent balance (refreshed hourly)"),
        col("active_escrow_count", Int, true, "Number of open escrow contracts"),
        col("total_earned_usd", Double, true, "Lifetime earnings through Purple Flea"),
        col("referral_code", String, true, "Agent referral code for 15% fee sharing"),
        col("registered_at", Timestamp, true, "Agent registration timestamp"),
        col("last_synced_at", Timestamp, true, "Last balance sync from Purple Flea API"),
    ],
    partition_columns: &[],
    properties: &[("delta.enableChangeDataFeed", "true")],
};

/// `purpleflea.agents.escrows`: one row per escrow, its current state, upserted by `escrow_id`.
pub const ESCROWS: TableSpec = TableSpec {
    name: "purpleflea.agents.escrows",
    writer: Writer::Pfsync,
    comment: "Purple Flea escrows (current state) synced from purpleflea.com/api",
    columns: &[
        col("escrow_id", String, false, "Purple Flea escrow identifier (NOT NULL, PK)"),
        col("buyer_agent_id", String, false, "Agent whose funds are locked"),
        col("seller_agent_id", String, false, "Agent paid on release"),
        col("amount_usd", Money, false, "Escrowed amount in USD, exact cents"),
        col("description", String, true, "Description given at creation"),
        col("metadata", String, true, "Metadata object given at creation, as JSON text"),
        col("status", String, false, "funded | released | refunded; the live provider also completed | disputed"),
        col("created_at", Timestamp, false, "When the escrow was created"),
        col("updated_at", Timestamp, false, "Last change at Purple Flea"),
        col("tx_id", String, true, "Release or refund transaction (null while funded)"),
        col("last_synced_at", Timestamp, true, "When pfsync last wrote this row"),
    ],
    partition_columns: &[],
    properties: &[("delta.enableChangeDataFeed", "true")],
};

/// `purpleflea.agents.escrow_terms`: what the live provider's escrows carry beyond the seed's escrow table,
/// exactly (DECIMAL(18,6): the 1% commission has six decimals, 12.34 -> 0.1234). A table of its own rather
/// than new columns on `purpleflea.agents.escrows`: pfsync refuses an existing table whose columns differ
/// from the spec (it never rewrites a schema), so widening that table would stop every existing warehouse.
pub const ESCROW_TERMS: TableSpec = TableSpec {
    name: "purpleflea.agents.escrow_terms",
    writer: Writer::Pfsync,
    comment: "Live Purple Flea escrows: amounts exact to six decimals, commission, timeout and state times",
    columns: &[
        col(
            "escrow_id",
            String,
            false,
            "Purple Flea escrow identifier (NOT NULL, PK); its row in purpleflea.agents.escrows",
        ),
        col("creator_agent_id", String, false, "Agent that created and funded the escrow"),
        col("counterparty_agent_id", String, false, "Agent paid on release"),
        col("status", String, false, "funded | completed | released | disputed | refunded"),
        col("amount_usd", Micros, false, "Escrowed amount in USD, six decimals"),
        col("commission_usd", Micros, false, "Purple Flea commission (1% of the amount, six decimals)"),
        col(
            "net_to_counterparty_usd",
            Micros,
            false,
            "Amount less commission: what a release credits, or a timeout refunds",
        ),
        col("timeout_hours", Long, false, "Hours after creation when the timeout job refunds an unreleased escrow"),
        col("created_at", Timestamp, false, "When the escrow was created"),
        col("auto_release_at", Timestamp, false, "When the timeout job may refund it to the creator"),
        col("completed_at", Timestamp, true, "When the counterparty marked it complete"),
        col("released_at", Timestamp, true, "When it was released (or refunded by the timeout job)"),
        col("disputed_at", Timestamp, true, "When it was disputed (funds frozen for manual review)"),
        col("last_synced_at", Timestamp, true, "When pfsync last wrote this row"),
    ],
    partition_columns: &[],
    properties: &[("delta.enableChangeDataFeed", "true")],
};

/// `purpleflea.ledger.entries`: an append-only copy of each held agent's casino ledger (`GET /auth/ledger`).
pub const LEDGER_ENTRIES: TableSpec = TableSpec {
    name: "purpleflea.ledger.entries",
    writer: Writer::Pfsync,
    comment: "Live Purple Flea ledger entries of every agent whose key pfsync holds, append-only, amounts exact",
    columns: &[
        col("entry_id", String, false, "Purple Flea ledger entry identifier (NOT NULL, PK)"),
        col("agent_id", String, false, "Agent whose balance the entry moves (the key owner)"),
        col("type", String, false, "credit | debit"),
        col("amount_usd", Micros, false, "Amount in USD, six decimals, always positive (type gives the direction)"),
        col("balance_after_usd", Micros, false, "The agent balance right after this entry, six decimals"),
        col("reason", String, false, "payment_sent | payment_received | escrow_lock: esc_... | deposit | ..."),
        col("reference", String, true, "pay_ id of a payment, escrow id of an escrow lock, ..."),
        col("service", String, true, "Purple Flea service that wrote the entry"),
        col("created_at", Timestamp, false, "When the entry was written at Purple Flea (whole seconds)"),
        col(
            "ledger_seq",
            Long,
            false,
            "Order within the agent ledger as pfsync read it: increasing along the balance_after chain",
        ),
        col("created_date", Date, false, "Day (UTC) of created_at; the partition column"),
        col("synced_at", Timestamp, false, "When pfsync appended this row"),
    ],
    partition_columns: &["created_date"],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.enableChangeDataFeed", "false"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.ledger.gaps`: where a sync found it could not read an agent ledger whole.
pub const LEDGER_GAPS: TableSpec = TableSpec {
    name: "purpleflea.ledger.gaps",
    writer: Writer::Pfsync,
    comment: "Gaps in the synced ledger of an agent: entries written between two syncs that the provider no longer lists",
    columns: &[
        col("agent_id", String, false, "Agent whose ledger has the gap"),
        col("kind", String, false, "window_full | chain_break"),
        col("after_entry_id", String, false, "Newest entry stored before the gap"),
        col("after_balance_usd", Micros, false, "Balance after that entry"),
        col("before_entry_id", String, false, "Oldest entry read after the gap"),
        col("before_balance_usd", Micros, false, "Balance before that entry (its balance_after less its own movement)"),
        col("detail", String, false, "What was found, in words"),
        col("run_id", String, false, "Sync run that found it"),
        col("detected_at", Timestamp, false, "When"),
    ],
    partition_columns: &[],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.ledger.transactions`: an append-only copy of the provider's transaction list.
pub const TRANSACTIONS: TableSpec = TableSpec {
    name: "purpleflea.ledger.transactions",
    writer: Writer::Pfsync,
    comment: "Purple Flea transaction ledger, append-only copy of purpleflea.com/api/transactions",
    columns: &[
        col("tx_id", String, false, "Purple Flea transaction identifier (NOT NULL, PK)"),
        col("kind", String, false, "payout | escrow_lock | escrow_release | escrow_refund | faucet"),
        col("agent_id", String, false, "Agent whose balance the transaction moves"),
        col("counterparty_agent_id", String, true, "Other agent of an escrow transaction"),
        col("amount_usd", Money, false, "Amount in USD, exact cents, always positive (kind gives the direction)"),
        col("idempotency_key", String, true, "Idempotency-Key the request carried (null when none)"),
        col("reference", String, true, "Payout reason or escrow id"),
        col("created_at", Timestamp, false, "When the transaction happened at Purple Flea"),
        col("created_date", Date, false, "Day (UTC) of created_at; the partition column"),
        col("synced_at", Timestamp, false, "When pfsync appended this row"),
    ],
    partition_columns: &["created_date"],
    // Append-only and kept a year: vacuum never deletes a file a version from the last 365 days needs, so
    // auditors can time-travel that far (`pfsync maintain` honours this as a floor).
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.enableChangeDataFeed", "false"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.payouts.pending`: payouts requested upstream (written by other jobs; pfsync only reads it).
pub const PENDING_PAYOUTS: TableSpec = TableSpec {
    name: "purpleflea.payouts.pending",
    writer: Writer::Upstream { requires: &["payout_id", "agent_id", "amount_usd", "reason"], reads: &["requested_at"] },
    comment: "Payouts to execute through Purple Flea; pfsync pays each payout_id exactly once",
    columns: &[
        col("payout_id", String, false, "Unique id of the payout; its idempotency key derives from it (NOT NULL, PK)"),
        col("agent_id", String, true, "Agent to pay"),
        col("amount_usd", Money, true, "Amount in USD, exact cents, > 0"),
        col("reason", String, true, "Why the agent is paid (recorded with the payout)"),
        col("requested_at", Timestamp, true, "When the payout was requested"),
        col("requested_by", String, true, "Who or what requested it"),
    ],
    partition_columns: &[],
    properties: &[],
};

/// `purpleflea.escrow.actions`: escrow creations, releases and disputes requested upstream.
pub const ESCROW_ACTIONS: TableSpec = TableSpec {
    name: "purpleflea.escrow.actions",
    writer: Writer::Upstream {
        requires: &["action_id", "action"],
        reads: &[
            "escrow_id",
            "create_action_id",
            "buyer_agent_id",
            "seller_agent_id",
            "amount_usd",
            "description",
            "metadata",
            "reason",
            "requested_at",
        ],
    },
    comment: "Escrow actions to execute through Purple Flea; pfsync runs each action_id exactly once",
    columns: &[
        col("action_id", String, false, "Unique id of the action (NOT NULL, PK)"),
        col("action", String, true, "create | release | dispute"),
        col("escrow_id", String, true, "Escrow to release or dispute"),
        col("create_action_id", String, true, "Or: the create action whose escrow to release or dispute"),
        col("buyer_agent_id", String, true, "create: agent whose funds are locked"),
        col("seller_agent_id", String, true, "create: agent paid on release"),
        col("amount_usd", Money, true, "create: amount in USD, exact cents, > 0"),
        col("description", String, true, "create: description"),
        col("metadata", String, true, "create: metadata object as JSON text"),
        col("reason", String, true, "Why (recorded with the action)"),
        col("requested_at", Timestamp, true, "When the action was requested"),
        col("requested_by", String, true, "Who or what requested it"),
    ],
    partition_columns: &[],
    properties: &[],
};

/// `purpleflea.escrow.rules`: releases (or disputes) decided by an MLflow metric, written upstream; pfsync
/// reads it in its `rules` step and executes each rule that fired at most once, ever.
pub const ESCROW_RULES: TableSpec = TableSpec {
    name: "purpleflea.escrow.rules",
    writer: Writer::Upstream {
        requires: &["rule_id", "metric_key", "threshold", "direction"],
        reads: &[
            "escrow_id",
            "create_action_id",
            "mlflow_run_id",
            "experiment_id",
            "run_filter",
            "runs_since",
            "deadline",
            "on_deadline",
            "reason",
        ],
    },
    comment: "Metric rules: release an escrow when an MLflow metric crosses a threshold; pfsync executes each rule at most once",
    columns: &[
        col("rule_id", String, false, "Unique id of the rule (NOT NULL, PK); its operation id is rule:<rule_id>"),
        col("escrow_id", String, true, "Escrow to release or dispute"),
        col("create_action_id", String, true, "Or: the create in purpleflea.escrow.actions whose escrow it is"),
        col("mlflow_run_id", String, true, "MLflow run whose metric is watched"),
        col("experiment_id", String, true, "Or: any run of this MLflow experiment (with filter)"),
        col("run_filter", String, true, "With experiment_id: a filter string as mlflow.search_runs takes it"),
        col(
            "runs_since",
            Timestamp,
            true,
            "With experiment_id: only runs started at or after this count (null: runs started after pfsync first read the rule)",
        ),
        col("metric_key", String, true, "Metric to watch, e.g. val_accuracy"),
        col("threshold", Double, true, "Value the metric is compared with"),
        col("direction", String, true, "> | >= | < | <= : the metric fires when metric DIRECTION threshold"),
        col(
            "deadline",
            Timestamp,
            true,
            "Only metric values pfsync saw by then count, logged by then by their own time too (null: no deadline)",
        ),
        col("on_deadline", String, true, "nothing | dispute: what happens when the deadline passes without a hit"),
        col("reason", String, true, "Why (recorded with the release or dispute)"),
        col("requested_by", String, true, "Who or what wrote the rule"),
    ],
    partition_columns: &[],
    properties: &[],
};

/// `purpleflea.escrow.rule_sightings`: what the rules step saw of a metric rule, and when by its own clock.
/// MLflow takes a metric value's time from the client that logs it, so a deadline is judged by these times.
pub const RULE_SIGHTINGS: TableSpec = TableSpec {
    name: "purpleflea.escrow.rule_sightings",
    writer: Writer::Pfsync,
    comment: "When pfsync first saw a metric rule, and the metric value that fired it, by the clock of pfsync: deadlines are judged by these times, not by the times MLflow clients give",
    columns: &[
        col("rule_id", String, false, "Rule (purpleflea.escrow.rules)"),
        col("sighting", String, false, "rule (the rule first read) | hit (a metric value that satisfies the rule)"),
        col("mlflow_run_id", String, true, "Hit: the MLflow run that logged the value"),
        col("metric_key", String, true, "Hit: the metric"),
        col("step", Long, true, "Hit: the step the value was logged at"),
        col("value", Double, true, "Hit: the value"),
        col(
            "logged_at",
            Timestamp,
            true,
            "Hit: the time the MLflow client gave the value (never trusted for a deadline)",
        ),
        col("seen_at", Timestamp, false, "When pfsync first read it"),
        col("run_id", String, false, "pfsync run that saw it"),
    ],
    partition_columns: &[],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.payouts.log`: every step of every payout and escrow action, append-only.
pub const PAYOUT_LOG: TableSpec = TableSpec {
    name: "purpleflea.payouts.log",
    writer: Writer::Pfsync,
    comment: "Append-only log of every payout and escrow action pfsync executed: intent before money moves, outcome after",
    columns: &[
        col("operation_id", String, false, "payout_id or action_id"),
        col("kind", String, false, "payout | escrow_create | escrow_release | escrow_dispute"),
        col(
            "event",
            String,
            false,
            "intent | completed | rejected | unknown | never_ran (an attempt that provably did not run: the next \
             may be sent) | abandoned (a person decided it is not to be paid)",
        ),
        col("attempt", Int, false, "1 for the first send; grows with each resolution attempt"),
        col("agent_id", String, true, "Payee (payout, release) or buyer (create, dispute)"),
        col("counterparty_agent_id", String, true, "Seller of an escrow create"),
        col("amount_usd", Money, true, "Amount in USD, exact cents"),
        col("reason", String, true, "Recorded reason"),
        col("idempotency_key", String, false, "Idempotency-Key sent with every attempt of this operation"),
        col("tx_id", String, true, "Provider transaction of a completed operation"),
        col("escrow_id", String, true, "Escrow created, released or disputed"),
        col("http_status", Int, true, "HTTP status of the attempt, when one came back"),
        col(
            "error_code",
            String,
            true,
            "Contract error code, or one of pfsync: transport, malformed_response, lookup_failed, lookup_inconclusive \
             (the evidence of the provider proved nothing; never resent)",
        ),
        col("error_message", String, true, "Error text"),
        col("run_id", String, false, "Run that wrote the event"),
        col("recorded_at", Timestamp, false, "When the event was recorded"),
        col("recorded_date", Date, false, "Day (UTC) of recorded_at; the partition column"),
        col(
            "payer_agent_id",
            String,
            true,
            "The agent the operation debits (the payer of a payout, the buyer of an escrow create), where the \
             provider pays from the balance of an agent",
        ),
        col(
            "decided_by",
            String,
            true,
            "The person who recorded this event (pfsync resolve --by); null for events pfsync wrote itself",
        ),
        col("note", String, true, "Why a person decided so (pfsync resolve --note)"),
        col(
            "escrow_tag",
            String,
            true,
            "The tag an escrow create intent sent at the end of the escrow description \
             ([pfsync:<namespace>:<action id>]), where the provider finds escrows by it; null on intents logged \
             before tags named the namespace (their escrows carry [pfsync:<action id>])",
        ),
    ],
    partition_columns: &["recorded_date"],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.payouts.rejects`: source rows refused before any money moved, with the reason.
pub const REJECTS: TableSpec = TableSpec {
    name: "purpleflea.payouts.rejects",
    writer: Writer::Pfsync,
    comment: "Pending payouts and escrow actions refused by validation, one row per version of a refused row",
    columns: &[
        col("operation_id", String, true, "payout_id or action_id as given (null when missing)"),
        col(
            "kind",
            String,
            false,
            "payout | escrow_create | escrow_release | escrow_dispute | escrow_action | escrow_rule",
        ),
        col("code", String, false, "Machine-readable reason (see README)"),
        col("message", String, false, "What is wrong and what to fix"),
        col(
            "source_row",
            String,
            true,
            "The source row as JSON, clipped to 4 KiB (a clipped value ends with a digest of the whole)",
        ),
        col("run_id", String, false, "Run that first refused this version of the row"),
        col("rejected_at", Timestamp, false, "When"),
    ],
    partition_columns: &[],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.payouts.reconciliation`: every finding of every reconcile run, append-only.
pub const RECONCILIATION: TableSpec = TableSpec {
    name: "purpleflea.payouts.reconciliation",
    writer: Writer::Pfsync,
    comment: "Reconciliation findings: one row per open finding per run, and one when a finding is resolved",
    columns: &[
        col("run_id", String, false, "Reconcile run that wrote the row"),
        col("finding_key", String, false, "Stable identity of the finding across runs (class and subject)"),
        col(
            "class",
            String,
            false,
            "amount_mismatch | agent_mismatch | missing_at_provider | unlogged_at_provider | duplicate_at_provider | status_mismatch | stale_unknown | unattributed_payout | balance_mismatch | ledger_gap | claimed_twice",
        ),
        col("operation_id", String, true, "payout_id or action_id"),
        col("kind", String, true, "Operation kind or provider transaction kind"),
        col("idempotency_key", String, true, "Key of the operation or transaction"),
        col("tx_ids", String, true, "Provider transactions involved, comma-separated"),
        col("agent_id", String, true, "Agent concerned"),
        col("expected_agent_id", String, true, "Agent the log recorded"),
        col("actual_agent_id", String, true, "Agent the provider shows"),
        col("expected_amount_usd", Money, true, "Amount the log (or the ledger) implies"),
        col("actual_amount_usd", Money, true, "Amount the provider (or the wallet) shows"),
        col("detail", String, false, "What differs, in words"),
        col("first_seen_run", String, false, "Run that first reported this finding"),
        col("first_seen_at", Timestamp, false, "When it was first reported"),
        col("resolved_at", Timestamp, true, "Set on the row that records that the finding disappeared"),
        col("recorded_at", Timestamp, false, "When this row was written (one value per run)"),
    ],
    partition_columns: &[],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// `purpleflea.payouts.classification`: what reconcile carries from one run to the next, so a run reads only
/// what changed. One row per logged operation (its status, the provider transactions that match it, its
/// class) and per provider transaction no operation's key claims. A full rebuild writes it from the whole
/// log and ledger; every other run rewrites the rows that new log events or transactions concern, and the
/// `settled = false` rows, which it reads whole. The log and ledger versions it covers are Delta `txn`
/// actions on it (`src/reconcile/coverage.rs`).
pub const CLASSIFICATION: TableSpec = TableSpec {
    name: "purpleflea.payouts.classification",
    writer: Writer::Pfsync,
    comment: "Reconcile state: every logged operation with the provider transactions that match it and its class, and every provider transaction no operation claims; the log and ledger versions it covers are in its transaction log",
    columns: &[
        col(
            "operation_id",
            String,
            true,
            "payout_id or action_id; null on the row of a provider transaction no operation claims",
        ),
        col("kind", String, false, "Operation kind; on a transaction row, the provider transaction kind"),
        col(
            "status",
            String,
            true,
            "completed | rejected | unknown | in_flight, as purpleflea.payouts.status gives it",
        ),
        col("attempts", Int, true, "Highest attempt logged"),
        col("agent_id", String, true, "Agent the log recorded"),
        col("amount_usd", Money, true, "Amount the log recorded, exact cents"),
        col("reason", String, true, "Reason the log recorded"),
        col(
            "idempotency_key",
            String,
            true,
            "Key of the operation; on a transaction row, the key it carried (null when none)",
        ),
        col("log_tx_id", String, true, "Provider transaction a completed event recorded"),
        col("first_recorded_at", Timestamp, true, "First event of the operation"),
        col("last_recorded_at", Timestamp, true, "Latest event of the operation"),
        col("matched_by", String, true, "key | tx_id: how the provider transactions were found (null: none were)"),
        col(
            "transactions",
            Long,
            false,
            "Provider transactions found for the operation (by key, else the one the log recorded); 1 on a transaction row",
        ),
        col("tx_ids", String, true, "Those transactions, comma-separated in tx_id order"),
        col("provider_agent_id", String, true, "Agent the provider shows (the least, when several)"),
        col("provider_amount_usd", Money, true, "Amount the provider shows (the least, when several)"),
        col("provider_date", Date, true, "Day (UTC) of the earliest of those transactions"),
        col("provider_reference", String, true, "Transaction row: the reference the provider shows"),
        col(
            "repeats_operation_id",
            String,
            true,
            "Transaction row of a payout with no key: a completed logged payout of the same agent, amount and reason (one row per such payout)",
        ),
        col(
            "class",
            String,
            true,
            "matched | in_progress | a finding class; null on a transaction row that is no finding (another namespace, a keyless payout that repeats none)",
        ),
        col("log_version", Long, false, "Payout log version of the run that last changed the row"),
        col("transactions_version", Long, false, "Transactions table version of that run (-1: there was no table)"),
        col(
            "settled",
            Boolean,
            false,
            "true: a final operation that matched, read again only when new events or transactions concern it; false: read by every run; the partition column",
        ),
    ],
    partition_columns: &["settled"],
    properties: &[],
};

/// `purpleflea.ledger.implied_balances`: per agent, the balance the synced provider transactions imply, kept
/// by reconcile from the transactions appended since its last run.
pub const IMPLIED_BALANCES: TableSpec = TableSpec {
    name: "purpleflea.ledger.implied_balances",
    writer: Writer::Pfsync,
    comment: "Per agent, the balance the synced provider transactions imply (credits less escrow locks); kept by reconcile from the transactions appended since its last run",
    columns: &[
        col("agent_id", String, false, "Purple Flea agent identifier (NOT NULL, PK)"),
        col("implied_usd", Money, false, "Sum of its transactions, escrow locks negative, exact cents"),
        col("transactions", Long, false, "Transactions summed"),
        col("computed_run_id", String, false, "Reconcile run that wrote the row"),
    ],
    partition_columns: &[],
    properties: &[],
};

/// `purpleflea.ops.runs`: one summary row per step of every run.
pub const RUNS: TableSpec = TableSpec {
    name: "purpleflea.ops.runs",
    writer: Writer::Pfsync,
    comment: "One row per pfsync step run: when, how much, what it found, how it exited",
    columns: &[
        col("run_id", String, false, "Run id (--run-id; a Databricks job passes its own)"),
        col("step", String, false, "sync | payouts | reconcile | maintain"),
        col("started_at", Timestamp, false, "Step start"),
        col("finished_at", Timestamp, false, "Step end"),
        col("rows", Long, true, "Rows or operations handled"),
        col("amount_usd", Money, true, "Money moved (payouts) or matched (reconcile)"),
        col("counts", String, true, "Counts per outcome or finding class, as a JSON object"),
        col("exit_code", Int, false, "Exit code the step ended with"),
    ],
    partition_columns: &[],
    properties: &[("delta.appendOnly", "true")],
};

/// `purpleflea.ops.daily_totals`: provider money per day and kind, recomputed by each reconcile run.
pub const DAILY_TOTALS: TableSpec = TableSpec {
    name: "purpleflea.ops.daily_totals",
    writer: Writer::Pfsync,
    comment: "Provider transactions per day and kind, and the part matched to the pfsync log; rewritten by reconcile",
    columns: &[
        col("day", Date, false, "Day (UTC)"),
        col("kind", String, false, "payout | escrow_lock | escrow_release | escrow_refund | faucet"),
        col("transactions", Long, false, "Provider transactions"),
        col("amount_usd", Money, false, "Their total, exact cents"),
        col("matched_usd", Money, false, "Of which matched to a completed pfsync operation"),
        col("computed_run_id", String, false, "Reconcile run that computed the row"),
    ],
    partition_columns: &[],
    properties: &[],
};

/// `purpleflea.ops.mcp_calls`: every tool call `pfsync mcp` answered, append-only, for auditors.
pub const MCP_CALLS: TableSpec = TableSpec {
    name: "purpleflea.ops.mcp_calls",
    writer: Writer::Pfsync,
    comment: "Every MCP tool call pfsync mcp answered: who asked, what, what the policy decided, what came back",
    columns: &[
        col("call_id", String, false, "Unique id of the call (UUID v7)"),
        col("tool", String, false, "Tool called, e.g. release_escrow"),
        col(
            "client",
            String,
            false,
            "Client the server was started for (pfsync mcp --client): the requested_by of its operations",
        ),
        col("client_info", String, true, "Name and version the MCP client announced (not authenticated)"),
        col("transport", String, false, "stdio | http"),
        col("request_id", String, true, "request_id the agent gave (money tools)"),
        col("operation_id", String, true, "Payout or escrow action id derived from it: joins purpleflea.payouts.log"),
        col("arguments", String, false, "Arguments as JSON, clipped to 4 KiB; no tool takes a secret"),
        col("decision", String, false, "read | execute | queue | deny | refused | replayed | invalid | error"),
        col("amount_usd", Money, true, "Amount requested (payouts, escrow creates) or credited (faucet claims)"),
        col("is_error", Boolean, false, "Whether the agent got a tool error"),
        col("result", String, true, "What the agent got, as JSON or text, clipped to 4 KiB"),
        col("started_at", Timestamp, false, "When the call arrived"),
        col("finished_at", Timestamp, false, "When it was answered"),
    ],
    partition_columns: &[],
    properties: &[
        ("delta.appendOnly", "true"),
        ("delta.deletedFileRetentionDuration", "interval 365 days"),
        ("delta.logRetentionDuration", "interval 365 days"),
    ],
};

/// Every table pfsync owns, in creation order.
pub const ALL: &[&TableSpec] = &[
    &WALLETS,
    &ESCROWS,
    &TRANSACTIONS,
    &PENDING_PAYOUTS,
    &ESCROW_ACTIONS,
    &ESCROW_RULES,
    &PAYOUT_LOG,
    &REJECTS,
    &RECONCILIATION,
    &RUNS,
    &DAILY_TOTALS,
    &ESCROW_TERMS,
    &LEDGER_ENTRIES,
    &LEDGER_GAPS,
    &MCP_CALLS,
    &RULE_SIGHTINGS,
    &CLASSIFICATION,
    &IMPLIED_BALANCES,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_is_consistent() {
        for spec in ALL {
            assert!(TableName::parse(spec.name).is_ok(), "{}", spec.name);
            for p in spec.partition_columns {
                assert!(spec.column(p).is_some(), "{}: partition column {p} is declared", spec.name);
            }
            let mut names: Vec<_> = spec.columns.iter().map(|c| c.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), spec.columns.len(), "{}: column names are unique", spec.name);
            assert_eq!(spec.arrow_schema().fields().len(), spec.delta_columns().len());
            // A quote or backslash in a comment would need escaping, which SQL dialects disagree on.
            for c in spec.columns.iter().map(|c| c.comment).chain([spec.comment]) {
                assert!(!c.contains(['\'', '\\']), "{}: {c:?} reads the same in every dialect", spec.name);
            }
            if let Writer::Upstream { requires, reads } = spec.writer {
                for c in requires.iter().chain(reads) {
                    assert!(spec.column(c).is_some(), "{}: column {c} read from upstream is declared", spec.name);
                }
            }
        }
    }

    #[test]
    fn wallets_is_the_seed_table() {
        let ddl: Vec<(&str, &str)> = WALLETS.columns.iter().map(|c| (c.name, c.kind.sql())).collect();
        assert_eq!(
            ddl,
            [
                ("agent_id", "STRING"),
                ("wallet_address", "STRING"),
                ("balance_usd", "DOUBLE"),
                ("active_escrow_count", "INT"),
                ("total_earned_usd", "DOUBLE"),
                ("referral_code", "STRING"),
                ("registered_at", "TIMESTAMP"),
                ("last_synced_at", "TIMESTAMP"),
            ]
        );
        assert!(!WALLETS.columns[0].nullable);
        assert_eq!(WALLETS.property("delta.enableChangeDataFeed"), Some("true"));
    }
}
