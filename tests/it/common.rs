//! Shared set-up: a sandbox, a client for it, a temp warehouse; the binary as a child process; the
//! exactly-once oracle; barriers; and what a test does when an optional component is missing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write as _};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use pfsync::http::{ClientConfig, Repeat, RetryPolicy};
use pfsync::payouts::{PayoutError, PayoutOptions, PayoutReport};
use pfsync::progress::Progress;
use pfsync::provider::Provider;
use pfsync::provider::seed::SeedClient as Client;
use pfsync::sandbox::{DEFAULT_SANDBOX_KEY, Sandbox, SandboxConfig, default_key};
use pfsync::tables::{CommitInfo, Warehouse};

pub async fn sandbox(agents: usize) -> Sandbox {
    Sandbox::start(SandboxConfig::for_tests(agents)).await.expect("sandbox starts")
}

/// A client with quick retries, so fault tests finish fast.
pub fn client(sb: &Sandbox) -> Client {
    seed_client(client_config(sb))
}

/// The seed's client with these settings against their base URL (the faucet there too). The sandbox keeps
/// keys, as the seed's contract declares: keyed POSTs may be repeated.
pub fn seed_client(cfg: ClientConfig) -> Client {
    let faucet = cfg.base_url.clone();
    Client::new(cfg, faucet, Repeat::KeyedPosts).expect("client")
}

