//! Why an operation is not final yet, and from when a rerun acts on it: what an exit 6 and
//! `pfsync status OPERATION_ID` tell a person. The answer is the plan's own rule (`plan::decide`) read
//! backwards, so what is said is what the next run will do.

use std::fmt;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;

use super::PayoutError;
use super::log::LogEvent;
use super::plan::{Decision, PlanOptions, decide};
use super::state::last_intent_at;

/// Why an operation waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An intent younger than the in-flight timeout: its run may still be sending it. A rerun leaves it
    /// alone until `until`, then looks it up.
    InFlight { since: DateTime<Utc>, until: DateTime<Utc> },
    /// Its send ended without an answer (or its run stopped): the next run looks it up at the provider
    /// before anything else, and sends again only on the provider's evidence that it never ran.
    Unknown { error_code: Option<String> },
    /// The provider cannot look outcomes up: a person decides (`never_ran` or `abandoned`), never a resend.
    NeedsPerson,
}

impl Wait {
    /// From when a rerun acts on it (`None`: only a person does).
    pub fn act_from(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Wait::InFlight { until, .. } => Some((*until).max(now)),
            Wait::Unknown { .. } => Some(now),
            Wait::NeedsPerson => None,
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::InFlight { since, until } => write!(
                f,
                "in flight: intent recorded at {} and another run may still be sending it; a rerun acts on it \
                 from {} (the in-flight timeout after the intent), looking it up first",
                utc(*since),
                utc(*until)
            ),
            Wait::Unknown { error_code } => write!(
                f,
                "outcome unknown{}: a rerun looks it up at the provider now, and sends again only if the \
                 provider's evidence says it never ran",
                error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            ),
            Wait::NeedsPerson => write!(
                f,
                "outcome unknown and the provider's evidence cannot settle it: a person decides (a never_ran or \
                 abandoned event in the log); no run sends it again before that"
            ),
        }
    }
}

/// A time as people read it in a message: to the second, UTC.
pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Why the operation with these events waits, by the rule the plan applies; `None` when it is final or a
/// rerun sends it as a new attempt.
pub fn why(events: &[LogEvent], o: &PlanOptions) -> Option<Wait> {
    match decide(events, o) {
        Decision::Final | Decision::Send { .. } => None,
        Decision::InFlightElsewhere => {
            let since = last_intent_at(events).unwrap_or(o.now);
            Some(Wait::InFlight { since, until: since + o.in_flight_timeout })
        }
        Decision::NeedsPerson => Some(Wait::NeedsPerson),
        Decision::Resolve { .. } => Some(Wait::Unknown {
            error_code: events
                .iter()
                .filter(|e| e.event == super::state::Event::Unknown)
                .max_by_key(|e| (e.attempt, e.recorded_at))
                .and_then(|e| e.error_code.clone()),
        }),
    }
}

/// One operation that waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub operation_id: String,
    pub wait: Wait,
}

/// Every operation of the namespace the log shows not final, with why it waits (at most `limit`, oldest
/// intent first, and how many there are in all).
pub async fn open_operations(
    log: &DeltaTable,
    o: &PlanOptions,
    limit: usize,
) -> Result<(Vec<Waiting>, usize), PayoutError> {
    let Some(ctx) = super::log::log_session(log).await? else { return Ok((Vec::new(), 0)) };
    let prefix = format!("pfsync:{}:", o.namespace);
    // The namespace is checked (a-z, 0-9, _ and -): it cannot break out of the literal.
    let sql = format!(
        "SELECT operation_id FROM log WHERE starts_with(idempotency_key, '{prefix}') GROUP BY operation_id \
         HAVING max(CASE WHEN event IN ('completed', 'rejected', 'abandoned') THEN 1 ELSE 0 END) = 0 \
         ORDER BY min(recorded_at), operation_id"
    );
    let batches = super::log::collect(&ctx, &sql, "reading the payout log's open operations").await?;
    let mut ids = Vec::new();
    for b in &batches {
        let a = super::log::strings(b, "operation_id")?;
        ids.extend((0..b.num_rows()).map(|i| arrow::array::Array::is_valid(&a, i).then(|| a.value(i).to_string())));
    }
    let ids: Vec<String> = ids.into_iter().flatten().collect();
    let history = super::log::history(log, &ids).await?;
    let mut out = Vec::new();
    let mut total = 0;
    for id in ids {
        let Some(wait) = history.get(&id).and_then(|ev| why(ev, o)) else { continue };
        total += 1;
        if out.len() < limit {
            out.push(Waiting { operation_id: id, wait });
        }
    }
    Ok((out, total))
}

