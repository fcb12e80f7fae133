//! Metric rules as a source: the rules table read, each rule's runs and metric history read from MLflow
//! within the step's bounds (`RuleLimits`), what pfsync saw recorded (`sightings`), and each rule's
//! decision (`super::decide`) turned into a release or dispute row. A rule whose operation is already in
//! the log is carried on as logged, without asking MLflow.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

pub use super::limits::{DEFAULT_MAX_PAGES, DEFAULT_MAX_SECS};
use super::{Decision, Fired, RULE_OP_PREFIX, RawRule, Rule, Runs, decide, earliest, first_hit, operation_id};
use crate::mlflow::{MetricPoint, MlflowClient, MlflowError, Page};
use crate::operation::OpKind;
use crate::payouts::PayoutError;
use crate::payouts::sightings::{Hit, Seen, Sighting};
use crate::payouts::source::{Columns, RawRow, Source, get, time};
use crate::payouts::validate::{MAX_SOURCE_ROW_BYTES, RawAction, RawAmount, Reject, RejectCode, RowKind};
use crate::tables::{CommitInfo, PAYOUT_LOG, Warehouse};

/// How far in the future a run's start may lie when its value is first seen: clocks differ a little, and a
/// run that says it starts later than pfsync saw its metric says something false about itself.
const CLOCK_SKEW_MINUTES: i64 = 5;

/// The bounds of one rules step, as sync has its own (`--max-pages`, `--max-sync-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLimits {
    pub max_duration: Duration,
    pub max_pages: u32,
}

impl From<&crate::cli::RuleLimitArgs> for RuleLimits {
    fn from(a: &crate::cli::RuleLimitArgs) -> RuleLimits {
        RuleLimits { max_duration: std::time::Duration::from_secs(a.rules_max_secs), max_pages: a.rules_max_pages }
    }
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits { max_duration: Duration::from_secs(DEFAULT_MAX_SECS), max_pages: DEFAULT_MAX_PAGES }
    }
}

/// Where the rules step writes what it saw (`sightings`); a dry run has none and writes nothing.
#[derive(Clone)]
pub struct SightingStore {
    pub wh: Warehouse,
    pub commit: CommitInfo,
}

/// The rules of one pfsync run: the MLflow client (absent when MLflow is not configured: then a rules
/// table with rows is an error), its bounds, where sightings go, what fired (for tagging afterwards) and
/// what was deferred to the next run.
pub struct Rules {
    client: Option<MlflowClient>,
    now: DateTime<Utc>,
    limits: RuleLimits,
    store: Option<SightingStore>,
    fired: Mutex<HashMap<String, Fired>>,
    deferred: Mutex<Vec<String>>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("client", &self.client)
            .field("now", &self.now)
            .field("limits", &self.limits)
            .field("records", &self.store.is_some())
            .finish()
    }
}

