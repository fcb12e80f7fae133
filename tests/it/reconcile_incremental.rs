//! Reconcile reads only what changed, and gives the answer a rebuild from the whole history gives: for random
//! histories (new operations, events that correct earlier ones, a person's never_ran and abandoned,
//! transactions that arrive late or before their operation, duplicates, keyless repeats, keys nobody logged,
//! time passing, compaction in between)
//! the classification, the totals and the findings of a run that reads what changed equal those of a
//! `--full` rebuild over the same data, row for row, after every step, and so do those of a rebuild in passes
//! over buckets of operations (how a large history is rebuilt in bounded memory). And a run killed part way
//! leaves a state the next run completes to the same answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pfsync::money::Usd;
use pfsync::operation::OpKind;
use pfsync::payouts::log::{LogEvent, append_events};
use pfsync::payouts::state::Event;
use pfsync::provider::records::TxKind;
use pfsync::reconcile::state::{ClassificationRow, ImpliedBalance};
use pfsync::reconcile::{DailyTotal, ReconcileOptions, ReconcileReport, reconcile_at};
use pfsync::sync::rows::TransactionRow;
use pfsync::tables::row::Row;
use pfsync::tables::{
    CLASSIFICATION, CommitInfo, DAILY_TOTALS, IMPLIED_BALANCES, PAYOUT_LOG, TRANSACTIONS, TableSpec, Warehouse,
    open_or_create, sql_context,
};
use proptest::prelude::*;

const KINDS: [OpKind; 4] = [OpKind::Payout, OpKind::EscrowCreate, OpKind::EscrowRelease, OpKind::Payout];
const OPS: u8 = 10;
/// Ids a completed event may name: some arrive as transactions (keyed or not), some never.
const TX_POOL: u8 = 24;

fn usd(cents: i64) -> Usd {
    Usd::from_cents(cents).unwrap()
}

fn kind_of(op: u8) -> OpKind {
    KINDS[op as usize % KINDS.len()]
}

fn key_of(op: u8) -> String {
    format!("pfsync:default:{}:op-{op}", pfsync::tables::row::Text::as_str(kind_of(op)))
}

/// What the log says of an operation: the same in every one of its events.
fn agent_of(op: u8) -> String {
    format!("agent-{}", op % 3)
}

fn amount_of(op: u8) -> Usd {
    usd(100 * (1 + i64::from(op % 3)))
}

fn reason_of(op: u8) -> String {
    format!("r{}", op % 2)
}

#[derive(Debug, Clone)]
enum Key {
    /// The key of one of the operations (logged already, later, or never).
    Op(u8),
    /// Ours, no operation's.
    Ghost(u8),
    /// Another namespace's.
    Other(u8),
    None,
}

#[derive(Debug, Clone)]
enum Action {
    Log {
        op: u8,
        event: Event,
        attempt: i32,
        tx: Option<u8>,
        minutes_ago: i64,
    },
    /// A provider transaction; its id is `tx-<n>` for the n-th one written, so ids named by completed events
    /// arrive now, later, or never.
    Tx {
        key: Key,
        kind: TxKind,
        agent: u8,
        amount: u8,
        reference: u8,
        like_its_op: bool,
        minutes_ago: i64,
    },
}

#[derive(Debug, Clone)]
struct Step {
    actions: Vec<Action>,
    /// Time passing before the step's runs.
    minutes: i64,
    /// Compact, checkpoint and vacuum every table of the incremental warehouse before its run.
    maintain: bool,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Intent),
        3 => Just(Event::Completed),
        1 => Just(Event::Rejected),
        2 => Just(Event::Unknown),
        1 => Just(Event::NeverRan),
        1 => Just(Event::Abandoned),
    ]
}

