//! Read -> **plan** -> execute. A pure function from the validated operations, their log history and the
//! run's options to a plan: what to look up first, what to send and in which phase, and what is held back
//! and why. No I/O, no clock (the time is an input), so every exactly-once decision can be checked here.
//!
//! The rules, in order, for one operation:
//! 1. outside this run's shard: not ours;
//! 2. a final outcome in the log (`completed` or `rejected`): nothing to do, ever;
//! 3. an intent with no outcome, recorded less than `in_flight_timeout` ago: another run may be sending it
//!    right now, so this run leaves it alone (the executor never starts a send that late, see
//!    `engine.rs`, so after the timeout the sender is known to have stopped);
//! 4. an unknown outcome (or an intent past the timeout): look it up at the provider before anything else;
//!    at a provider that cannot look outcomes up, it waits for a person and is never resent;
//! 5. otherwise: a first send, if the safety brake allows it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::log::LogEvent;
use super::state::{Status, last_intent_at, status};
use crate::http::IdempotencyKey;
use crate::money::Usd;
use crate::operation::{EscrowRef, OpKind, Operation};

pub use crate::operation::{Shard, in_shard};

/// What the plan needs besides the operations and their history.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub namespace: String,
    pub shard: Option<Shard>,
    /// Safety brake: new payouts and escrow funding in this run stay within this total.
    pub max_total: Option<Usd>,
    /// Safety brake: at most this many new sends in this run.
    pub max_count: Option<u64>,
    /// An intent younger than this may belong to a run that is still sending.
    pub in_flight_timeout: chrono::Duration,
    /// The provider can resolve an unknown outcome from its evidence, by key or from a ledger (see
    /// `provider::Capabilities`).
    pub can_look_up: bool,
    pub now: DateTime<Utc>,
}

/// One operation the executor will act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: Operation,
    pub key: IdempotencyKey,
    /// The attempt number this run's intent will carry.
    pub attempt: i32,
    /// An earlier attempt's outcome is unknown: look it up before deciding to send.
    pub resolve_first: bool,
    /// When the latest earlier intent was recorded: the evidence of a provider without key memory (its
    /// ledger) is read from then on.
    pub since: Option<DateTime<Utc>>,
    /// The error code the latest earlier attempt ended with, if any.
    pub last_error: Option<String>,
    /// The agent the operation debits, where the provider pays from an agent's balance (see
    /// `Provider::payer_of`): what the lease and the ledger evidence are kept per.
    pub payer: Option<String>,
    /// The tag the provider writes into the description of the escrow a create makes
    /// (`Provider::escrow_tag`), recorded with the intent.
    pub escrow_tag: Option<String>,
    /// An earlier intent of this create was logged with no tag, by a pfsync from before tags named the
    /// namespace: its escrow may carry `[pfsync:<action id>]`, and only such a create's evidence accepts that
    /// form. What the log row says was sent is the one sure witness: a clock or a version cut-over would
    /// misjudge intents written by an older pfsync still running next to a newer one, or a clock that was
    /// wrong. Any other create accepts only its own namespace's tag, so the same action id in another
    /// namespace never confirms its escrow.
    pub legacy_escrow_tag: bool,
}

/// What the log says to do with one operation (rules 2 to 5 above, before the brake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Final,
    InFlightElsewhere,
    NeedsPerson,
    Send { attempt: i32 },
    Resolve { attempt: i32 },
}