impl Rules {
    pub fn new(
        client: Option<MlflowClient>,
        now: DateTime<Utc>,
        limits: RuleLimits,
        store: Option<SightingStore>,
    ) -> Arc<Rules> {
        Arc::new(Rules {
            client,
            now,
            limits,
            store,
            fired: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Vec::new()),
        })
    }

    pub fn client(&self) -> Option<&MlflowClient> {
        self.client.as_ref()
    }

    /// What fired, by operation id.
    pub fn fired(&self) -> HashMap<String, Fired> {
        self.fired.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The rules not decided in this run (page cap or the step's time), by rule id: the next run does.
    pub fn deferred(&self) -> Vec<String> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The runs the rule watches now, and every value of its metric in them.
    async fn watched(
        &self,
        c: &MlflowClient,
        rule: &Rule,
        cutoff: Option<DateTime<Utc>>,
        budget: &mut Budget,
    ) -> Result<(HashSet<String>, Vec<(String, MetricPoint)>), Halt> {
        let runs = match &rule.runs {
            // get-history answers an empty list for a run that does not exist: ask for the run first, so a
            // mistyped run id is refused with its reason instead of waiting forever.
            Runs::One(r) => {
                let info = budget.page(c.run(r)).await?;
                if info.is_active() {
                    vec![r.clone()]
                } else {
                    tracing::info!(rule = %rule.rule_id, mlflow_run = %r, "the rule's MLflow run is deleted: it never counts");
                    Vec::new()
                }
            }
            Runs::Search { experiment_id, filter, .. } => {
                let cutoff_ms = cutoff.map_or(i64::MIN, |t| t.timestamp_millis());
                let latest_start = (self.now + chrono::Duration::minutes(CLOCK_SKEW_MINUTES)).timestamp_millis();
                // MLflow's filter grammar has AND only: one more clause narrows the search to the runs
                // that may count, and a rule's own filter cannot widen it.
                let since = format!("attributes.start_time >= {cutoff_ms}");
                let filter = match filter {
                    Some(f) => format!("{since} and {f}"),
                    None => since,
                };
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let page: Page<_> =
                        budget.page(c.search_runs_page(experiment_id, Some(&filter), token.as_deref())).await?;
                    // Checked again here: a server that ignored a clause must not widen what counts.
                    for r in page.items {
                        let start = r.info.start_time_ms;
                        if r.info.is_active() && start.is_some_and(|s| s >= cutoff_ms && s <= latest_start) {
                            out.push(r.run_id);
                        }
                    }
                    token = page.next;
                    if token.is_none() {
                        break;
                    }
                }
                out
            }
        };
        let mut points = Vec::new();
        for run in &runs {
            let mut token: Option<String> = None;
            loop {
                let page = budget.page(c.metric_history_page(run, &rule.metric_key, token.as_deref())).await?;
                points.extend(page.items.into_iter().map(|p| (run.clone(), p)));
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
        }
        Ok((runs.into_iter().collect(), points))
    }

    /// One rule row into what the engine reads: a release or dispute action, a refusal, or nothing.
    async fn evaluate(&self, raw: RawRule, pass: &mut Pass) -> Result<Option<RawRow>, PayoutError> {
        let rule = match raw.check() {
            Ok(r) => r,
            Err(r) => return Ok(Some(RawRow::Refused(r))),
        };
        let Some(client) = &self.client else {
            return Err(PayoutError::Mlflow(MlflowError::NotConfigured));
        };
        let id = operation_id(&rule.rule_id);
        let seen = pass.seen.get(&rule.rule_id).cloned().unwrap_or_default();
        let single = match &rule.runs {
            Runs::One(r) => Some(r.clone()),
            Runs::Search { .. } => None,
        };
        if let Some((kind, reason)) = pass.logged.get(&id).cloned() {
            // Decided by an earlier run: the same operation, carried on to its outcome (MLflow is not asked).
            let mlflow_run_id = match kind {
                OpKind::EscrowRelease => earliest(seen.hits_of(&rule.metric_key)).map(|h| h.mlflow_run_id.clone()),
                _ => None,
            }
            .or(single);
            return Ok(Some(self.fire(&rule, raw.source_row, kind, mlflow_run_id, reason)));
        }
        let now = Utc.timestamp_millis_opt(self.now.timestamp_millis()).single().unwrap_or(self.now);
        let cutoff = match &rule.runs {
            Runs::One(_) => None,
            Runs::Search { since: Some(t), .. } => Some(*t),
            Runs::Search { since: None, .. } => Some(seen.rule_at.unwrap_or_else(|| {
                pass.sightings.push(Sighting::Rule { rule_id: rule.rule_id.clone(), seen_at: now });
                now
            })),
        };
        let mut budget = Budget { pages_left: self.limits.max_pages, until: pass.until };
        let (runs, points) = match self.watched(client, &rule, cutoff, &mut budget).await {
            Ok(w) => w,
            Err(Halt::Cut(why)) => {
                let why = match why {
                    Cut::Pages => format!(
                        "it needs more than {} MLflow pages (--rules-max-pages): narrow its run_filter or \
                         runs_since, or raise the cap",
                        self.limits.max_pages
                    ),
                    Cut::Time => format!(
                        "the rules step ran out of its {} s (--rules-max-secs)",
                        self.limits.max_duration.as_secs()
                    ),
                };
                tracing::warn!(rule = %rule.rule_id, "rule not decided in this run, the next run decides it: {why}");
                self.deferred.lock().unwrap_or_else(|p| p.into_inner()).push(rule.rule_id.clone());
                return Ok(None);
            }
            Err(Halt::Mlflow(e)) if e.is_rule_error() => {
                return Ok(Some(RawRow::Refused(Reject {
                    operation_id: Some(id),
                    kind: RowKind::EscrowRule,
                    code: RejectCode::InvalidRule,
                    message: e.to_string(),
                    source_row: crate::payouts::validate::clip_marked(&raw.source_row, MAX_SOURCE_ROW_BYTES),
                })));
            }
            Err(Halt::Mlflow(e)) => return Err(PayoutError::Mlflow(e)),
        };
        let hits: Vec<Hit> =
            seen.hits_of(&rule.metric_key).filter(|h| runs.contains(&h.mlflow_run_id)).cloned().collect();
        let decision = decide(&rule, &hits, &points, now);
        let unseen_in_time = !matches!(decision, Decision::Release { .. }) && first_hit(&rule, &points).is_some();
        if unseen_in_time && rule.deadline.is_some_and(|d| now > d) {
            tracing::warn!(
                rule = %rule.rule_id,
                "a value that satisfies the rule, with a time of its own before the deadline, was first seen after it: it does not count (MLflow takes that time from the client)"
            );
        }
        let (kind, mlflow_run_id, reason) = match decision {
            Decision::Nothing => {
                tracing::debug!(rule = %rule.rule_id, values = points.len(), "rule has not fired");
                return Ok(None);
            }
            Decision::Release { mlflow_run_id, reason, hit, new } => {
                if new {
                    let metric_key = rule.metric_key.clone();
                    pass.sightings.push(Sighting::Hit { rule_id: rule.rule_id.clone(), metric_key, hit });
                }
                (OpKind::EscrowRelease, Some(mlflow_run_id), reason)
            }
            Decision::Dispute { mlflow_run_id, reason } => (OpKind::EscrowDispute, mlflow_run_id, reason),
        };
        Ok(Some(self.fire(&rule, raw.source_row, kind, mlflow_run_id, reason)))
    }

    /// The release or dispute a rule yields, remembered for tagging its MLflow run.
    fn fire(
        &self,
        rule: &Rule,
        source_row: String,
        kind: OpKind,
        mlflow_run_id: Option<String>,
        reason: String,
    ) -> RawRow {
        let id = operation_id(&rule.rule_id);
        let action = if kind == OpKind::EscrowDispute { "dispute" } else { "release" };
        tracing::info!(rule = %rule.rule_id, action, "{reason}");
        self.fired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Fired { rule_id: rule.rule_id.clone(), kind, mlflow_run_id });
        RawRow::Action(RawAction {
            action_id: Some(id),
            action: Some(action.into()),
            escrow_id: rule.escrow_id.clone(),
            create_action_id: rule.create_action_id.clone(),
            buyer_agent_id: None,
            seller_agent_id: None,
            amount: RawAmount::Missing,
            description: None,
            metadata: None,
            reason: Some(reason),
            requested_at: None,
            source_row,
        })
    }
}

