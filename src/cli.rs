//! Commands and flags. Each flag's doc comment is its `--help` text.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::exit::Exit;
use crate::money::Usd;

/// The text after the flags in `pfsync --help`: environment, exit codes (from [`Exit::ALL`], so the list
/// cannot fall behind the code), and where to start.
pub fn after_help() -> String {
    let mut text = String::from(
        "\
Environment:
  PURPLEFLEA_API_KEY   the API key (or --api-key-file); never accepted as a flag value
  PFSYNC_WAREHOUSE, PFSYNC_API_URL, PFSYNC_FAUCET_URL, PFSYNC_CONFIG: defaults for the flags of the same name
  MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD), or DATABRICKS_HOST +
                       DATABRICKS_TOKEN: the MLflow server of `pfsync rules` (tokens are never printed)
  RUST_LOG             fine-grained log filter (overrides -v/-q)

Exit codes:
",
    );
    for e in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", e.code(), e.meaning()));
    }
    text.push_str(
        "
`pfsync run` exits with the most useful code of the steps that finished: 6, then 8, 7, 5.

Start here: `pfsync demo` runs everything against an in-process sandbox and a local warehouse.",
    );
    text
}

/// pfsync: Purple Flea <-> Delta Lake. Syncs wallets into Delta tables, executes payouts exactly once,
/// and reconciles what was paid.
#[derive(Debug, Parser)]
#[command(name = "pfsync", version, about, long_about = None)]
#[command(after_help = after_help(), after_long_help = after_help())]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr (for log shippers and the Databricks run UI).
    Json,
}

/// Options every command takes, shown under their own heading in every `--help`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Warehouse root: a local folder or an object-store URI (s3://, abfss://, gs://). Tables live at
    /// <warehouse>/<catalog>/<schema>/<table> unless the config file maps them elsewhere.
    /// [default: ./pfsync-warehouse]
    #[arg(long, global = true, env = "PFSYNC_WAREHOUSE", value_name = "PATH|URI")]
    pub warehouse: Option<String>,

    /// Purple Flea API base URL. Plain http is refused except to a loopback host.
    /// [default: https://purpleflea.com/api]
    #[arg(long, global = true, env = "PFSYNC_API_URL", value_name = "URL")]
    pub api_url: Option<String>,

    /// Faucet base URL. [default: https://faucet.purpleflea.com/api]
    #[arg(long, global = true, env = "PFSYNC_FAUCET_URL", value_name = "URL")]
    pub faucet_url: Option<String>,

    /// Read the API key from this file instead of PURPLEFLEA_API_KEY (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "PFSYNC_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// TOML config file: warehouse, api_url, faucet_url, [api] tuning, [tables."c.s.t"] location
    /// overrides, [storage] object-store options. Flags win over it.
    #[arg(long, global = true, env = "PFSYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors on stderr; no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Id of this run, written into every Delta commit's metadata [default: a new UUID v7]. A Databricks
    /// job passes its own ({{job.run_id}}).
    #[arg(long, global = true, value_name = "ID")]
    pub run_id: Option<String>,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// HTTP client tuning; each may also be set in the config file's [api] section.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global HTTP client options")]
pub struct ApiArgs {
    /// Whole-request timeout in seconds [default: 30].
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout_secs: Option<f64>,

    /// Connection timeout in seconds [default: 10].
    #[arg(long, global = true, value_name = "SECS")]
    pub connect_timeout_secs: Option<f64>,

    /// Attempts per request, the first included, on 429, 5xx and connection errors [default: 8].
    #[arg(long, global = true, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Stop retrying a request after this many seconds [default: 120].
    #[arg(long, global = true, value_name = "SECS")]
    pub max_elapsed_secs: Option<f64>,

    /// Client-side limit on requests started per second; 0 = none [default: none].
    #[arg(long, global = true, value_name = "RPS")]
    pub rate_limit_rps: Option<f64>,

