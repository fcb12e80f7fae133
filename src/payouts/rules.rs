//! Metric rules (`purpleflea.escrow.rules`) as a [`Source`]: each rule watches one metric of an MLflow run
//! (or of any run of an experiment that matches a filter) and, when a logged value crosses its threshold,
//! yields a release of its escrow; when its deadline passes without a hit and it says so, a dispute. The
//! operation id is `rule:<rule_id>` for both, so the log lets a rule move money at most once, ever: a
//! second outcome of the same rule (a release after its dispute) has the same id with other values and is
//! refused as `id_reused`. Everything else (the log, rejects, brake, exactly-once execution) is the
//! engine's, as for every source.
//!
//! Only values logged by the deadline count. Among them the hit is the earliest (by timestamp, then step,
//! then run id) that satisfies the rule, so every run of pfsync derives the same reason text from the same
//! history.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

use super::PayoutError;
use super::source::{Columns, RawRow, Source, get, time};
use super::validate::{MAX_SOURCE_ROW_BYTES, RawAction, RawAmount, Reject, RejectCode, RowKind};
use crate::mlflow::{MetricPoint, MlflowClient, MlflowError};
use crate::operation::OpKind;

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
    Search { experiment_id: String, filter: Option<String> },
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
            source_row: self.source_row.chars().take(MAX_SOURCE_ROW_BYTES).collect(),
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
            (Some(r), None) if nonblank(&self.filter).is_none() => Runs::One(r),
            (Some(_), None) => return Err(invalid("run_filter goes with experiment_id, not with mlflow_run_id")),
            (None, Some(e)) => Runs::Search { experiment_id: e, filter: nonblank(&self.filter) },
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

/// The first value (by timestamp, step, run) that satisfies the rule, logged by its deadline.
pub fn first_hit<'a>(rule: &Rule, points: &'a [(String, MetricPoint)]) -> Option<&'a (String, MetricPoint)> {
    let deadline_ms = rule.deadline.map(|d| d.timestamp_millis());
    points
        .iter()
        .filter(|(_, p)| deadline_ms.is_none_or(|d| p.timestamp_ms <= d))
        .filter(|(_, p)| rule.direction.hit(p.value, rule.threshold))
        .min_by(|(ra, a), (rb, b)| (a.timestamp_ms, a.step, ra).cmp(&(b.timestamp_ms, b.step, rb)))
}

/// What a rule decided now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Release {
        mlflow_run_id: String,
        reason: String,
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
        Runs::Search { experiment_id, filter: Some(f) } => {
            format!("any run of MLflow experiment {experiment_id} matching {f}")
        }
        Runs::Search { experiment_id, filter: None } => format!("any run of MLflow experiment {experiment_id}"),
    }
}

