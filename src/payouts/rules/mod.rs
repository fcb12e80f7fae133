//! Metric rules (`purpleflea.escrow.rules`) as a [`Source`]: each rule watches one metric of an MLflow run
//! (or of the runs of an experiment that match a filter) and, when a logged value crosses its threshold,
//! yields a release of its escrow; when its deadline passes without a hit and it says so, a dispute. The
//! operation id is `rule:<rule_id>` for both, so the log lets a rule move money at most once, ever. Once a
//! rule's operation is in the log, that is its decision: read again, the rule yields the same operation
//! (carried on to its outcome), never another one. Everything else (the log, rejects, brake, exactly-once
//! execution) is the engine's, as for every source.
//!
//! Time is judged by what pfsync saw, not by what a client claims: MLflow stores the time the client gives
//! with a value, so a value logged after the deadline with an earlier time must not count. A value counts
//! toward a deadline only if pfsync saw it by then (`sightings`: the hit is recorded with the time pfsync
//! first saw it, before the release is planned) and its own time is by then too. Among the values seen for
//! the first time, the hit is the earliest (by timestamp, then step, then run id) that satisfies the rule,
//! so every run of pfsync derives the same reason text from the same history.
//!
//! A search rule counts only runs that started after pfsync first read the rule (or at or after its
//! `runs_since`), and never a deleted run nor one whose start lies in the future when its value is first
//! seen. The rules step is bounded: every rule reads at most `max_pages` MLflow pages, and the whole step
//! takes at most `max_duration`; a rule cut off by either is deferred to the next run (and counted), so
//! `pfsync run --follow` goes on to its next step.

pub mod limits;
mod source;

use chrono::{DateTime, TimeZone, Utc};

use super::sightings::Hit;
use super::validate::{MAX_SOURCE_ROW_BYTES, Reject, RejectCode, RowKind};
use crate::mlflow::MetricPoint;
use crate::operation::OpKind;

pub use source::{
    DEFAULT_MAX_PAGES, DEFAULT_MAX_SECS, DEFAULT_RULES_SQL, RuleLimits, RuleSource, Rules, SightingStore,
};

/// Prefix of every rule's operation id.
pub const RULE_OP_PREFIX: &str = "rule:";

/// The operation id of a rule.
pub fn operation_id(rule_id: &str) -> String {
    format!("{RULE_OP_PREFIX}{rule_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        Some(match s.trim() {
            ">" => Direction::Gt,
            ">=" => Direction::Ge,
            "<" => Direction::Lt,
            "<=" => Direction::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Gt => ">",
            Direction::Ge => ">=",
            Direction::Lt => "<",
            Direction::Le => "<=",
        }
    }

    /// Does `value` satisfy `value DIRECTION threshold`? NaN never does.
    pub fn hit(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::Gt => value > threshold,
            Direction::Ge => value >= threshold,
            Direction::Lt => value < threshold,
            Direction::Le => value <= threshold,
        }
    }
}

/// Which runs a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Runs {
    One(String),
    /// Runs of an experiment matching `filter`, started at or after `since` (`None`: after pfsync first
    /// read the rule).
    Search {
        experiment_id: String,
        filter: Option<String>,
        since: Option<DateTime<Utc>>,
    },
}

/// A rule row, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub rule_id: String,
    pub escrow_id: Option<String>,
    pub create_action_id: Option<String>,
    pub runs: Runs,
    pub metric_key: String,
    pub threshold: f64,
    pub direction: Direction,
    pub deadline: Option<DateTime<Utc>>,
    pub dispute_on_deadline: bool,
    pub reason: Option<String>,
}

/// A rule row as read, before its checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRule {
    pub rule_id: Option<String>,
    pub escrow_id: Option<String>,
    pub create_action_id: Option<String>,
    pub mlflow_run_id: Option<String>,
    pub experiment_id: Option<String>,
    pub filter: Option<String>,
    pub runs_since: Option<DateTime<Utc>>,
    pub metric_key: Option<String>,
    pub threshold: Option<f64>,
    pub direction: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    pub on_deadline: Option<String>,
    pub reason: Option<String>,
    pub source_row: String,
}