fn tx_kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![6 => Just(TxKind::Payout), 1 => Just(TxKind::EscrowLock), 1 => Just(TxKind::EscrowRelease), 1 => Just(TxKind::Faucet)]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        6 => (0..OPS).prop_map(Key::Op),
        1 => (0..3u8).prop_map(Key::Ghost),
        1 => (0..3u8).prop_map(Key::Other),
        2 => Just(Key::None),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..OPS, event(), 1..=2i32, prop::option::of(0..TX_POOL), 0..150i64).prop_map(
            |(op, event, attempt, tx, minutes_ago)| Action::Log { op, event, attempt, tx, minutes_ago }
        ),
        2 => (key(), tx_kind(), 0..3u8, 0..3u8, 0..2u8, prop::bool::weighted(0.7), 0..150i64).prop_map(
            |(key, kind, agent, amount, reference, like_its_op, minutes_ago)| Action::Tx {
                key, kind, agent, amount, reference, like_its_op, minutes_ago
            }
        ),
    ]
}

fn history() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (prop::collection::vec(action(), 0..16), 0..90i64, prop::bool::weighted(0.15))
            .prop_map(|(actions, minutes, maintain)| Step { actions, minutes, maintain }),
        1..6,
    )
}

/// The rows one step appends: log events and transactions, the same for both warehouses.
fn rows_of(step: &Step, now: DateTime<Utc>, txs_so_far: &mut u32) -> (Vec<LogEvent>, Vec<TransactionRow>) {
    let mut events = Vec::new();
    let mut txs = Vec::new();
    for a in &step.actions {
        match a {
            Action::Log { op, event, attempt, tx, minutes_ago } => {
                let at = now - Duration::minutes(*minutes_ago);
                events.push(LogEvent {
                    agent_id: Some(agent_of(*op)),
                    amount_usd: Some(amount_of(*op)),
                    reason: Some(reason_of(*op)),
                    tx_id: (*event == Event::Completed).then(|| tx.map(|t| format!("tx-{t}"))).flatten(),
                    decided_by: (matches!(event, Event::NeverRan | Event::Abandoned)).then(|| "ops@example.com".into()),
                    ..LogEvent::new(format!("op-{op}"), kind_of(*op), *event, *attempt, key_of(*op), "history", at)
                });
            }
            Action::Tx { key, kind, agent, amount, reference, like_its_op, minutes_ago } => {
                let at = now - Duration::minutes(*minutes_ago);
                let (key, agent, amount, reference) = match (key, like_its_op) {
                    (Key::Op(op), true) => (Some(key_of(*op)), agent_of(*op), amount_of(*op), Some(reason_of(*op))),
                    (k, _) => (
                        match k {
                            Key::Op(op) => Some(key_of(*op)),
                            Key::Ghost(g) => Some(format!("pfsync:default:payout:ghost-{g}")),
                            Key::Other(g) => Some(format!("pfsync:other:payout:op-{g}")),
                            Key::None => None,
                        },
                        format!("agent-{agent}"),
                        usd(100 * (1 + i64::from(*amount))),
                        Some(format!("r{reference}")),
                    ),
                };
                txs.push(TransactionRow {
                    tx_id: format!("tx-{txs_so_far}"),
                    kind: if matches!(key, Some(ref k) if k.starts_with("pfsync:default:payout")) {
                        TxKind::Payout
                    } else {
                        *kind
                    },
                    agent_id: agent,
                    counterparty_agent_id: None,
                    amount_usd: amount,
                    idempotency_key: key,
                    reference,
                    created_at: at,
                    created_date: at.date_naive(),
                    synced_at: now,
                });
                *txs_so_far += 1;
            }
        }
    }
    (events, txs)
}

async fn append(wh: &Warehouse, events: &[LogEvent], txs: &[TransactionRow]) {
    let commit = CommitInfo { run_id: "history".into(), step: "payouts" };
    if !events.is_empty() {
        append_events(open_or_create(wh, &PAYOUT_LOG, &commit).await.unwrap(), events, &commit).await.unwrap();
    }
    if !txs.is_empty() {
        open_or_create(wh, &TRANSACTIONS, &commit)
            .await
            .unwrap()
            .write(vec![TransactionRow::to_batch(txs).unwrap()])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .unwrap();
    }
}