    /// Requests in flight at once [default: 16].
    #[arg(long, global = true, value_name = "N")]
    pub max_concurrency: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Workflow entry point: sync, then payouts, then reconcile, with one run id across the steps.
    Run(RunArgs),
    /// Pull state from the API into Delta tables.
    Sync(SyncArgs),
    /// Execute pending payouts and escrow actions exactly once, logging every step.
    Payouts(PayoutsArgs),
    /// Metric rules (purpleflea.escrow.rules): read each rule's metric history from MLflow
    /// (MLFLOW_TRACKING_URI, or DATABRICKS_HOST + DATABRICKS_TOKEN), release (or, past the deadline,
    /// dispute) the escrow of every rule that fired, exactly once, then tag the MLflow run with the outcome.
    /// Takes the flags of `pfsync payouts` except --payouts-sql, --actions-sql and --register.
    Rules(RulesArgs),
    /// Sync the ledger and wallets, then match the payout log against the provider's transactions and
    /// record every discrepancy in purpleflea.payouts.reconciliation.
    Reconcile(ReconcileArgs),
    /// Current status of every payout and escrow action (the purpleflea.payouts.status view); with an
    /// OPERATION_ID, that operation's events in the payout log and why it waits, if it does.
    Status(StatusArgs),
    /// Operations that wait for a person (outcome unknown, or in flight past the in-flight timeout), each with
    /// the provider's evidence as pfsync's copies hold it; and a person's decision about one, checked and
    /// appended to the payout log with who and why. Refused decisions exit 2 and record nothing.
    Resolve(ResolveArgs),
    /// Serve an in-memory Purple Flea sandbox (for trying pfsync without an account, and for tests).
    Sandbox(SandboxArgs),
    /// Run the whole job end to end against an in-process sandbox and a local warehouse of its own
    /// (./pfsync-demo unless --warehouse says otherwise), started afresh each time. A folder holding a
    /// commit the demo did not make (a real run's) is refused with exit 2, never cleared.
    Demo(DemoArgs),
    /// Run a SQL query (DataFusion) over pfsync's tables, addressed by their three-level names. Read-only:
    /// a statement that would write (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, COPY, ...) exits 2.
    Sql(SqlArgs),
    /// Compact small files, write a checkpoint and vacuum old files of every table pfsync owns.
    Maintain(MaintainArgs),
    /// Create every table pfsync owns, empty, so a Unity Catalog admin can register them before the first run.
    Init,
    /// List every table pfsync owns: location, version, row count, and the run id of its last commit.
    Tables(TablesArgs),
    /// Print the Databricks SQL that registers pfsync in Unity Catalog for --warehouse (a cloud URI): CREATE
    /// SCHEMA, an external table (USING DELTA LOCATION '<uri>') over every table, the views, and the
    /// grants. The files in sql/ddl/ and sql/grants.sql are the same text for a placeholder warehouse.
    Ddl(DdlArgs),
    /// Serve MCP tools to agents (stdio, or streamable HTTP with --listen): balances and escrows from the
    /// synced tables, and payouts and escrow actions through the exactly-once engine under the [mcp] policy.
    Mcp(McpArgs),
    /// Append rows from a CSV file to a source table pfsync reads (purpleflea.payouts.pending or
    /// purpleflea.escrow.actions), to try pfsync with your own data. The header row names the table's columns
    /// (any order); money is exact text (12.50). A row already there with the same values is skipped; an id
    /// there with other values stops the import, nothing written. In production the job that owns the
    /// table writes it.
    Import(ImportArgs),
    /// Check the setup without moving money: the config, the keys, the provider (reachable, keys accepted, a
    /// read-only request), this machine's clock against the provider's, and the tables. Exits with the code
    /// of the worst failed check (2 setup, 3 provider, 4 tables); warnings alone exit 0.
    Doctor(DoctorArgs),
    /// Print a shell completion script, generated from these flags. bash: `pfsync completions bash >
    /// ~/.local/share/bash-completion/completions/pfsync`; zsh: into a folder of $fpath as `_pfsync`; fish:
    /// `pfsync completions fish > ~/.config/fish/completions/pfsync.fish`.
    Completions(CompletionsArgs),
    /// Print the man page pfsync(1), generated from these flags; with --dir, write pfsync.1 and one
    /// pfsync-<command>.1 per command there (e.g. `pfsync man --dir ~/.local/share/man/man1`).
    Man(ManArgs),
}