/// What one rules step read once for every rule, and the sightings it makes.
struct Pass {
    /// The operations of rules already in the log: kind and reason of their first intent.
    logged: HashMap<String, (OpKind, String)>,
    seen: HashMap<String, Seen>,
    /// When the step's time is up.
    until: tokio::time::Instant,
    sightings: Vec<Sighting>,
}

/// Why a rule was cut off.
enum Cut {
    Pages,
    Time,
}

enum Halt {
    Mlflow(MlflowError),
    Cut(Cut),
}

/// One rule's share of the step: pages left, and the step's end.
struct Budget {
    pages_left: u32,
    until: tokio::time::Instant,
}

impl Budget {
    /// One MLflow request, if the rule has a page left and the step has time left; cut off when the
    /// step's time runs out while it waits.
    async fn page<T>(&mut self, call: impl std::future::Future<Output = Result<T, MlflowError>>) -> Result<T, Halt> {
        if self.pages_left == 0 {
            return Err(Halt::Cut(Cut::Pages));
        }
        if tokio::time::Instant::now() >= self.until {
            return Err(Halt::Cut(Cut::Time));
        }
        self.pages_left -= 1;
        match tokio::time::timeout_at(self.until, call).await {
            Ok(r) => r.map_err(Halt::Mlflow),
            Err(_) => Err(Halt::Cut(Cut::Time)),
        }
    }
}

/// The rule operations already in the log: the kind and reason of each one's first intent.
async fn logged_decisions(ctx: &SessionContext) -> Result<HashMap<String, (OpKind, String)>, PayoutError> {
    let mut out = HashMap::new();
    if !ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false) {
        return Ok(out);
    }
    let what = "reading the rule operations of the payout log";
    let sql = format!(
        "SELECT operation_id, kind, reason FROM {} WHERE event = 'intent' AND starts_with(operation_id, \
         '{RULE_OP_PREFIX}') ORDER BY recorded_at",
        PAYOUT_LOG.name
    );
    let batches =
        ctx.sql(&sql).await.map_err(PayoutError::query(what))?.collect().await.map_err(PayoutError::query(what))?;
    for b in &batches {
        let cols = Columns::new(b)?;
        let (id, kind, reason) = (cols.text("operation_id")?, cols.text("kind")?, cols.text("reason")?);
        for i in 0..b.num_rows() {
            let (Some(id), Some(kind)) = (get(&id, i), get(&kind, i).as_deref().and_then(OpKind::parse)) else {
                continue;
            };
            out.entry(id).or_insert((kind, get(&reason, i).unwrap_or_default()));
        }
    }
    Ok(out)
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
            let rules = &self.0;
            let until = tokio::time::Instant::now() + rules.limits.max_duration;
            let required = crate::tables::ESCROW_RULES.required_columns();
            let batches = crate::payouts::source::query(ctx, &self.name(), DEFAULT_RULES_SQL, required).await?;
            let mut pass = Pass {
                logged: logged_decisions(ctx).await?,
                seen: crate::payouts::sightings::read(ctx).await?,
                until,
                sightings: Vec::new(),
            };
            let mut out = Vec::new();
            for raw in rules_from(&batches)? {
                out.extend(rules.evaluate(raw, &mut pass).await?);
            }
            // What was seen for the first time is recorded before any release it leads to is planned.
            if let Some(store) = &rules.store {
                crate::payouts::sightings::append(&store.wh, &store.commit, &pass.sightings).await?;
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
        let since = cols.times("runs_since");
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
                runs_since: time(&since, i),
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