/// Every row of one of reconcile's tables, with what a run stamps on it (versions, run ids) left out, in order.
async fn table_rows<R: Row, K: Ord>(
    ctx: &datafusion::prelude::SessionContext,
    spec: &'static TableSpec,
    strip: impl Fn(R) -> (K, R),
) -> Vec<R> {
    let Ok(df) = ctx.sql(&format!("SELECT * FROM {}", spec.name)).await else { return Vec::new() };
    let batches = df.collect().await.unwrap();
    let mut rows: Vec<(K, R)> = R::from_batches(&batches).unwrap().into_iter().map(strip).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter().map(|(_, r)| r).collect()
}

/// What a run leaves and says, with what differs between any two runs (run ids, versions) left out.
#[derive(Debug, PartialEq)]
pub struct Answer {
    classification: Vec<ClassificationRow>,
    balances: Vec<ImpliedBalance>,
    daily: Vec<DailyTotal>,
    counts: BTreeMap<&'static str, u64>,
    operations: u64,
    provider_transactions: u64,
    matched: Usd,
    findings: Vec<(String, String, Option<DateTime<Utc>>, String)>,
}

pub async fn answer(wh: &Warehouse, r: &ReconcileReport) -> Answer {
    let ctx = sql_context(wh).await.unwrap();
    let classification = table_rows(&ctx, &CLASSIFICATION, |r: ClassificationRow| {
        let r = ClassificationRow { log_version: 0, transactions_version: 0, ..r };
        ((r.operation_id.clone(), r.tx_ids.clone(), r.repeats_operation_id.clone()), r)
    })
    .await;
    let balances = table_rows(&ctx, &IMPLIED_BALANCES, |r: ImpliedBalance| {
        (r.agent_id.clone(), ImpliedBalance { computed_run_id: String::new(), ..r })
    })
    .await;
    let daily = table_rows(&ctx, &DAILY_TOTALS, |r: DailyTotal| {
        ((r.day, r.kind.as_str()), DailyTotal { computed_run_id: String::new(), ..r })
    })
    .await;
    Answer {
        classification,
        balances,
        daily,
        counts: r.counts.clone(),
        operations: r.operations,
        provider_transactions: r.provider_transactions,
        matched: r.matched_usd,
        findings: r
            .rows
            .iter()
            .map(|f| (f.key.clone(), f.first_seen_run.clone(), f.resolved_at, f.finding.detail.clone()))
            .collect(),
    }
}

async fn run(wh: &Warehouse, run_id: &str, full: bool, now: DateTime<Utc>) -> ReconcileReport {
    run_in(wh, run_id, full, None, now).await
}

/// `run`, a rebuild making `passes` passes over buckets of operations (`None`: as many as the size calls for).
async fn run_in(wh: &Warehouse, run_id: &str, full: bool, passes: Option<u32>, now: DateTime<Utc>) -> ReconcileReport {
    let opts = ReconcileOptions { full, passes, ..ReconcileOptions::default() };
    reconcile_at(wh, &CommitInfo { run_id: run_id.into(), step: "reconcile" }, &opts, now).await.unwrap()
}