pub fn client_config(sb: &Sandbox) -> ClientConfig {
    let mut cfg = ClientConfig::new(sb.base_url(), default_key());
    cfg.timeout = Duration::from_secs(5);
    cfg.retry = RetryPolicy {
        max_attempts: 6,
        max_elapsed: Duration::from_secs(20),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    cfg
}

pub fn warehouse(dir: &tempfile::TempDir) -> Warehouse {
    Warehouse::local(dir.path()).expect("warehouse")
}

pub fn usd(s: &str) -> pfsync::money::Usd {
    pfsync::money::Usd::parse(s).expect("amount")
}

/// One payouts run in this process (step `payouts`, a run id of its own) against `provider`.
pub async fn pay_with<P: Provider>(
    provider: &P,
    wh: &Warehouse,
    opts: &PayoutOptions,
) -> Result<PayoutReport, PayoutError> {
    let commit = CommitInfo { run_id: uuid::Uuid::now_v7().to_string(), step: "payouts" };
    pfsync::payouts::run_payouts(provider, wh, &commit, opts, &Progress::hidden()).await
}

/// A row in purpleflea.ops.runs, as the binary writes one per step: `step` under `run_id`, ending now.
pub async fn record_step(wh: &Warehouse, run_id: &str, step: &'static str, rows: i64, exit_code: i32) {
    let now = chrono::Utc::now();
    let record = pfsync::ops::RunRecord {
        step,
        started_at: now,
        finished_at: now,
        rows: Some(rows),
        amount: None,
        counts: Default::default(),
        exit_code,
    };
    let commit = pfsync::tables::CommitInfo { run_id: run_id.to_string(), step };
    pfsync::ops::record(wh, &commit, &record).await.expect("record the step");
}

/// The single number a `SELECT count(*) ...` returns.
pub async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> i64 {
    let b = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.expect("collect");
    b[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().expect("a count").value(0)
}

// ---------------------------------------------------------------------------------------------------------
// The binary as a child process.

/// What the binary reads from its environment. A test's child starts with none of them from the shell that
/// runs the tests (a developer's key, config, warehouse, log level, test hook, MLflow or Databricks target
/// would change what it does): each test sets what it means.
const ENVIRONMENT_READ_BY_PFSYNC: &[&str] = &[
    "PURPLEFLEA_API_KEY",
    "RUST_LOG",
    "PFSYNC_CONFIG",
    "PFSYNC_WAREHOUSE",
    "PFSYNC_API_URL",
    "PFSYNC_FAUCET_URL",
    "PFSYNC_API_KEY_FILE",
    "PFSYNC_NAMESPACE",
    "PFSYNC_CRASH_AT",
    "PFSYNC_PAUSE_AT",
    "PFSYNC_SIGNAL_AT",
    "PFSYNC_PROGRESS_SECS",
    "PFSYNC_MCP_TOKEN",
    "PFSYNC_MCP_CLIENT",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "UNITY_WORKSPACE_URL",
    "AWS_S3_LOCKING_PROVIDER",
];

/// `pfsync`, the binary this build made, with a clean environment (see [`ENVIRONMENT_READ_BY_PFSYNC`]).
pub fn pfsync() -> Command {
    pfsync_at(env!("CARGO_BIN_EXE_pfsync"))
}

/// The same for another copy of the binary (a frozen one, or one another user can run).
pub fn pfsync_at(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    for var in ENVIRONMENT_READ_BY_PFSYNC {
        c.env_remove(var);
    }
    c
}

/// The flags tests give the binary again and again. Every one is global, so the order does not matter.
pub trait PfsyncCommand {
    /// `--api-url` and `--faucet-url` at `url`, and `key` as `PURPLEFLEA_API_KEY`.
    fn provider(&mut self, url: &str, key: &str) -> &mut Self;
    /// The test's sandbox, with its key.
    fn sandbox(&mut self, sb: &Sandbox) -> &mut Self;
    /// The client's bounds: `--timeout-secs` per request and `--max-elapsed-secs` of retries.
    fn client_budget(&mut self, timeout_secs: impl ToString, max_elapsed_secs: impl ToString) -> &mut Self;
    fn warehouse(&mut self, path: impl AsRef<OsStr>) -> &mut Self;
    fn config(&mut self, path: impl AsRef<OsStr>) -> &mut Self;
    /// Run as if `later` had passed on the machine's clock (see [`Later`]).
    fn later(&mut self, later: &Later) -> &mut Self;
}

/// The machine's clock moved `secs` on: for an in-process run that should happen "later" (past the
/// in-flight timeout or a send's settle time) without waiting.
pub fn later_clock(secs: i64) -> std::sync::Arc<dyn pfsync::clock::Clock> {
    std::sync::Arc::new(pfsync::clock::OffsetClock { offset: chrono::Duration::seconds(secs) })
}

/// How far past the machine's clock a test's binaries believe they run: a test that would wait out an
/// in-flight timeout moves this on instead (`PFSYNC_TEST_CLOCK_OFFSET_SECS`, read only by test builds).
/// It only moves forward, so every later run of the test sees time as having passed.
#[derive(Debug, Default)]
pub struct Later(std::sync::atomic::AtomicU64);

impl Later {
    /// Let `secs` pass for every run from now on.
    pub fn pass(&self, secs: u64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn secs(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PfsyncCommand for Command {
    fn provider(&mut self, url: &str, key: &str) -> &mut Self {
        self.args(["--api-url", url, "--faucet-url", url]).env("PURPLEFLEA_API_KEY", key)
    }

    fn sandbox(&mut self, sb: &Sandbox) -> &mut Self {
        self.provider(sb.base_url().as_str(), DEFAULT_SANDBOX_KEY)
    }

    fn client_budget(&mut self, timeout_secs: impl ToString, max_elapsed_secs: impl ToString) -> &mut Self {
        self.arg("--timeout-secs")
            .arg(timeout_secs.to_string())
            .arg("--max-elapsed-secs")
            .arg(max_elapsed_secs.to_string())
    }

    fn warehouse(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.arg("--warehouse").arg(path)
    }

    fn config(&mut self, path: impl AsRef<OsStr>) -> &mut Self {
        self.arg("--config").arg(path)
    }

    fn later(&mut self, later: &Later) -> &mut Self {
        self.env(pfsync::clock::TEST_OFFSET_ENV, later.secs().to_string())
    }
}

/// `pfsync init --warehouse <wh>`, as a user runs it once before the first run (every other command but
/// `demo` refuses a warehouse with none of pfsync's tables), unless the payout log is there already.
pub fn init(wh: impl AsRef<std::path::Path>) {
    let wh = wh.as_ref();
    if wh.join("purpleflea/payouts/log/_delta_log").is_dir() {
        return;
    }
    let out = pfsync().arg("init").warehouse(wh).output().expect("spawn pfsync init");
    assert!(out.status.success(), "pfsync init: {}", text(&out));
}

/// Stdout, then stderr, as one text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `cmd`'s output, from an async test on the multi-thread runtime (its workers go on meanwhile).
pub fn output_in_place(cmd: &mut Command) -> Output {
    tokio::task::block_in_place(|| cmd.output().expect("spawn"))
}

/// `Some(status)` once `child` exits, `None` if it still runs after `limit` (it is left running).
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            return Some(s);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `cmd` to the end: `Ok` with its output, or `Err` with what it wrote before it was killed (SIGKILL)
/// for still running after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output, Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // Read both pipes while waiting: a child that fills one would block and look like one that hangs.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let finished = wait_within(&mut child, limit);
    if finished.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    let out = Output { status, stdout: stdout.join().expect("stdout"), stderr: stderr.join().expect("stderr") };
    if finished.is_some() { Ok(out) } else { Err(out) }
}

// ---------------------------------------------------------------------------------------------------------
// Barriers: wait for a state, never for a time.

/// Block until `ready()`, checking every 10 ms; fail after `limit` with `what`.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_until`] for async tests: the runtime's other tasks (the sandbox among them) run meanwhile.
pub async fn until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// The exactly-once oracle.

/// How the oracle tells which payout a sandbox transaction pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidBy {
    /// The idempotency key pfsync sent, `pfsync:default:payout:<payout_id>`: the ids are payout ids.
    Key,
    /// The reference the sandbox keeps (a test payout's own reason): for a provider that ignores or forgets
    /// keys. The ids are references.
    Reference,
}

/// The sandbox's own ledger, counted: transactions per idempotency key, or per reference.
pub fn paid_per(sb: &Sandbox, by: PaidBy) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for t in sb.ledger().transactions() {
        let name = match by {
            PaidBy::Key => &t.idempotency_key,
            PaidBy::Reference => &t.reference,
        };
        if let Some(n) = name {
            *out.entry(n.clone()).or_default() += 1;
        }
    }
    out
}

/// The key pfsync sends for payout `id` (namespace `default`).
pub fn payout_key(id: &str) -> String {
    format!("pfsync:default:payout:{id}")
}

/// Each of `ids` was paid exactly once at the sandbox (`why`: at which point of the test). Returns the
/// ledger's counts, for a caller that checks more (that nothing else was paid, say).
pub fn assert_paid_once<S: AsRef<str>>(sb: &Sandbox, by: PaidBy, ids: &[S], why: &str) -> HashMap<String, usize> {
    let paid = paid_per(sb, by);
    for id in ids {
        let id = id.as_ref();
        let name = match by {
            PaidBy::Key => payout_key(id),
            PaidBy::Reference => id.to_string(),
        };
        let n = paid.get(&name).copied().unwrap_or(0);
        assert_eq!(n, 1, "{id} paid exactly once ({why}): paid {n} times");
    }
    paid
}

// ---------------------------------------------------------------------------------------------------------
// Optional components.

/// An optional component a test needs and this machine lacks: the wheel, MLflow, the MCP Python SDK, the
/// test bed of Purple Flea's services.
#[derive(Debug, Clone)]
pub struct Missing {
    /// What is not here: "no MLflow at ~/.cache/pfsync-mlflow-venv".
    pub what: String,
    /// What to install or set to have it.
    pub fix: String,
    /// The `PFSYNC_REQUIRE_*` variable that makes the component required outside CI.
    pub require: &'static str,
}

impl Missing {
    /// Under CI (`CI=true`) or with [`Missing::require`] set, the test fails here and says what to install
    /// or set. Elsewhere it writes a skip line to stderr and returns `None`, for
    /// `let Some(x) = ... else { return };`.
    pub fn skip_or_fail<T>(&self) -> Option<T> {
        let (what, fix, require) = (&self.what, &self.fix, self.require);
        if let Some(why) = required_by(require) {
            panic!("{what}; {why} requires it: {fix}");
        }
        let test = std::thread::current().name().unwrap_or("test").to_string();
        // Past the harness's capture, which shows what a passing test printed only when it fails.
        let _ = writeln!(std::io::stderr(), "SKIP {test}: {what} ({fix}; CI=true or {require}=1 makes this a failure)");
        None
    }
}

/// The setting that makes a missing component a failure: `require` set (not empty, `0` or `false`), or
/// `CI=true`, as CI services set it.
fn required_by(require: &str) -> Option<String> {
    let on = |v: &str| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false");
    if let Ok(v) = std::env::var(require)
        && on(&v)
    {
        return Some(format!("{require}={v}"));
    }
    match std::env::var("CI") {
        Ok(v) if v.eq_ignore_ascii_case("true") || v == "1" => Some(format!("CI={v}")),
        _ => None,
    }
}