/// How `status`, `tables` and `sql` print their result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people: aligned columns.
    Table,
    /// JSON for programs (money as exact decimal numbers, times as RFC 3339 text, nulls written out).
    Json,
}

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// How the list is printed: a text table, or a JSON array with one object per table.
    #[arg(long, visible_alias = "format", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Which table: payouts (purpleflea.payouts.pending: payout_id, agent_id, amount_usd, reason
    /// [, requested_at, requested_by]) or actions (purpleflea.escrow.actions: action_id, action, ...).
    #[arg(value_enum)]
    pub into: ImportTarget,

    /// The CSV file, a header row first.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportTarget {
    /// purpleflea.payouts.pending
    Payouts,
    /// purpleflea.escrow.actions
    Actions,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// How the checks are printed: one line each, or one JSON object.
    #[arg(long, visible_alias = "format", value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Most seconds this machine's clock may differ from the provider's before the clock check fails (a
    /// skew over a fifth of it is a warning). Intents age by this machine's clock: a clock far off makes an
    /// in-flight timeout expire early or late.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_clock_skew_secs: u64,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write pfsync.1 and pfsync-<command>.1 into this folder (created if missing) instead of printing
    /// pfsync.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio; loopback only (127.0.0.1:PORT, port 0
    /// picks one). Every request needs `Authorization: Bearer <token>`, the token from PFSYNC_MCP_TOKEN or
    /// --token-file (never a flag value): at least 32 bytes, and no Purple Flea key pfsync holds.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// A `Host` the HTTP server accepts besides loopback names (repeatable): the public name a TLS proxy in
    /// front of it forwards. Any other Host is refused (DNS rebinding protection).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,

    /// File holding the HTTP bearer token (instead of PFSYNC_MCP_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Name of the client this server answers (a-z, 0-9, _ and -): operations are `mcp:<client>:<request_id>`,
    /// requested_by `mcp:<client>`; limits and allowed_clients apply to it. Run one server per agent identity.
    #[arg(long, env = "PFSYNC_MCP_CLIENT", default_value = "agent")]
    pub client: String,
}

#[derive(Debug, Args)]
pub struct DdlArgs {
    /// Group (or user) that reads every table and view: gets USE CATALOG, USE SCHEMA and SELECT.
    #[arg(long, value_name = "PRINCIPAL", default_value = crate::tables::ddl::DEFAULT_READERS, value_parser = parse_principal)]
    pub readers: String,

    /// Principal the Databricks job runs as (a service principal's application id, or a user): gets
    /// SELECT on every table, MODIFY on the tables pfsync writes, and EXTERNAL USE SCHEMA.
    #[arg(long, value_name = "PRINCIPAL", default_value = crate::tables::ddl::DEFAULT_JOB_PRINCIPAL, value_parser = parse_principal)]
    pub job_principal: String,

    /// The job reaches storage with the cluster's own access ([unity] vend_credentials = false, or no
    /// [unity] section): leave out EXTERNAL USE SCHEMA, which only credential vending needs.
    #[arg(long)]
    pub no_credential_vending: bool,
}