fn nonblank(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

impl RawRule {
    /// The rule, or why it cannot be evaluated (code `invalid_rule` unless the id itself is wrong).
    pub fn check(&self) -> Result<Rule, Reject> {
        let reject = |code: RejectCode, message: String| Reject {
            operation_id: self.rule_id.as_deref().map(operation_id),
            kind: RowKind::EscrowRule,
            code,
            message,
            source_row: crate::payouts::validate::clip_marked(&self.source_row, MAX_SOURCE_ROW_BYTES),
        };
        let invalid = |m: &str| reject(RejectCode::InvalidRule, m.to_string());
        let rule_id = self.rule_id.clone().ok_or_else(|| reject(RejectCode::MissingId, "rule_id is missing".into()))?;
        super::validate::check_id(&operation_id(&rule_id))
            .map_err(|e| reject(RejectCode::InvalidId, format!("rule_id {rule_id:?}: rule:<rule_id> {e}")))?;
        let (escrow_id, create_action_id) = (nonblank(&self.escrow_id), nonblank(&self.create_action_id));
        if escrow_id.is_some() == create_action_id.is_some() {
            return Err(reject(
                RejectCode::MissingEscrow,
                "exactly one of escrow_id and create_action_id must be set".into(),
            ));
        }
        let runs = match (nonblank(&self.mlflow_run_id), nonblank(&self.experiment_id)) {
            (Some(r), None) if nonblank(&self.filter).is_none() && self.runs_since.is_none() => Runs::One(r),
            (Some(_), None) => {
                return Err(invalid("run_filter and runs_since go with experiment_id, not with mlflow_run_id"));
            }
            (None, Some(e)) => {
                Runs::Search { experiment_id: e, filter: nonblank(&self.filter), since: self.runs_since }
            }
            _ => return Err(invalid("exactly one of mlflow_run_id and experiment_id must be set")),
        };
        let metric_key = nonblank(&self.metric_key).ok_or_else(|| invalid("metric_key is missing"))?;
        let threshold = self.threshold.ok_or_else(|| invalid("threshold is missing"))?;
        if !threshold.is_finite() {
            return Err(invalid("threshold must be a finite number"));
        }
        let direction = match self.direction.as_deref() {
            None => return Err(invalid("direction is missing (one of >, >=, <, <=)")),
            Some(d) => Direction::parse(d).ok_or_else(|| {
                reject(RejectCode::InvalidRule, format!("direction {d:?} is not one of >, >=, <, <="))
            })?,
        };
        let dispute_on_deadline = match nonblank(&self.on_deadline).as_deref() {
            None | Some("nothing") => false,
            Some("dispute") => true,
            Some(o) => {
                return Err(reject(RejectCode::InvalidRule, format!("on_deadline {o:?} is not nothing or dispute")));
            }
        };
        if dispute_on_deadline && self.deadline.is_none() {
            return Err(invalid("on_deadline = dispute needs a deadline"));
        }
        Ok(Rule {
            rule_id,
            escrow_id,
            create_action_id,
            runs,
            metric_key,
            threshold,
            direction,
            deadline: self.deadline,
            dispute_on_deadline,
            reason: nonblank(&self.reason),
        })
    }
}

/// Does `p` satisfy the rule, with a time of its own by the deadline? (Not enough for the deadline: see
/// [`decide`].)
fn satisfies(rule: &Rule, p: &MetricPoint) -> bool {
    let deadline_ms = rule.deadline.map(|d| d.timestamp_millis());
    deadline_ms.is_none_or(|d| p.timestamp_ms <= d) && rule.direction.hit(p.value, rule.threshold)
}

/// The first value (by timestamp, step, run) that satisfies the rule, logged by its deadline by its own time.
pub fn first_hit<'a>(rule: &Rule, points: &'a [(String, MetricPoint)]) -> Option<&'a (String, MetricPoint)> {
    points
        .iter()
        .filter(|(_, p)| satisfies(rule, p))
        .min_by(|(ra, a), (rb, b)| (a.timestamp_ms, a.step, ra).cmp(&(b.timestamp_ms, b.step, rb)))
}

/// What a rule decided now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Release {
        mlflow_run_id: String,
        reason: String,
        /// The value it fired on, with the time pfsync first saw it.
        hit: Hit,
        /// Seen for the first time now: to be recorded before the release is planned.
        new: bool,
    },
    Dispute {
        mlflow_run_id: Option<String>,
        reason: String,
    },
    /// Not fired (yet), or past its deadline with nothing to do.
    Nothing,
}

fn runs_text(rule: &Rule) -> String {
    match &rule.runs {
        Runs::One(r) => format!("MLflow run {r}"),
        Runs::Search { experiment_id, filter: Some(f), .. } => {
            format!("any run of MLflow experiment {experiment_id} matching {f}")
        }
        Runs::Search { experiment_id, filter: None, .. } => format!("any run of MLflow experiment {experiment_id}"),
    }
}

