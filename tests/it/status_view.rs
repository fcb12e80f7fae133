//! The status machine once: `state::status` (what the payouts engine acts on) and the
//! `purpleflea.payouts.status` view (what `pfsync status`, analysts and reconciliation read) give every
//! operation the same status, tx_id, escrow, error code and attempt, for any history the log can hold.
//!
//! Histories are random, plus the shapes overlapping runs leave behind: two intents for one attempt, an
//! outcome after `unknown`, `completed` and `unknown` for the same attempt. They are written to a real
//! payout log with `append_events` over one to three commits and read back both ways: through the view in
//! the project's SQL session, and through `log::history` into `state::status`, as the engine does.

use std::collections::BTreeMap;

use arrow::array::{Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use chrono::{Duration, TimeZone, Utc};
use pfsync::payouts::log::{LogEvent, append_events, history};
use pfsync::payouts::state::{self, Event, Status};
use pfsync::tables::{CommitInfo, PAYOUT_LOG, open_or_create, sql_context};
use proptest::prelude::*;

const KINDS: [&str; 4] = ["payout", "escrow_create", "escrow_release", "escrow_dispute"];
/// Codes a `rejected` event carries (the contract's final refusals) and an `unknown` one (everything that
/// might have moved money). They interleave alphabetically, so "the greatest code" is not "the rejection".
const REJECT_CODES: [&str; 4] = ["agent_not_found", "insufficient_funds", "invalid_state", "escrow_not_found"];
const UNKNOWN_CODES: [&str; 4] = ["transport", "server_error", "gave_up", "rate_limited"];

/// One logged event before it becomes a row: which event, for which attempt, which of two provider
/// answers it carries, and which of up to three commits writes it.
#[derive(Debug, Clone)]
struct Step {
    event: Event,
    attempt: i32,
    answer: usize,
    commit: u8,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Intent),
        1 => Just(Event::Completed),
        1 => Just(Event::Rejected),
        2 => Just(Event::Unknown),
    ]
}

/// Any events in any order, including outcomes with no intent and attempts that go back.
fn any_history() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (event(), 1..=3i32, 0..4usize, 0..3u8).prop_map(|(event, attempt, answer, commit)| Step {
            event,
            attempt,
            answer,
            commit,
        }),
        0..8,
    )
}

/// What runs leave: each run logs an intent, then maybe an outcome; a later run resolves with the next
/// attempt, or a second run overlaps the first on the same attempt and logs its own intent and outcome.
fn run_shaped_history() -> impl Strategy<Value = Vec<Step>> {
    let outcome = prop::option::of(prop_oneof![Just(Event::Completed), Just(Event::Rejected), Just(Event::Unknown)]);
    prop::collection::vec((any::<bool>(), outcome.clone(), any::<bool>(), outcome, 0..4usize, 0..3u8), 0..4).prop_map(
        |runs| {
            let mut steps = Vec::new();
            let mut attempt = 0;
            for (next_attempt, first, overlapped, second, answer, commit) in runs {
                if next_attempt || attempt == 0 {
                    attempt += 1;
                }
                let step = |event, answer| Step { event, attempt, answer, commit };
                steps.push(step(Event::Intent, answer));
                if overlapped {
                    steps.push(step(Event::Intent, answer + 1));
                }
                steps.extend(first.map(|e| step(e, answer)));
                if overlapped {
                    steps.extend(second.map(|e| step(e, answer + 1)));
                }
            }
            steps
        },
    )
}

/// An operation of a random kind with its history.
fn operation() -> impl Strategy<Value = (&'static str, Vec<Step>)> {
    (prop::sample::select(&KINDS[..]), prop_oneof![any_history(), run_shaped_history()])
}

/// The row the engine would log for `step` of operation `n`. Every event of an operation carries the same
/// agent, amount, reason and key (an id reused with other values is refused before it is logged); the
/// provider's answer (tx, escrow, error code) varies with the attempt and the run.
fn log_event(n: usize, kind: &'static str, step: &Step, seq: i64) -> LogEvent {
    let recorded_at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + Duration::seconds(seq);
    let escrow = format!("esc-{n}-{}", step.answer % 2);
    LogEvent {
        agent_id: Some(format!("agent-{n:06}")),
        counterparty_agent_id: (kind == "escrow_create").then(|| "agent-999999".to_string()),
        amount_usd: matches!(kind, "payout" | "escrow_create")
            .then(|| pfsync::money::Usd::from_cents(100 + n as i64).unwrap()),
        reason: Some(format!("reason {n}")),
        tx_id: (step.event == Event::Completed && kind != "escrow_create")
            .then(|| format!("tx-{n}-{}", step.answer % 2)),
        // A release or dispute names its escrow from the intent on; a create learns it from the answer.
        escrow_id: match kind {
            "escrow_release" | "escrow_dispute" => Some(format!("esc-{n}")),
            "escrow_create" if step.event == Event::Completed => Some(escrow),
            _ => None,
        },
        error_code: match step.event {
            Event::Rejected => Some(REJECT_CODES[step.answer % 4].to_string()),
            Event::Unknown => Some(UNKNOWN_CODES[step.answer % 4].to_string()),
            _ => None,
        },
        ..LogEvent::new(
            format!("op-{n}"),
            pfsync::operation::OpKind::parse(kind).expect("a kind the log knows"),
            step.event,
            step.attempt,
            format!("pfsync:test:{kind}:op-{n}"),
            format!("run-{}", step.commit),
            recorded_at,
        )
    }
}