pub fn decide(events: &[LogEvent], o: &PlanOptions) -> Decision {
    match status(events) {
        Status::Completed { .. } | Status::Rejected { .. } | Status::Abandoned => Decision::Final,
        Status::New => Decision::Send { attempt: 1 },
        // A person found the latest attempt never ran: the next one is a send like the first.
        Status::NeverRan { attempt } => Decision::Send { attempt: attempt + 1 },
        Status::InFlight { attempt } => {
            let recent = last_intent_at(events).is_none_or(|at| o.now - at < o.in_flight_timeout);
            if recent {
                Decision::InFlightElsewhere
            } else if o.can_look_up {
                Decision::Resolve { attempt: attempt + 1 }
            } else {
                Decision::NeedsPerson
            }
        }
        Status::Unknown { attempt } => {
            if o.can_look_up {
                Decision::Resolve { attempt: attempt + 1 }
            } else {
                Decision::NeedsPerson
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Operations with no dependency, in request order.
    pub first: Vec<Step>,
    /// Releases and disputes that name their create: after `first`, once the create's escrow is known.
    pub second: Vec<Step>,
    /// Escrows made by creates the log shows completed, by create action id.
    pub created: HashMap<String, String>,
    pub out_of_shard: u64,
    pub already_final: u64,
    /// Intents of another run that may still be sending (retried after the in-flight timeout).
    pub in_flight_elsewhere: Vec<String>,
    /// Unknown outcomes at a provider that cannot look them up: for a person, never resent.
    pub needs_person: Vec<String>,
    pub held_by_brake: Vec<String>,
    /// New money the planned first sends move (the brake's running total).
    pub planned_outflow: Usd,
}

impl Plan {
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.first.iter().chain(self.second.iter())
    }
}

/// The ledger debit an operation makes at its payer, as evidence tells debits apart: kind, debited agent
/// (the payer of payouts is one agent, the creator of an escrow its buyer) and amount. Releases and
/// disputes debit nobody.
fn debit_slot(op: &Operation) -> Option<(OpKind, String, Usd)> {
    use crate::operation::Action;
    match &op.action {
        Action::Payout { amount, .. } => Some((OpKind::Payout, String::new(), *amount)),
        Action::EscrowCreate { buyer, amount, .. } => Some((OpKind::EscrowCreate, buyer.clone(), *amount)),
        _ => None,
    }
}

/// The next batch from `rest`, in order. With `distinct_debits` (a provider whose unknown outcomes are
/// resolved from the payer's ledger), a batch never holds two operations that would write the same ledger
/// debit (same kind, payer and amount), nor more than `per_payer` debits of one payer: whatever happens to
/// the batch's answers, each debit in the ledger points at one operation, and the ledger's window (its
/// last 50 entries) still reaches back to the batch's intents. Steps that do not fit wait, in order, for a
/// later batch.
pub fn next_batch(
    rest: &mut std::collections::VecDeque<Step>,
    size: usize,
    distinct_debits: bool,
    per_payer: usize,
) -> Vec<Step> {
    let size = size.max(1);
    if !distinct_debits {
        let n = size.min(rest.len());
        return rest.drain(..n).collect();
    }
    let mut batch = Vec::new();
    let mut slots = std::collections::HashSet::new();
    let mut per: HashMap<String, usize> = HashMap::new();
    let mut waiting = std::collections::VecDeque::new();
    while batch.len() < size {
        let Some(step) = rest.pop_front() else { break };
        if let Some(slot) = debit_slot(&step.op) {
            let n = per.entry(slot.1.clone()).or_default();
            if *n >= per_payer.max(1) || slots.contains(&slot) {
                waiting.push_back(step);
                continue;
            }
            *n += 1;
            slots.insert(slot);
        }
        batch.push(step);
    }
    while let Some(s) = waiting.pop_back() {
        rest.push_front(s);
    }
    batch
}

#[derive(Debug, thiserror::Error)]
#[error("operation {id}: no idempotency key can be derived: {reason}")]
pub struct PlanError {
    pub id: String,
    pub reason: String,
}

pub fn plan(ops: Vec<Operation>, history: &HashMap<String, Vec<LogEvent>>, o: &PlanOptions) -> Result<Plan, PlanError> {
    let mut p = Plan::default();
    let none: Vec<LogEvent> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    // Creates completed in earlier runs whose escrow a release or dispute of this batch names.
    for (id, events) in history {
        if events.first().is_some_and(|e| e.kind == OpKind::EscrowCreate)
            && let Status::Completed { escrow_id: Some(e), .. } = status(events)
        {
            p.created.insert(id.clone(), e);
        }
    }
    for op in ops {
        if !in_shard(&op.id, o.shard) {
            p.out_of_shard += 1;
            continue;
        }
        let events = history.get(&op.id).unwrap_or(&none);
        if op.kind() == OpKind::EscrowCreate
            && let Status::Completed { escrow_id: Some(e), .. } = status(events)
        {
            p.created.insert(op.id.clone(), e);
        }
        let (attempt, resolve_first) = match decide(events, o) {
            Decision::Final => {
                p.already_final += 1;
                continue;
            }
            Decision::InFlightElsewhere => {
                p.in_flight_elsewhere.push(op.id);
                continue;
            }
            Decision::NeedsPerson => {
                p.needs_person.push(op.id);
                continue;
            }
            Decision::Send { attempt } => (attempt, false),
            Decision::Resolve { attempt } => (attempt, true),
        };
        let key = op.idempotency_key(&o.namespace).map_err(|reason| PlanError { id: op.id.clone(), reason })?;
        let since = last_intent_at(events);
        let last_error = events
            .iter()
            .filter(|e| e.event == super::state::Event::Unknown)
            .max_by_key(|e| (e.attempt, e.recorded_at))
            .and_then(|e| e.error_code.clone());
        let legacy_escrow_tag = op.kind() == OpKind::EscrowCreate
            && events.iter().any(|e| e.event == super::state::Event::Intent && e.escrow_tag.is_none());
        steps.push(Step {
            op,
            key,
            attempt,
            resolve_first,
            since,
            last_error,
            payer: None,
            escrow_tag: None,
            legacy_escrow_tag,
        });
    }
    steps.sort_by(|a, b| (a.op.requested_at, &a.op.id).cmp(&(b.op.requested_at, &b.op.id)));
    let (second, first): (Vec<Step>, Vec<Step>) =
        steps.into_iter().partition(|s| matches!(s.op.escrow(), Some(EscrowRef::CreatedBy(_))));

    // The brake counts new sends only: a resolution was counted by the run that first sent it.
    let mut count = 0u64;
    for step in first.into_iter().chain(second) {
        if !step.resolve_first {
            let total = p.planned_outflow.checked_add(step.op.outflow());
            let over_total = match (o.max_total, total) {
                (Some(max), Some(t)) => t > max,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if over_total || o.max_count.is_some_and(|m| count + 1 > m) {
                p.held_by_brake.push(step.op.id);
                continue;
            }
            p.planned_outflow = total.unwrap_or(p.planned_outflow);
            count += 1;
        }
        if matches!(step.op.escrow(), Some(EscrowRef::CreatedBy(_))) {
            p.second.push(step);
        } else {
            p.first.push(step);
        }
    }
    Ok(p)
}

/// After a conflicting log commit (another run committed intents meanwhile), the batch is checked again
/// against the log as it is now: a step keeps its place only if the fresh history still calls for exactly
/// what the step was going to do. Returns the steps to keep and the ids dropped, with the reason.
pub fn revise(
    steps: Vec<Step>,
    fresh: &HashMap<String, Vec<LogEvent>>,
    o: &PlanOptions,
) -> (Vec<Step>, Vec<(String, Decision)>) {
    let none: Vec<LogEvent> = Vec::new();
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for s in steps {
        let d = decide(fresh.get(&s.op.id).unwrap_or(&none), o);
        let same = match d {
            Decision::Send { attempt } => attempt == s.attempt,
            // A step that was looked up and found never executed is a send of the next attempt now.
            Decision::Resolve { attempt } => attempt == s.attempt,
            _ => false,
        };
        if same { keep.push(s) } else { dropped.push((s.op.id.clone(), d)) }
    }
    (keep, dropped)
}

/// The options most tests plan with: namespace `t`, a 15-minute in-flight timeout, no brake.
#[cfg(test)]
pub(crate) fn test_options(can_look_up: bool, now: DateTime<Utc>) -> PlanOptions {
    PlanOptions {
        namespace: "t".into(),
        shard: None,
        max_total: None,
        max_count: None,
        in_flight_timeout: chrono::Duration::minutes(15),
        can_look_up,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::Action;
    use crate::payouts::state::Event;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn opts() -> PlanOptions {
        test_options(true, now())
    }

    fn payout(id: &str, cents: i64) -> Operation {
        Operation {
            id: id.into(),
            action: Action::Payout { agent: "agent-1".into(), amount: Usd::from_cents(cents).unwrap() },
            reason: "r".into(),
            requested_at: None,
        }
    }

    #[test]
    fn ledger_batches_never_hold_two_debits_of_one_amount_or_too_many_per_payer() {
        let step = |id: &str, cents| Step {
            key: IdempotencyKey::derive("t", "payout", id).unwrap(),
            op: payout(id, cents),
            attempt: 1,
            resolve_first: false,
            since: None,
            last_error: None,
            payer: None,
            escrow_tag: None,
            legacy_escrow_tag: false,
        };
        let ids = |b: &[Step]| b.iter().map(|s| s.op.id.clone()).collect::<Vec<_>>().join(",");
        let all = [("a", 100), ("b", 100), ("c", 200), ("d", 100), ("e", 300), ("f", 400)];
        let mut rest: std::collections::VecDeque<Step> = all.iter().map(|(i, c)| step(i, *c)).collect();
        assert_eq!(ids(&next_batch(&mut rest, 10, true, 3)), "a,c,e");
        assert_eq!(ids(&next_batch(&mut rest, 10, true, 3)), "b,f");
        assert_eq!(ids(&next_batch(&mut rest, 10, true, 3)), "d");
        assert!(rest.is_empty());
        let mut rest: std::collections::VecDeque<Step> = all.iter().map(|(i, c)| step(i, *c)).collect();
        assert_eq!(ids(&next_batch(&mut rest, 4, false, 1)), "a,b,c,d");
    }

    fn ev(event: Event, attempt: i32, minutes_ago: i64) -> LogEvent {
        let at = now() - chrono::Duration::minutes(minutes_ago);
        LogEvent {
            agent_id: Some("agent-1".into()),
            reason: Some("r".into()),
            tx_id: (event == Event::Completed).then(|| "tx".into()),
            ..LogEvent::new("op", OpKind::Payout, event, attempt, "key", "run", at)
        }
    }

    #[test]
    fn every_history_has_one_decision() {
        use Event::*;
        let mut no_lookup = opts();
        no_lookup.can_look_up = false;
        // (history, with lookup, without lookup)
        let cases: Vec<(Vec<LogEvent>, Decision, Decision)> = vec![
            (vec![], Decision::Send { attempt: 1 }, Decision::Send { attempt: 1 }),
            (vec![ev(Intent, 1, 1)], Decision::InFlightElsewhere, Decision::InFlightElsewhere),
            (vec![ev(Intent, 1, 60)], Decision::Resolve { attempt: 2 }, Decision::NeedsPerson),
            (vec![ev(Intent, 1, 1), ev(Unknown, 1, 1)], Decision::Resolve { attempt: 2 }, Decision::NeedsPerson),
            (
                vec![ev(Intent, 1, 60), ev(Unknown, 1, 60), ev(Intent, 2, 2)],
                Decision::InFlightElsewhere,
                Decision::InFlightElsewhere,
            ),
            (vec![ev(Intent, 1, 60), ev(Completed, 1, 60)], Decision::Final, Decision::Final),
            (vec![ev(Intent, 1, 60), ev(Rejected, 1, 60)], Decision::Final, Decision::Final),
            // Two overlapping runs: one saw unknown, the other completed: completed wins.
            (
                vec![ev(Intent, 1, 9), ev(Intent, 1, 9), ev(Completed, 1, 9), ev(Unknown, 1, 9)],
                Decision::Final,
                Decision::Final,
            ),
        ];
        for (events, with, without) in cases {
            assert_eq!(decide(&events, &opts()), with, "{events:?}");
            assert_eq!(decide(&events, &no_lookup), without, "{events:?}");
        }
    }

    #[test]
    fn the_brake_holds_what_would_cross_the_limits_in_request_order() {
        let ops = vec![payout("a", 600), payout("b", 500), payout("c", 300)];
        let mut o = opts();
        o.max_total = Some(Usd::from_cents(1000).unwrap());
        let p = plan(ops.clone(), &HashMap::new(), &o).unwrap();
        let sent: Vec<&str> = p.first.iter().map(|s| s.op.id.as_str()).collect();
        assert_eq!((sent, p.held_by_brake.clone()), (vec!["a", "c"], vec!["b".to_string()]));
        let mut o = opts();
        o.max_count = Some(1);
        let p = plan(ops, &HashMap::new(), &o).unwrap();
        assert_eq!((p.first.len(), p.held_by_brake.len()), (1, 2));
    }

    #[test]
    fn a_release_naming_its_create_waits_for_the_second_phase() {
        let rel = Operation {
            id: "r".into(),
            action: Action::Release { escrow: EscrowRef::CreatedBy("c".into()) },
            reason: "r".into(),
            requested_at: None,
        };
        let p = plan(vec![rel, payout("p", 1)], &HashMap::new(), &opts()).unwrap();
        assert_eq!((p.first.len(), p.second.len()), (1, 1));
    }

    #[test]
    fn revise_drops_what_another_run_took_meanwhile() {
        let p = plan(vec![payout("a", 1), payout("b", 1)], &HashMap::new(), &opts()).unwrap();
        let mut fresh = HashMap::new();
        fresh.insert("a".to_string(), vec![ev(Event::Intent, 1, 0)]);
        let (keep, dropped) = revise(p.first, &fresh, &opts());
        assert_eq!(keep.iter().map(|s| s.op.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(dropped, vec![("a".to_string(), Decision::InFlightElsewhere)]);
    }

    fn arb_event() -> impl Strategy<Value = (u8, i32, i64)> {
        (0u8..4, 1i32..4, 0i64..40)
    }

    proptest! {
        /// No plan ever sends an operation whose history is final or whose intent may still be in flight,
        /// resolves without a lookup capability, or lets the brake's totals be crossed.
        #[test]
        fn plans_never_send_twice_and_keep_the_brake(
            histories in proptest::collection::vec(proptest::collection::vec(arb_event(), 0..5), 1..12),
            cents in proptest::collection::vec(1i64..5000, 12),
            max_total in proptest::option::of(1i64..20000),
            max_count in proptest::option::of(0u64..8),
            can_look_up in any::<bool>(),
        ) {
            let mut o = opts();
            o.max_total = max_total.map(|c| Usd::from_cents(c).unwrap());
            o.max_count = max_count;
            o.can_look_up = can_look_up;
            let mut history = HashMap::new();
            let mut ops = Vec::new();
            for (i, h) in histories.iter().enumerate() {
                let id = format!("op-{i}");
                let events: Vec<LogEvent> = h.iter().map(|(e, a, m)| {
                    let event = [Event::Intent, Event::Completed, Event::Rejected, Event::Unknown][*e as usize];
                    ev(event, *a, *m)
                }).collect();
                history.insert(id.clone(), events);
                ops.push(payout(&id, cents[i]));
            }
            let p = plan(ops, &history, &o).unwrap();
            let mut new_total = Usd::ZERO;
            let mut new_count = 0u64;
            for s in p.steps() {
                let events = &history[&s.op.id];
                let st = status(events);
                prop_assert!(!st.is_final(), "{} is final but planned", s.op.id);
                let recent = last_intent_at(events).is_some_and(|at| o.now - at < o.in_flight_timeout);
                if matches!(st, Status::InFlight { .. }) {
                    prop_assert!(!recent, "{} has a recent intent but is planned", s.op.id);
                }
                if s.resolve_first {
                    prop_assert!(o.can_look_up);
                } else {
                    prop_assert_eq!(st, Status::New);
                    new_total = new_total.checked_add(s.op.outflow()).unwrap();
                    new_count += 1;
                }
            }
            if let Some(max) = o.max_total { prop_assert!(new_total <= max); }
            if let Some(max) = o.max_count { prop_assert!(new_count <= max); }
            prop_assert_eq!(new_total, p.planned_outflow);
        }
    }
}