/// `--readers`, `--job-principal`: a principal name for a GRANT.
pub fn parse_principal(text: &str) -> Result<String, String> {
    crate::tables::ddl::check_principal(text)?;
    Ok(text.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncTarget {
    /// purpleflea.agents.wallets: one row per agent, upserted by agent_id.
    Wallets,
    /// purpleflea.agents.escrows: one row per escrow, upserted by escrow_id (live: by id, and
    /// purpleflea.agents.escrow_terms).
    Escrows,
    /// purpleflea.ledger.transactions: append-only copy of the provider's ledger (live: each held key's
    /// ledger into purpleflea.ledger.entries, gaps into purpleflea.ledger.gaps).
    Transactions,
    /// Every synced table.
    All,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// What to sync.
    #[arg(value_enum, default_value_t = SyncTarget::All)]
    pub target: SyncTarget,

    /// Rows per API page (1..=1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,

    /// Ignore the stored sync position and list everything. Every listed row is rewritten (its
    /// last_synced_at moves); rows the API no longer lists are kept and counted. The first sync of a
    /// table is always full.
    #[arg(long)]
    pub full: bool,

    /// How far before the stored position an incremental sync starts reading, in seconds, so rows the
    /// provider committed late are not missed (re-read rows are de-duplicated by key).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub overlap_secs: u64,

    /// Rows per Delta commit; memory is bounded by this, not by the table's size.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000), value_name = "N")]
    pub batch_rows: u64,

    /// Most API pages one table's sync reads. A provider that keeps handing out one more page is refused
    /// (exit 3) and nothing more is written; raise it for a table that really is larger.
    #[arg(long, default_value_t = crate::sync::limits::DEFAULT_MAX_PAGES, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_pages: u64,

    /// Most rows one table's sync reads; more is refused (exit 3) as for --max-pages.
    #[arg(long, default_value_t = crate::sync::limits::DEFAULT_MAX_ROWS, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_rows: u64,

    /// Longest one table's sync may take, in seconds; past it the sync stops (exit 3) and nothing more is
    /// written. Rows committed before stay, with the position they reached: a rerun goes on from there.
    #[arg(long, default_value_t = crate::sync::limits::DEFAULT_MAX_SYNC_SECS, value_parser = clap::value_parser!(u64).range(1..=7 * 86_400), value_name = "SECS")]
    pub max_sync_secs: u64,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on. Loopback by default: the sandbox accepts a well-known test key. Any other
    /// address (0.0.0.0 included) needs PURPLEFLEA_API_KEY set to a key of your own, or it is refused.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on; 0 picks a free one (the URL is printed when ready).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,

    /// Seeded agents (agent-000001...), plus the funded `databricks-pipeline-orchestrator`.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,

    /// Seed for agents, balances and injected faults: the same seed gives the same world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Amount the faucet credits, once per agent.
    #[arg(long, default_value = "10.00", value_name = "USD")]
    pub faucet_amount: String,

    /// How long idempotency keys and their stored responses are kept, in seconds.
    #[arg(long, default_value_t = 86_400, value_name = "SECS")]
    pub idempotency_retention_secs: u64,

    /// Serve admin controls that plant discrepancies for reconciliation tests: POST /api/admin/transactions
    /// (insert any transaction, e.g. a duplicate or one with a key nobody logged; the agent's balance
    /// follows) and POST /api/admin/wallets/{agent_id}/balance (set a balance with no transaction). Off by
    /// default.
    #[arg(long)]
    pub admin: bool,

    /// Behave like a provider without idempotency: Idempotency-Key is neither replayed nor kept on the
    /// transaction. For trying pfsync against such a provider (declare it with [provider]
    /// honours_idempotency_keys = false): no POST is then repeated after an ambiguous failure.
    #[arg(long)]
    pub ignore_idempotency_keys: bool,

    /// Misbehave on GET /transactions?idempotency_key= (the lookup of unknown outcomes): `garble` makes
    /// the rows unreadable, `ignore-filter` returns other operations' transactions. pfsync must then leave
    /// the operation unknown, never send it again.
    #[arg(long, value_name = "garble|ignore-filter", value_parser = parse_lookup_fault)]
    pub lookup_fault: Option<LookupFaultArg>,

    /// Seconds a client has to send a request's headers (and to start the next request on a kept-alive
    /// connection) before the connection is closed.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds a connection may move no byte at all (a request body that stops, a response nobody reads)
    /// before it is closed.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Instead of the in-memory API, forward every request to this provider (http(s) base URL; the request
    /// path is appended to its path) and inject the --fault-* faults relative to it: for fault tests
    /// against a real provider, e.g. Purple Flea's own services on a test bed. 429 and 500-before are
    /// answered here (nothing reaches the provider); 500-after, drop-after and malformed come after the
    /// provider answered (the operation ran there). Plain http only to a loopback host; the proxy itself
    /// listens on loopback only. The provider has 30 s to answer (else 504); an unreachable one gives 502.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = [
            "agents",
            "faucet_amount",
            "idempotency_retention_secs",
            "admin",
            "ignore_idempotency_keys",
            "lookup_fault",
        ]
    )]
    pub proxy_to: Option<String>,

    /// With --proxy-to: the faults strike POSTs only (the requests that move money); GETs pass untouched.
    #[arg(long, requires = "proxy_to")]
    pub fault_posts_only: bool,

    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Injected faults (probabilities per request, 0..=1), reproducible from --seed.