/// The log rows of `ops`, grouped by the commit that writes them.
fn commits(ops: &[(&'static str, Vec<Step>)]) -> BTreeMap<u8, Vec<LogEvent>> {
    let mut out: BTreeMap<u8, Vec<LogEvent>> = BTreeMap::new();
    let mut seq = 0;
    for (n, (kind, steps)) in ops.iter().enumerate() {
        for step in steps {
            seq += 1;
            out.entry(step.commit).or_default().push(log_event(n, kind, step, seq));
        }
    }
    out
}

fn column(b: &RecordBatch, name: &str) -> arrow::array::ArrayRef {
    let col = b.column_by_name(name).unwrap_or_else(|| panic!("the view has a column {name}"));
    let to = if name == "attempts" { DataType::Int32 } else { DataType::Utf8 };
    arrow::compute::cast(col, &to).unwrap()
}

/// The view's row for each operation, read as the `Status` it claims.
fn view_statuses(batches: &[RecordBatch]) -> BTreeMap<String, Status> {
    let mut out = BTreeMap::new();
    for b in batches {
        let (id, status, tx, escrow, code, attempts) = (
            column(b, "operation_id"),
            column(b, "status"),
            column(b, "tx_id"),
            column(b, "escrow_id"),
            column(b, "error_code"),
            column(b, "attempts"),
        );
        let text = |a: &arrow::array::ArrayRef, i: usize| {
            let s = a.as_any().downcast_ref::<StringArray>().unwrap();
            (!s.is_null(i)).then(|| s.value(i).to_string())
        };
        let attempts = attempts.as_any().downcast_ref::<Int32Array>().unwrap();
        for i in 0..b.num_rows() {
            let attempt = attempts.value(i);
            let st = match text(&status, i).as_deref() {
                Some("completed") => Status::Completed { tx_id: text(&tx, i), escrow_id: text(&escrow, i) },
                Some("rejected") => Status::Rejected { code: text(&code, i).unwrap_or_default() },
                Some("unknown") => Status::Unknown { attempt },
                Some("in_flight") => Status::InFlight { attempt },
                other => panic!("the view's status {other:?} is not one of the four"),
            };
            out.insert(text(&id, i).unwrap(), st);
        }
    }
    out
}

/// Writes the histories to a fresh payout log, then reads every operation's status through the view and
/// through `history` + `state::status`.
async fn both_ways(ops: &[(&'static str, Vec<Step>)]) -> (BTreeMap<String, Status>, BTreeMap<String, Status>) {
    let dir = tempfile::tempdir().unwrap();
    let wh = crate::common::warehouse(&dir);
    let create = CommitInfo { run_id: "setup".into(), step: "payouts" };
    let mut table = open_or_create(&wh, &PAYOUT_LOG, &create).await.unwrap();
    for (commit, events) in commits(ops) {
        let info = CommitInfo { run_id: format!("run-{commit}"), step: "payouts" };
        table = append_events(table, &events, &info).await.unwrap();
    }
    let ctx = sql_context(&wh).await.unwrap();
    let sql = "SELECT operation_id, status, attempts, tx_id, escrow_id, error_code FROM purpleflea.payouts.status";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let ids: Vec<String> = (0..ops.len()).map(|n| format!("op-{n}")).collect();
    let engine =
        history(&table, &ids).await.unwrap().into_iter().map(|(id, events)| (id, state::status(&events))).collect();
    (view_statuses(&batches), engine)
}

/// What `state::status` says of the events as written; an operation with no events has no row.
fn as_written(ops: &[(&'static str, Vec<Step>)]) -> BTreeMap<String, Status> {
    let mut per_op: BTreeMap<String, Vec<LogEvent>> = BTreeMap::new();
    for e in commits(ops).values().flatten() {
        per_op.entry(e.operation_id.clone()).or_default().push(e.clone());
    }
    per_op.into_iter().map(|(id, events)| (id, state::status(&events))).collect()
}

proptest! {
    // Each case writes a Delta table; shrinking writes one per step, so it is bounded too.
    #![proptest_config(ProptestConfig { max_shrink_iters: 256, ..ProptestConfig::with_cases(32) })]

    #[test]
    fn the_status_view_says_what_the_state_machine_says(ops in prop::collection::vec(operation(), 1..=5)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (view, engine) = rt.block_on(both_ways(&ops));
        let written = as_written(&ops);
        prop_assert_eq!(&view, &written, "the view against state::status of the events as written");
        prop_assert_eq!(&engine, &written, "state::status of the log as the engine reads it back");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The log is read back in no particular order (Delta files, then rows, in any order), so the status
    /// must not depend on it: the engine and the view would otherwise disagree from one read to the next.
    #[test]
    fn the_status_does_not_depend_on_the_order_the_log_is_read_in(
        (kind, steps, order) in operation().prop_flat_map(|(kind, steps)| {
            let order = Just((0..steps.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(kind), Just(steps), order)
        })
    ) {
        let events: Vec<LogEvent> =
            steps.iter().enumerate().map(|(i, s)| log_event(0, kind, s, i as i64)).collect();
        let shuffled: Vec<LogEvent> = order.iter().map(|&i| events[i].clone()).collect();
        prop_assert_eq!(state::status(&shuffled), state::status(&events));
    }
}