/// Also checks a rebuild in `passes` passes over buckets of operations against the one in one pass.
async fn incremental_equals_full(steps: Vec<Step>, passes: u32) -> Result<(), TestCaseError> {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (inc, full) = (crate::common::warehouse(&a), crate::common::warehouse(&b));
    let in_passes = crate::common::warehouse(&c);
    let mut now = Utc.with_ymd_and_hms(2026, 3, 1, 23, 0, 0).unwrap();
    let mut txs = 0;
    for (i, step) in steps.iter().enumerate() {
        now += Duration::minutes(step.minutes);
        let (events, new_txs) = rows_of(step, now, &mut txs);
        append(&inc, &events, &new_txs).await;
        append(&full, &events, &new_txs).await;
        append(&in_passes, &events, &new_txs).await;
        if step.maintain {
            let opts = pfsync::maintain::MaintainOptions { retention_hours: 168, i_know: false, dry_run: false };
            let commit = CommitInfo { run_id: "maintain".into(), step: "maintain" };
            pfsync::maintain::maintain_all(&inc, &opts, &commit).await.unwrap();
        }
        let run_id = format!("run-{i}");
        let r_inc = run(&inc, &run_id, false, now).await;
        let r_full = run_in(&full, &run_id, true, Some(1), now).await;
        let r_passes = run_in(&in_passes, &run_id, true, Some(passes), now).await;
        prop_assert!(r_full.rebuilt.is_some());
        if i > 0 {
            prop_assert_eq!(&r_inc.rebuilt, &None, "step {} read what changed", i);
        }
        let (x, y) = (answer(&inc, &r_inc).await, answer(&full, &r_full).await);
        let z = answer(&in_passes, &r_passes).await;
        prop_assert_eq!(&z, &y, "step {}: {} passes (left) against one (right)", i, passes);
        prop_assert_eq!(x, y, "step {}: incremental (left) against full (right)", i);
    }
    Ok(())
}

proptest! {
    // Each case writes two warehouses and runs reconcile twice per step.
    #![proptest_config(ProptestConfig { max_shrink_iters: 64, ..ProptestConfig::with_cases(12) })]

    #[test]
    fn a_run_that_reads_what_changed_classifies_as_a_rebuild_does(steps in history(), passes in 2u32..6) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(incremental_equals_full(steps, passes))?;
    }
}

/// A history with something of every kind, all of it final or long stale (so the answer does not depend on
/// the second a run starts at): `ops` operations from `first`, each completed, rejected or unknown; their
/// transactions, one of them twice; a keyless repeat and a key nobody logged.
fn settled_history(
    first: u8,
    ops: u8,
    now: DateTime<Utc>,
    txs_so_far: &mut u32,
) -> (Vec<LogEvent>, Vec<TransactionRow>) {
    let mut actions = Vec::new();
    for op in first..first + ops {
        let outcome = [Event::Completed, Event::Completed, Event::Rejected, Event::Unknown][op as usize % 4];
        actions.push(Action::Log { op, event: Event::Intent, attempt: 1, tx: None, minutes_ago: 240 });
        actions.push(Action::Log { op, event: outcome, attempt: 1, tx: None, minutes_ago: 239 });
        if outcome == Event::Completed {
            let tx = Action::Tx {
                key: Key::Op(op),
                kind: TxKind::Payout,
                agent: 0,
                amount: 0,
                reference: 0,
                like_its_op: true,
                minutes_ago: 239,
            };
            if op == first {
                actions.push(tx.clone());
            }
            actions.push(tx);
        }
    }
    actions.push(Action::Tx {
        key: Key::None,
        kind: TxKind::Payout,
        agent: first % 3,
        amount: first % 3,
        reference: first % 2,
        like_its_op: false,
        minutes_ago: 200,
    });
    actions.push(Action::Tx {
        key: Key::Ghost(first),
        kind: TxKind::Payout,
        agent: 1,
        amount: 1,
        reference: 1,
        like_its_op: false,
        minutes_ago: 200,
    });
    rows_of(&Step { actions, minutes: 0, maintain: false }, now, txs_so_far)
}

/// The state's three tables, as [`answer`] compares them.
async fn state_of(wh: &Warehouse) -> (Vec<ClassificationRow>, Vec<ImpliedBalance>, Vec<DailyTotal>) {
    let a = answer(wh, &ReconcileReport::default()).await;
    (a.classification, a.balances, a.daily)
}