/// The decision for a rule given every value of its metric in the runs it watches.
pub fn decide(rule: &Rule, points: &[(String, MetricPoint)], now: DateTime<Utc>) -> Decision {
    let suffix = rule.reason.as_deref().map(|r| format!("; {r}")).unwrap_or_default();
    if let Some((run, p)) = first_hit(rule, points) {
        let at = Utc.timestamp_millis_opt(p.timestamp_ms).single().map(|t| t.to_rfc3339()).unwrap_or_default();
        return Decision::Release {
            mlflow_run_id: run.clone(),
            reason: format!(
                "rule {}: MLflow run {run} metric {} = {} at step {} ({at}) {} {}{suffix}",
                rule.rule_id,
                rule.metric_key,
                p.value,
                p.step,
                rule.direction.as_str(),
                rule.threshold
            ),
        };
    }
    match rule.deadline {
        Some(d) if now > d && rule.dispute_on_deadline => Decision::Dispute {
            mlflow_run_id: match &rule.runs {
                Runs::One(r) => Some(r.clone()),
                Runs::Search { .. } => None,
            },
            reason: format!(
                "rule {}: deadline {} passed without metric {} {} {} on {}{suffix}",
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

/// A rule that fired in this run of pfsync: which MLflow run to tag once its outcome is logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub rule_id: String,
    pub kind: OpKind,
    pub mlflow_run_id: Option<String>,
}

/// The rules of one pfsync run: the MLflow client (absent when MLflow is not configured: then a rules
/// table with rows is an error), and what fired, for tagging afterwards.
pub struct Rules {
    client: Option<MlflowClient>,
    now: DateTime<Utc>,
    fired: Mutex<HashMap<String, Fired>>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules").field("client", &self.client).field("now", &self.now).finish()
    }
}

impl Rules {
    pub fn new(client: Option<MlflowClient>, now: DateTime<Utc>) -> Arc<Rules> {
        Arc::new(Rules { client, now, fired: Mutex::new(HashMap::new()) })
    }

    pub fn client(&self) -> Option<&MlflowClient> {
        self.client.as_ref()
    }

    /// What fired, by operation id.
    pub fn fired(&self) -> HashMap<String, Fired> {
        self.fired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn points(&self, c: &MlflowClient, rule: &Rule) -> Result<Vec<(String, MetricPoint)>, MlflowError> {
        let runs = match &rule.runs {
            // get-history answers an empty list for a run that does not exist: ask for the run first, so a
            // mistyped run id is refused with its reason instead of waiting forever.
            Runs::One(r) => {
                c.run_tags(r).await?;
                vec![r.clone()]
            }
            Runs::Search { experiment_id, filter } => c.search_runs(experiment_id, filter.as_deref()).await?,
        };
        let mut out = Vec::new();
        for run in runs {
            out.extend(c.metric_history(&run, &rule.metric_key).await?.into_iter().map(|p| (run.clone(), p)));
        }
        Ok(out)
    }

    /// One rule row into what the engine reads: a release or dispute action, a refusal, or nothing.
    async fn evaluate(&self, raw: RawRule) -> Result<Option<RawRow>, PayoutError> {
        let rule = match raw.check() {
            Ok(r) => r,
            Err(r) => return Ok(Some(RawRow::Refused(r))),
        };
        let Some(client) = &self.client else {
            return Err(PayoutError::Mlflow(MlflowError::NotConfigured));
        };
        let points = match self.points(client, &rule).await {
            Ok(p) => p,
            Err(e) if e.is_rule_error() => {
                return Ok(Some(RawRow::Refused(Reject {
                    operation_id: Some(operation_id(&rule.rule_id)),
                    kind: RowKind::EscrowRule,
                    code: RejectCode::InvalidRule,
                    message: e.to_string(),
                    source_row: raw.source_row.chars().take(MAX_SOURCE_ROW_BYTES).collect(),
                })));
            }
            Err(e) => return Err(PayoutError::Mlflow(e)),
        };
        let (action, mlflow_run_id, reason, kind) = match decide(&rule, &points, self.now) {
            Decision::Nothing => {
                tracing::debug!(rule = %rule.rule_id, values = points.len(), "rule has not fired");
                return Ok(None);
            }
            Decision::Release { mlflow_run_id, reason } => {
                ("release", Some(mlflow_run_id), reason, OpKind::EscrowRelease)
            }
            Decision::Dispute { mlflow_run_id, reason } => ("dispute", mlflow_run_id, reason, OpKind::EscrowDispute),
        };
        let id = operation_id(&rule.rule_id);
        tracing::info!(rule = %rule.rule_id, action, "{reason}");
        self.fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Fired { rule_id: rule.rule_id.clone(), kind, mlflow_run_id });
        Ok(Some(RawRow::Action(RawAction {
            action_id: Some(id),
            action: Some(action.into()),
            escrow_id: rule.escrow_id,
            create_action_id: rule.create_action_id,
            buyer_agent_id: None,
            seller_agent_id: None,
            amount: RawAmount::Missing,
            description: None,
            metadata: None,
            reason: Some(reason),
            requested_at: None,
            source_row: raw.source_row,
        })))
    }
}

pub const DEFAULT_RULES_SQL: &str = "SELECT * FROM purpleflea.escrow.rules";

/// The rules table as a source.
pub struct RuleSource(pub Arc<Rules>);

impl Source for RuleSource {
    fn name(&self) -> String {
        crate::tables::ESCROW_RULES.name.to_string()
    }

    fn read<'a>(&'a self, ctx: &'a SessionContext) -> BoxFuture<'a, Result<Vec<RawRow>, PayoutError>> {
        Box::pin(async move {
            if !ctx.table_exist(crate::tables::ESCROW_RULES.name).unwrap_or(false) {
                return Ok(Vec::new());
            }
            let required = crate::tables::ESCROW_RULES.required_columns();
            let batches = super::source::query(ctx, &self.name(), DEFAULT_RULES_SQL, required).await?;
            let mut out = Vec::new();
            for raw in rules_from(&batches)? {
                out.extend(self.0.evaluate(raw).await?);
            }
            Ok(out)
        })
    }
}

fn rules_from(batches: &[arrow::array::RecordBatch]) -> Result<Vec<RawRule>, PayoutError> {
    use arrow::array::{Array, Float64Array};
    let mut out = Vec::new();
    for b in batches {
        let cols = Columns::new(b)?;
        let t = |n: &str| cols.text(n);
        let (id, escrow, create, run) = (t("rule_id")?, t("escrow_id")?, t("create_action_id")?, t("mlflow_run_id")?);
        let (exp, filter, key, dir) = (t("experiment_id")?, t("run_filter")?, t("metric_key")?, t("direction")?);
        let (on, reason) = (t("on_deadline")?, t("reason")?);
        let threshold = match cols.column("threshold") {
            Some(c) => Some(arrow::compute::cast(c, &arrow::datatypes::DataType::Float64)?),
            None => None,
        };
        let threshold = threshold.as_ref().and_then(|a| a.as_any().downcast_ref::<Float64Array>().cloned());
        let deadline = cols.times("deadline");
        for i in 0..b.num_rows() {
            out.push(RawRule {
                rule_id: get(&id, i),
                escrow_id: get(&escrow, i),
                create_action_id: get(&create, i),
                mlflow_run_id: get(&run, i),
                experiment_id: get(&exp, i),
                filter: get(&filter, i),
                metric_key: get(&key, i),
                threshold: threshold.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i)),
                direction: get(&dir, i),
                deadline: time(&deadline, i),
                on_deadline: get(&on, i),
                reason: get(&reason, i),
                source_row: cols.row_json(i),
            });
        }
    }
    Ok(out)
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
        match decide(&rule, &pts, now) {
            Decision::Release { mlflow_run_id, reason } => {
                assert_eq!(mlflow_run_id, "abc");
                assert!(reason.starts_with("rule r1: MLflow run abc metric val_accuracy = 0.96 at step 2"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(&rule, &pts[..1], now), Decision::Nothing);
        let nan = [pt("abc", f64::NAN, 1, 1000)];
        assert_eq!(decide(&rule, &nan, now), Decision::Nothing);
        // A deadline: values logged after it do not count; past it, a dispute if the rule says so.
        let deadline = Utc.timestamp_millis_opt(1500).unwrap();
        let late = RawRule { deadline: Some(deadline), on_deadline: Some("dispute".into()), ..raw() }.check().unwrap();
        match decide(&late, &pts, now) {
            Decision::Dispute { mlflow_run_id, reason } => {
                assert_eq!(mlflow_run_id.as_deref(), Some("abc"));
                assert!(reason.contains("passed without metric val_accuracy >= 0.95"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(&late, &pts, deadline), Decision::Nothing, "not past it yet");
        let quiet = RawRule { deadline: Some(deadline), ..raw() }.check().unwrap();
        assert_eq!(decide(&quiet, &pts, now), Decision::Nothing);
        let below = RawRule { direction: Some("<".into()), threshold: Some(50.0), ..raw() }.check().unwrap();
        assert!(matches!(decide(&below, &[pt("abc", 49.5, 7, 10)], now), Decision::Release { .. }));
    }
}