#[derive(Debug, Args, Clone)]
pub struct FaultArgs {
    /// Every fault below at a modest rate (latency 20%, 429 5%, 5xx before 3%, 5xx after commit 3%,
    /// dropped connection after commit 3%, slow body 2%, malformed JSON 2%); explicit flags override.
    #[arg(long)]
    pub chaos: bool,
    /// Share of requests delayed by 5..50 ms (or by --fault-latency-ms).
    #[arg(long, value_name = "P")]
    pub fault_latency: Option<f64>,
    /// How long --fault-latency holds a request, in milliseconds, instead of 5..50 ms at random. Through
    /// --proxy-to, a request held on its way: it still reaches the provider that much later, whether or not
    /// the client waited.
    #[arg(long, value_name = "MS", requires = "fault_latency", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub fault_latency_ms: Option<u64>,
    /// Share answered 429 rate_limited (half with Retry-After, half without).
    #[arg(long, value_name = "P")]
    pub fault_rate_limit: Option<f64>,
    /// A real rate limit: requests beyond this many per second get 429 with Retry-After: 1.
    #[arg(long, value_name = "RPS")]
    pub fault_max_rps: Option<u32>,
    /// Share answered 500 before the operation runs.
    #[arg(long, value_name = "P")]
    pub fault_error_before: Option<f64>,
    /// Share answered 500 after the operation committed.
    #[arg(long, value_name = "P")]
    pub fault_error_after: Option<f64>,
    /// Share whose connection is dropped after the operation committed.
    #[arg(long, value_name = "P")]
    pub fault_drop_after: Option<f64>,
    /// Share whose body is trickled out slowly.
    #[arg(long, value_name = "P")]
    pub fault_slow_body: Option<f64>,
    /// Share answered with truncated JSON (after the commit, for a POST).
    #[arg(long, value_name = "P")]
    pub fault_malformed: Option<f64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agents in the in-process sandbox.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,

    /// Sandbox seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Good pending payouts the demo writes (four bad rows are added to show the rejects table).
    #[arg(long, default_value_t = 200)]
    pub payouts: usize,

    /// Escrow bounties the demo writes (a create, then a release or a dispute, each).
    #[arg(long, default_value_t = 10)]
    pub bounties: usize,
}

/// `--lookup-fault`: how the sandbox garbles lookups by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFaultArg {
    Garble,
    IgnoreFilter,
}

fn parse_lookup_fault(s: &str) -> Result<LookupFaultArg, String> {
    match s {
        "garble" => Ok(LookupFaultArg::Garble),
        "ignore-filter" => Ok(LookupFaultArg::IgnoreFilter),
        _ => Err(format!("{s:?} is not garble or ignore-filter")),
    }
}

#[derive(Debug, Args)]
pub struct PayoutsArgs {
    /// Namespace in every idempotency key (pfsync:<namespace>:<kind>:<id>). Keep it fixed per provider
    /// account and environment: changing it makes every operation look new to the provider.
    #[arg(long, env = "PFSYNC_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Source of payouts: a SQL query (DataFusion) producing payout_id, agent_id, amount_usd, reason
    /// [, requested_at, requested_by]. Tables are addressed by three-level name; more can be added with
    /// --register. A query may start with a `--` comment. [default: SELECT * FROM purpleflea.payouts.pending]
    #[arg(long, value_name = "SQL", allow_hyphen_values = true, conflicts_with = "payouts_sql_file")]
    pub payouts_sql: Option<String>,

    /// --payouts-sql from a file (e.g. one of sql/examples/), read before anything runs.
    #[arg(long, value_name = "FILE", value_parser = read_sql_file)]
    pub payouts_sql_file: Option<String>,

    /// Source of escrow actions: a SQL query producing action_id, action (create|release|dispute),
    /// escrow_id or create_action_id, buyer_agent_id, seller_agent_id, amount_usd, description, metadata,
    /// reason. A query may start with a `--` comment. [default: SELECT * FROM purpleflea.escrow.actions]
    #[arg(long, value_name = "SQL", allow_hyphen_values = true, conflicts_with = "actions_sql_file")]
    pub actions_sql: Option<String>,

    /// --actions-sql from a file (e.g. sql/examples/labeling_bounty.sql), read before anything runs.
    #[arg(long, value_name = "FILE", value_parser = read_sql_file)]
    pub actions_sql_file: Option<String>,

    /// Register another Delta table for the source queries, as NAME=PATH|URI (repeatable), e.g.
    /// labeling_completions=/delta/labeling_completions. NAME is letters, digits and _.
    #[arg(long = "register", value_name = "NAME=PATH|URI", value_parser = parse_register)]
    pub register: Vec<(String, Url)>,

    /// Safety brake: stop before new payouts and escrow funding in this run exceed this many USD (exact
    /// cents, not negative, e.g. 2500.00). Resolving an earlier attempt is not counted.
    #[arg(long, value_name = "USD", value_parser = parse_brake_usd)]
    pub max_total_usd: Option<Usd>,

    /// Safety brake: stop before more than this many new operations are sent in this run.
    #[arg(long, value_name = "N")]
    pub max_count: Option<u64>,