/// What an exit 6 says: which operations wait and from when a rerun acts on them.
pub fn summary(waiting: &[Waiting], total: usize, held: u64, now: DateTime<Utc>) -> String {
    let mut parts = Vec::new();
    let ids = |w: &[&Waiting]| {
        let shown: Vec<&str> = w.iter().take(5).map(|w| w.operation_id.as_str()).collect();
        let more = if w.len() > 5 { format!(" and {} more", w.len() - 5) } else { String::new() };
        format!("{}{more}", shown.join(", "))
    };
    let in_flight: Vec<&Waiting> = waiting.iter().filter(|w| matches!(w.wait, Wait::InFlight { .. })).collect();
    if !in_flight.is_empty() {
        let from = in_flight.iter().filter_map(|w| w.wait.act_from(now)).max().unwrap_or(now);
        parts.push(format!(
            "{} in flight ({}): another run may still be sending them; a rerun acts on them from {}",
            in_flight.len(),
            ids(&in_flight),
            utc(from)
        ));
    }
    let unknown: Vec<&Waiting> = waiting.iter().filter(|w| matches!(w.wait, Wait::Unknown { .. })).collect();
    if !unknown.is_empty() {
        parts.push(format!(
            "{} with an unknown outcome ({}): a rerun looks them up now ({})",
            unknown.len(),
            ids(&unknown),
            utc(now)
        ));
    }
    let person: Vec<&Waiting> = waiting.iter().filter(|w| w.wait == Wait::NeedsPerson).collect();
    if !person.is_empty() {
        parts.push(format!(
            "{} for a person ({}): the provider's evidence cannot settle them, no run sends them again",
            person.len(),
            ids(&person)
        ));
    }
    if total > waiting.len() {
        parts.push(format!("{} more not listed", total - waiting.len()));
    }
    if held > 0 {
        parts.push(format!("{held} held behind them, sent by the run that settles them"));
    }
    if parts.is_empty() {
        return "a rerun resolves them".into();
    }
    format!("{}; `pfsync status OPERATION_ID` shows one operation's events and why it waits", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payouts::state::Event;

    fn opts(now: DateTime<Utc>, can_look_up: bool) -> PlanOptions {
        PlanOptions {
            namespace: "default".into(),
            shard: None,
            max_total: None,
            max_count: None,
            in_flight_timeout: chrono::Duration::minutes(15),
            can_look_up,
            now,
        }
    }

    fn ev(event: Event, at: DateTime<Utc>) -> LogEvent {
        LogEvent {
            error_code: (event == Event::Unknown).then(|| "timeout".into()),
            ..LogEvent::new("p-1", crate::operation::OpKind::Payout, event, 1, "pfsync:default:payout:p-1", "r", at)
        }
    }

    #[test]
    fn a_recent_intent_waits_for_the_in_flight_timeout_an_unknown_for_a_lookup_now() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let now = t0 + chrono::Duration::minutes(2);
        let intent = [ev(Event::Intent, t0)];
        let w = why(&intent, &opts(now, true)).unwrap();
        assert_eq!(w, Wait::InFlight { since: t0, until: t0 + chrono::Duration::minutes(15) });
        assert_eq!(w.act_from(now), Some(t0 + chrono::Duration::minutes(15)));
        assert!(w.to_string().contains("from 2026-12-01 10:15:00 UTC"), "{w}");

        let unknown = [ev(Event::Intent, t0), ev(Event::Unknown, t0)];
        let w = why(&unknown, &opts(now, true)).unwrap();
        assert_eq!(w, Wait::Unknown { error_code: Some("timeout".into()) });
        assert_eq!(w.act_from(now), Some(now));
        assert_eq!(why(&unknown, &opts(now, false)), Some(Wait::NeedsPerson));
        assert_eq!(Wait::NeedsPerson.act_from(now), None);

        let done = [ev(Event::Intent, t0), ev(Event::Completed, t0)];
        assert_eq!(why(&done, &opts(now, true)), None);
        assert_eq!(why(&[], &opts(now, true)), None, "never sent: a rerun sends it");
    }

    #[test]
    fn the_summary_names_the_operations_and_the_time_a_rerun_acts() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:02:00Z").unwrap().with_timezone(&Utc);
        let until = now + chrono::Duration::minutes(13);
        let w = |id: &str, wait: Wait| Waiting { operation_id: id.into(), wait };
        let s = summary(
            &[
                w("a", Wait::InFlight { since: now, until }),
                w("b", Wait::Unknown { error_code: None }),
                w("c", Wait::NeedsPerson),
            ],
            4,
            2,
            now,
        );
        assert!(s.contains("1 in flight (a)") && s.contains("from 2026-12-01 10:15:00 UTC"), "{s}");
        assert!(s.contains("1 with an unknown outcome (b): a rerun looks them up now"), "{s}");
        assert!(s.contains("1 for a person (c)") && s.contains("1 more not listed"), "{s}");
        assert!(s.contains("2 held behind them") && s.contains("pfsync status OPERATION_ID"), "{s}");
    }
}