/// The decision for a rule at `now`, given the hits pfsync saw in earlier runs (`seen`, of runs the rule
/// still watches) and every value of its metric in those runs now (`points`).
///
/// A value counts toward the deadline only if pfsync saw it by then: a hit recorded by the deadline
/// fires the rule whenever it is read again; a value seen for the first time fires it only while the
/// deadline has not passed. Past it, a value whose own time is earlier but that pfsync had not seen (a
/// backdated log) does not count, and the rule disputes if it says so.
pub fn decide(rule: &Rule, seen: &[Hit], points: &[(String, MetricPoint)], now: DateTime<Utc>) -> Decision {
    let in_time = |t: DateTime<Utc>| rule.deadline.is_none_or(|d| t <= d);
    if let Some(hit) = earliest(seen.iter().filter(|h| in_time(h.seen_at) && satisfies(rule, &h.point))) {
        return release(rule, hit.clone(), false);
    }
    if in_time(now)
        && let Some((run, p)) = first_hit(rule, points)
    {
        let seen_at = Utc.timestamp_millis_opt(now.timestamp_millis()).single().unwrap_or(now);
        return release(rule, Hit { mlflow_run_id: run.clone(), point: p.clone(), seen_at }, true);
    }
    let suffix = rule.reason.as_deref().map(|r| format!("; {r}")).unwrap_or_default();
    match rule.deadline {
        Some(d) if now > d && rule.dispute_on_deadline => Decision::Dispute {
            mlflow_run_id: match &rule.runs {
                Runs::One(r) => Some(r.clone()),
                Runs::Search { .. } => None,
            },
            reason: format!(
                "rule {}: deadline {} passed without metric {} {} {} on {}, seen by pfsync by then{suffix}",
                rule.rule_id,
                d.to_rfc3339(),
                rule.metric_key,
                rule.direction.as_str(),
                rule.threshold,
                runs_text(rule)
            ),
        },
        _ => Decision::Nothing,
    }
}

/// The earliest hit by timestamp, step and run, then by when it was first seen (two runs at once may both
/// have recorded it): the same one whatever order the sightings are read in.
fn earliest<'a>(hits: impl Iterator<Item = &'a Hit>) -> Option<&'a Hit> {
    hits.min_by(|a, b| {
        (a.point.timestamp_ms, a.point.step, &a.mlflow_run_id, a.seen_at).cmp(&(
            b.point.timestamp_ms,
            b.point.step,
            &b.mlflow_run_id,
            b.seen_at,
        ))
    })
}

fn release(rule: &Rule, hit: Hit, new: bool) -> Decision {
    let suffix = rule.reason.as_deref().map(|r| format!("; {r}")).unwrap_or_default();
    let p = &hit.point;
    let at = Utc.timestamp_millis_opt(p.timestamp_ms).single().map(|t| t.to_rfc3339()).unwrap_or_default();
    // Nothing of this run's own in the text (not the time pfsync first saw the value: that is in the
    // sightings table), so two runs at once derive the same reason, hence the same operation.
    let reason = format!(
        "rule {}: MLflow run {} metric {} = {} at step {} ({at}) {} {}{suffix}",
        rule.rule_id,
        hit.mlflow_run_id,
        rule.metric_key,
        p.value,
        p.step,
        rule.direction.as_str(),
        rule.threshold
    );
    Decision::Release { mlflow_run_id: hit.mlflow_run_id.clone(), reason, hit, new }
}