    /// Validate and print what would be paid; write nothing, send nothing. Takes an optional value
    /// (--dry-run=true|false), so a scheduler can pass it from a job parameter.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL",
          action = clap::ArgAction::Set, default_value = "false", hide_default_value = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,

    /// Operations per log commit pair (intents, then outcomes).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000), value_name = "N")]
    pub batch_size: u64,

    /// Payout requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024), value_name = "N")]
    pub concurrency: u64,

    /// Do not refuse agents missing from purpleflea.agents.wallets (the API still refuses unknown ones).
    #[arg(long)]
    pub no_agent_check: bool,

    /// Take only the operations whose id hashes to shard I of N (0-based, 0 <= I < N), for N parallel
    /// tasks, e.g. 0/4.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// An intent with no outcome younger than this many seconds may belong to a run that is still
    /// sending it: other runs leave it alone, and no run starts a send that late. Must be at least twice
    /// the longest send ([api] timeout_secs + max_elapsed_secs).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=7 * 86_400), value_name = "SECS")]
    pub in_flight_timeout: u64,
}

impl PayoutsArgs {
    /// The payouts source query, from --payouts-sql or --payouts-sql-file.
    pub fn payouts_query(&self) -> Option<String> {
        self.payouts_sql.clone().or_else(|| self.payouts_sql_file.clone())
    }

    /// The escrow actions source query, from --actions-sql or --actions-sql-file.
    pub fn actions_query(&self) -> Option<String> {
        self.actions_sql.clone().or_else(|| self.actions_sql_file.clone())
    }

    /// Whether any source query or extra table was given (`pfsync rules` takes none).
    pub fn names_a_source(&self) -> bool {
        self.payouts_query().is_some() || self.actions_query().is_some() || !self.register.is_empty()
    }
}

/// `--payouts-sql-file`, `--actions-sql-file`: the file's text, which must hold a statement. clap names the
/// flag and the path in front of the message.
pub fn read_sql_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let statement = text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with("--")
    });
    if !statement {
        return Err("it holds no SQL statement (only blank lines and comments)".into());
    }
    Ok(text)
}

/// `pfsync rules`: the payouts flags (the engine's), and the step's bounds.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    pub payouts: PayoutsArgs,

    #[command(flatten)]
    pub limits: RuleLimitArgs,
}

/// Bounds of the rules step (`pfsync rules`, and the rules step of `pfsync run`), as sync has its own.
#[derive(Debug, Args, Clone)]
pub struct RuleLimitArgs {
    /// Longest the rules step reads MLflow, every rule together; rules not decided by then are left to the
    /// next run (exit 5 when nothing worse happened), so a slow tracking server cannot hold `--follow`.
    #[arg(long, default_value_t = crate::payouts::rules::limits::DEFAULT_MAX_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS")]
    pub rules_max_secs: u64,

    /// Most MLflow requests one rule makes in a run (run searches, run reads, metric history pages); a
    /// rule that needs more is left undecided (exit 5) until its run_filter is narrowed or this is raised.
    #[arg(long, default_value_t = crate::payouts::rules::limits::DEFAULT_MAX_PAGES, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub rules_max_pages: u32,
}

pub use crate::operation::Shard;

/// `--shard I/N`. clap puts the flag and the value in front of the message.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let expected = "expected I/N with 0 <= I < N, e.g. 0/4";
    let (i, n) = text.split_once('/').ok_or_else(|| expected.to_string())?;
    let (index, count) = match (i.trim().parse::<u32>(), n.trim().parse::<u32>()) {
        (Ok(i), Ok(n)) => (i, n),
        _ => return Err(expected.to_string()),
    };
    if index >= count {
        return Err(format!("shard {index} of {count} does not exist: {expected}"));
    }
    Shard::new(index, count).ok_or_else(|| expected.to_string())
}

/// `--register NAME=PATH|URI`: a name the source queries can use, and the table's location.
pub fn parse_register(text: &str) -> Result<(String, Url), String> {
    let (name, location) = text.split_once('=').ok_or("expected NAME=PATH|URI")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("the name {name:?} must be letters, digits and _"));
    }
    let url = crate::tables::location_url(location)?;
    Ok((name.to_string(), url))
}