/// `pfsync reconcile --no-sync` on `wh`, killed at `crash` when given.
fn reconcile_binary(dir: &std::path::Path, crash: Option<&str>) -> std::process::Output {
    use crate::common::PfsyncCommand;
    let mut c = crate::common::pfsync();
    c.warehouse(dir).args(["reconcile", "--no-sync"]);
    if let Some(point) = crash {
        c.env("PFSYNC_CRASH_AT", point);
    }
    crate::common::output_in_place(&mut c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_part_way_is_completed_by_the_next_to_the_answer_of_a_rebuild() {
    use std::os::unix::process::ExitStatusExt;

    for point in ["reconcile_after_totals", "reconcile_after_state"] {
        for first_run in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let wh = crate::common::warehouse(&dir);
            let now = Utc::now();
            let mut txs = 0;
            let (events, new_txs) = settled_history(0, 6, now, &mut txs);
            append(&wh, &events, &new_txs).await;
            if !first_run {
                // A state to start from; the kill then lands in a run that reads what changed.
                run(&wh, "before", false, now).await;
                let (events, new_txs) = settled_history(6, 4, now, &mut txs);
                append(&wh, &events, &new_txs).await;
            }
            let killed = reconcile_binary(dir.path(), Some(point));
            assert_eq!(killed.status.signal(), Some(9), "{point}: {}", crate::common::text(&killed));
            let next = reconcile_binary(dir.path(), None);
            // Findings are open (exit 8): the history plants them.
            assert_eq!(next.status.code(), Some(8), "{point}: {}", crate::common::text(&next));
            let text = crate::common::text(&next);
            // Killed before its state committed, a first run leaves nothing to go on from: the next rebuilds.
            let rebuilds = first_run && point == "reconcile_after_totals";
            assert_eq!(text.contains("rebuilt"), rebuilds, "{point}, first run {first_run}: {text}");
            let after_kill = state_of(&wh).await;
            let rebuilt = run(&wh, "rebuild", true, Utc::now()).await;
            assert!(rebuilt.rebuilt.is_some());
            assert_eq!(
                after_kill,
                state_of(&wh).await,
                "{point}, first run {first_run}: the next run against a rebuild"
            );
            assert!(after_kill.0.len() >= 8, "{point}: {:?}", after_kill.0);
        }
    }
}

/// `pfsync reconcile --full --rebuild-passes N` gives the classification of a rebuild in one pass, and leaves
/// none of its bucket files in TMPDIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_in_passes_from_the_command_line_gives_the_one_pass_answer_and_cleans_up() {
    use crate::common::PfsyncCommand;

    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let now = Utc::now();
    let mut txs = 0;
    let (events, new_txs) = settled_history(0, 16, now, &mut txs);
    append(&wh, &events, &new_txs).await;
    run_in(&wh, "one-pass", true, Some(1), now).await;
    let one_pass = state_of(&wh).await;
    assert!(one_pass.0.len() >= 16, "{:?}", one_pass.0);

    let mut c = crate::common::pfsync();
    c.warehouse(dir.path()).env("TMPDIR", tmp.path()).args([
        "reconcile",
        "--no-sync",
        "--full",
        "--rebuild-passes",
        "4",
    ]);
    let out = crate::common::output_in_place(&mut c);
    // Findings are open (exit 8): the history plants them.
    assert_eq!(out.status.code(), Some(8), "{}", crate::common::text(&out));
    assert_eq!(state_of(&wh).await, one_pass, "four passes against one");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    let mut c = crate::common::pfsync();
    c.warehouse(dir.path()).args(["reconcile", "--no-sync", "--full", "--rebuild-passes", "0"]);
    let out = crate::common::output_in_place(&mut c);
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::text(&out));
    assert!(crate::common::text(&out).contains("--rebuild-passes"), "{}", crate::common::text(&out));
}