/// A rule that fired in this run of pfsync: which MLflow run to tag once its outcome is logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub rule_id: String,
    pub kind: OpKind,
    pub mlflow_run_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawRule {
        RawRule {
            rule_id: Some("r1".into()),
            escrow_id: Some("esc_1".into()),
            mlflow_run_id: Some("abc".into()),
            metric_key: Some("val_accuracy".into()),
            threshold: Some(0.95),
            direction: Some(">=".into()),
            ..RawRule::default()
        }
    }

    fn pt(run: &str, value: f64, step: i64, ts: i64) -> (String, MetricPoint) {
        (run.into(), MetricPoint { value, step, timestamp_ms: ts })
    }

    #[test]
    fn rules_are_checked_before_mlflow_is_asked() {
        assert!(raw().check().is_ok());
        let bad = [
            RawRule { rule_id: None, ..raw() },
            RawRule { rule_id: Some("a b".into()), ..raw() },
            RawRule { create_action_id: Some("c1".into()), ..raw() },
            RawRule { escrow_id: None, ..raw() },
            RawRule { experiment_id: Some("1".into()), ..raw() },
            RawRule { mlflow_run_id: None, ..raw() },
            RawRule { filter: Some("tags.x = 1".into()), ..raw() },
            RawRule { runs_since: Some(Utc::now()), ..raw() },
            RawRule { metric_key: Some(" ".into()), ..raw() },
            RawRule { threshold: None, ..raw() },
            RawRule { threshold: Some(f64::NAN), ..raw() },
            RawRule { direction: Some("=>".into()), ..raw() },
            RawRule { on_deadline: Some("dispute".into()), ..raw() },
            RawRule { on_deadline: Some("refund".into()), deadline: Some(Utc::now()), ..raw() },
        ];
        for b in bad {
            let r = b.check().unwrap_err();
            assert_eq!(r.kind, RowKind::EscrowRule, "{b:?}");
        }
        let r = RawRule { direction: Some("=>".into()), ..raw() }.check().unwrap_err();
        assert_eq!((r.code, r.operation_id.as_deref()), (RejectCode::InvalidRule, Some("rule:r1")));
    }

    #[test]
    fn the_first_value_over_the_threshold_by_the_deadline_fires_and_names_run_metric_value_and_step() {
        let rule = raw().check().unwrap();
        let now = Utc::now();
        let pts = [pt("abc", 0.90, 1, 1000), pt("abc", 0.96, 2, 2000), pt("abc", 0.97, 3, 3000)];
        match decide(&rule, &[], &pts, now) {
            Decision::Release { mlflow_run_id, reason, .. } => {
                assert_eq!(mlflow_run_id, "abc");
                assert!(reason.starts_with("rule r1: MLflow run abc metric val_accuracy = 0.96 at step 2"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(&rule, &[], &pts[..1], now), Decision::Nothing);
        let nan = [pt("abc", f64::NAN, 1, 1000)];
        assert_eq!(decide(&rule, &[], &nan, now), Decision::Nothing);
        // A deadline: values logged after it do not count; past it, a dispute if the rule says so.
        let deadline = Utc.timestamp_millis_opt(1500).unwrap();
        let late = RawRule { deadline: Some(deadline), on_deadline: Some("dispute".into()), ..raw() }.check().unwrap();
        match decide(&late, &[], &pts, now) {
            Decision::Dispute { mlflow_run_id, reason } => {
                assert_eq!(mlflow_run_id.as_deref(), Some("abc"));
                assert!(reason.contains("passed without metric val_accuracy >= 0.95"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(&late, &[], &pts, deadline), Decision::Nothing, "not past it yet");
        let quiet = RawRule { deadline: Some(deadline), ..raw() }.check().unwrap();
        assert_eq!(decide(&quiet, &[], &pts, now), Decision::Nothing);
        let below = RawRule { direction: Some("<".into()), threshold: Some(50.0), ..raw() }.check().unwrap();
        assert!(matches!(decide(&below, &[], &[pt("abc", 49.5, 7, 10)], now), Decision::Release { .. }));
    }

    #[test]
    fn a_deadline_counts_only_values_pfsync_saw_by_then_whatever_time_the_client_gave() {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        let deadline = at(10_000);
        let rule = RawRule { deadline: Some(deadline), on_deadline: Some("dispute".into()), ..raw() }.check().unwrap();
        // Logged after the deadline with a time before it: seen only now, past the deadline.
        let backdated = [pt("abc", 0.90, 1, 1000), pt("abc", 0.99, 2, 9000)];
        assert!(matches!(decide(&rule, &[], &backdated, at(20_000)), Decision::Dispute { .. }));
        // The same value seen by pfsync before the deadline (recorded then): it counts, at any later run.
        let seen = Hit { mlflow_run_id: "abc".into(), point: backdated[1].1.clone(), seen_at: at(9_500) };
        match decide(&rule, std::slice::from_ref(&seen), &backdated, at(20_000)) {
            Decision::Release { hit, new, reason, .. } => {
                assert_eq!((hit, new), (seen.clone(), false));
                assert!(reason.starts_with("rule r1: MLflow run abc metric val_accuracy = 0.99 at step 2"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // Seen for the first time before the deadline: it fires, and is to be recorded with that time.
        match decide(&rule, &[], &backdated, at(9_999)) {
            Decision::Release { hit, new: true, .. } => assert_eq!(hit.seen_at, at(9_999)),
            d => panic!("{d:?}"),
        }
        // A recorded hit the rule no longer takes (a raised threshold), or seen after the deadline: no.
        let stricter = RawRule { threshold: Some(0.995), ..raw() }.check().unwrap();
        let stricter = Rule { deadline: Some(deadline), dispute_on_deadline: true, ..stricter };
        assert!(matches!(
            decide(&stricter, std::slice::from_ref(&seen), &backdated, at(20_000)),
            Decision::Dispute { .. }
        ));
        let late = Hit { seen_at: at(10_001), ..seen };
        assert!(matches!(decide(&rule, &[late], &backdated, at(20_000)), Decision::Dispute { .. }));
    }
}