/// `--max-total-usd`: an exact amount, not negative.
pub fn parse_brake_usd(text: &str) -> Result<Usd, String> {
    let usd = Usd::parse(text).map_err(|e| e.to_string())?;
    if usd < Usd::ZERO {
        return Err(format!("{usd} is negative"));
    }
    Ok(usd)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Step {
    Sync,
    /// Metric rules (as `pfsync rules`); put it before payouts.
    Rules,
    Payouts,
    Reconcile,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Steps to run, in this order (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sync,payouts,reconcile")]
    pub steps: Vec<Step>,

    /// Keep running: the steps again every --interval seconds (an always-on job polling its feeds and
    /// rules). SIGTERM or Ctrl-C finishes the batch in flight and exits 0; a failing pass is logged and the
    /// next one runs, except for a usage error (exit 2).
    #[arg(long)]
    pub follow: bool,

    /// With --follow: seconds between the end of one pass and the start of the next.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS", requires = "follow")]
    pub interval: u64,

    #[command(flatten)]
    pub payouts: PayoutsArgs,

    #[command(flatten)]
    pub rules: RuleLimitArgs,

    #[command(flatten)]
    pub reconcile: ReconcileFlags,
}

/// Reconcile flags shared by `pfsync reconcile` and `pfsync run`.
#[derive(Debug, Args, Clone)]
pub struct ReconcileFlags {
    /// An operation with no final outcome older than this many seconds is a stale_unknown finding.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub stale_after_secs: u64,

    /// Write the reconciliation report (self-contained HTML) here.
    #[arg(long, value_name = "PATH.html")]
    pub report: Option<std::path::PathBuf>,

    /// Finding classes that make the run exit 8 (comma-separated) [default: every finding class].
    #[arg(long, value_name = "CLASS,...", value_delimiter = ',')]
    pub fail_on: Vec<String>,

    /// Rebuild the reconcile state (purpleflea.payouts.classification and the totals) from the whole payout
    /// log and ledger, instead of reading only what was appended since the last run. A run rebuilds by itself
    /// when it has no state yet or cannot read what changed.
    #[arg(long)]
    pub full: bool,

    /// Memory a rebuild's queries may hold, in MiB; beyond it they spill to the OS temporary directory
    /// (TMPDIR).
    #[arg(long, default_value_t = crate::reconcile::limits::DEFAULT_MEMORY_LIMIT_MIB, value_name = "MIB",
          value_parser = clap::value_parser!(u32).range(64..))]
    pub memory_limit_mib: u32,

    /// Passes a rebuild makes over buckets of operations, each with a fraction of the memory one pass needs
    /// (default: as many as the payout log's size and --memory-limit-mib call for, one for a small history).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::reconcile::passes::MAX_PASSES as i64))]
    pub rebuild_passes: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Namespace whose idempotency keys are ours (as given to `pfsync payouts`).
    #[arg(long, env = "PFSYNC_NAMESPACE", default_value = "default")]
    pub namespace: String,

    #[command(flatten)]
    pub flags: ReconcileFlags,

    /// Skip the sync of transactions and wallets that normally comes first.
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One operation (payout_id or action_id): its events in the payout log, and why it waits (and from
    /// when a rerun acts on it), as a run with --in-flight-timeout would see it.
    #[arg(value_name = "OPERATION_ID")]
    pub operation_id: Option<String>,
    /// Also list this many operations that are not final (unknown or in flight).
    #[arg(long, default_value_t = 20)]
    pub show: usize,

    /// How the status is printed: text tables, or one JSON object {"warehouse", "summary": [...],
    /// "not_final": [...]}.
    #[arg(long, visible_alias = "format", value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// The in-flight timeout the runs use (as `pfsync payouts --in-flight-timeout`): an intent younger
    /// than this may still be being sent.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=7 * 86_400), value_name = "SECS")]
    pub in_flight_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The operation (payout_id or action_id). Without it: every operation that waits for a person.
    #[arg(value_name = "OPERATION_ID")]
    pub operation_id: Option<String>,

    /// What a person decided about OPERATION_ID. Without it: that operation's evidence.
    #[arg(value_enum, requires = "operation_id")]
    pub decision: Option<ResolveDecision>,

    /// With `completed`: the provider reference it made (a payment's pay_ reference or an escrow lock's entry
    /// id in the payer's ledger; a transaction id of the seed's API). It must exist in pfsync's copy, fit the
    /// operation (kind, amount, payee where the record names one) and be no other operation's outcome.
    #[arg(long, value_name = "REF")]
    pub tx: Option<String>,

    /// Who decides (recorded as decided_by). Required with a decision.
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,

    /// Why (recorded as note). Required with a decision.
    #[arg(long, value_name = "WHY")]
    pub note: Option<String>,

    /// An intent younger than this many seconds may still be being sent: no decision is taken on it (use the
    /// value given to `pfsync payouts`).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=7 * 86_400), value_name = "SECS")]
    pub in_flight_timeout: u64,
}

/// A person's decision about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResolveDecision {
    /// It ran: --tx names what it made. Final; never sent again.
    Completed,
    /// Its latest attempt never ran: the next `pfsync payouts` sends it as a new attempt.
    NeverRan,
    /// It is not to be paid. Final; nothing is sent.
    Abandoned,
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Keep files that any version of the last N hours needs. Below 168 (7 days) needs --i-know; tables
    /// that declare a longer delta.deletedFileRetentionDuration (the audit tables: 365 days) keep theirs.
    #[arg(long, default_value_t = 168, value_name = "HOURS")]
    pub retention_hours: u64,

    /// Allow a retention below 7 days (time travel and running readers may break).
    #[arg(long)]
    pub i_know: bool,

    /// Report what vacuum would delete without deleting (compaction and checkpoint still run).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT count(*) FROM purpleflea.agents.wallets". It may start with a `--` comment.
    #[arg(allow_hyphen_values = true)]
    pub query: String,

    /// Print at most this many rows [default: 100 with --output table, every row with json and arrow].
    #[arg(long)]
    pub max_rows: Option<usize>,

    /// How the result is printed on stdout.
    #[arg(long, visible_alias = "format", value_enum, default_value_t = SqlFormat::Table)]
    pub output: SqlFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// A text table, then the row count.
    Table,
    /// A JSON array with one object per row (every column written, nulls as null; DECIMAL as an exact
    /// decimal number, timestamps as RFC 3339 text). Nothing else is written on stdout.
    Json,
    /// An Arrow IPC stream with the result's exact types (DECIMAL(18,2) stays exact cents), for programs:
    /// pyarrow.ipc.open_stream, polars, DuckDB. Nothing else is written on stdout.
    Arrow,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shard_register_and_brake_values_parse_to_their_types() {
        assert_eq!(parse_shard("0/4"), Ok(Shard::new(0, 4).unwrap()));
        assert_eq!(parse_shard(" 3 / 4 "), Ok(Shard::new(3, 4).unwrap()));
        for bad in ["4/4", "1/0", "0/0", "-1/4", "1", "a/b", "1/4/2", ""] {
            assert!(parse_shard(bad).is_err(), "{bad:?}");
        }
        let (name, url) = parse_register("labels=s3://bucket/labels").unwrap();
        assert_eq!((name.as_str(), url.as_str()), ("labels", "s3://bucket/labels"));
        for bad in ["labels", "=s3://b/l", "a-b=s3://b/l", "labels=", "labels=ftp://h/l"] {
            assert!(parse_register(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_brake_usd("2500.5").map(Usd::cents), Ok(250_050));
        assert_eq!(parse_brake_usd("0"), Ok(Usd::ZERO));
        for bad in ["-0.01", "1.001", "NaN", "lots", "", "1e20"] {
            assert!(parse_brake_usd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dry_run_takes_an_optional_value_so_a_job_parameter_can_set_it() {
        let dry = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Payouts(p)) => Ok(p.dry_run),
            Ok(Command::Run(r)) => Ok(r.payouts.dry_run),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(dry(&["pfsync", "payouts"]), Ok(false));
        assert_eq!(dry(&["pfsync", "payouts", "--dry-run"]), Ok(true));
        assert_eq!(dry(&["pfsync", "payouts", "--dry-run=true"]), Ok(true));
        assert_eq!(dry(&["pfsync", "run", "--steps=payouts", "--dry-run=false"]), Ok(false));
        // The value is attached with `=`: a following word is never swallowed as one.
        assert_eq!(dry(&["pfsync", "payouts", "--dry-run", "--max-count=3"]), Ok(true));
        assert!(dry(&["pfsync", "payouts", "--dry-run=maybe"]).is_err());
    }

    #[test]
    fn there_is_no_api_key_flag() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("--api-key "));
        assert!(Cli::try_parse_from(["pfsync", "--api-key", "pf_live_x", "sync"]).is_err());
    }
}
