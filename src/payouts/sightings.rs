//! `purpleflea.escrow.rule_sightings`: what the rules step saw of a metric rule, and when, by pfsync's own
//! clock. MLflow stores the time a client gives with a metric value, so a value logged after a rule's
//! deadline with an earlier time would otherwise count; a deadline counts only the values pfsync saw by
//! then (`rules::decide`). Two kinds of row, each written once per rule and kind at most:
//! - `rule`: when pfsync first read a search rule; without `runs_since`, only runs started after it count.
//! - `hit`: the value that fired the rule, first seen at `seen_at`; written before the release it leads to
//!   is planned, so a release held up past the deadline (the brake, a missing create) still counts it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;

use super::PayoutError;
use super::source::{Columns, get, time};
use crate::mlflow::MetricPoint;
use crate::tables::{CommitInfo, RULE_SIGHTINGS, Warehouse, open_or_create};

/// A metric value that satisfies a rule, and when pfsync first saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub mlflow_run_id: String,
    pub point: MetricPoint,
    pub seen_at: DateTime<Utc>,
}

/// What pfsync saw of one rule in earlier runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// When pfsync first read the rule (search rules).
    pub rule_at: Option<DateTime<Utc>>,
    /// Hits, by metric key.
    pub hits: Vec<(String, Hit)>,
}

impl Seen {
    /// The hits of `metric_key` (a rule whose metric changed does not keep the old metric's hits).
    pub fn hits_of<'a>(&'a self, metric_key: &'a str) -> impl Iterator<Item = &'a Hit> + 'a {
        self.hits.iter().filter(move |(k, _)| k == metric_key).map(|(_, h)| h)
    }
}

/// A new sighting, to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum Sighting {
    Rule { rule_id: String, seen_at: DateTime<Utc> },
    Hit { rule_id: String, metric_key: String, hit: Hit },
}

/// Every sighting so far, by rule id; none when the table does not exist yet.
pub async fn read(ctx: &SessionContext) -> Result<HashMap<String, Seen>, PayoutError> {
    let mut out: HashMap<String, Seen> = HashMap::new();
    if !ctx.table_exist(RULE_SIGHTINGS.name).unwrap_or(false) {
        return Ok(out);
    }
    let what = "reading purpleflea.escrow.rule_sightings";
    let sql = format!(
        "SELECT rule_id, sighting, mlflow_run_id, metric_key, step, value, logged_at, seen_at FROM {}",
        RULE_SIGHTINGS.name
    );
    let batches =
        ctx.sql(&sql).await.map_err(PayoutError::query(what))?.collect().await.map_err(PayoutError::query(what))?;
    for b in &batches {
        let cols = Columns::new(b)?;
        let t = |n: &str| cols.text(n);
        let (rule, kind, run, key) = (t("rule_id")?, t("sighting")?, t("mlflow_run_id")?, t("metric_key")?);
        let (logged, seen) = (cols.times("logged_at"), cols.times("seen_at"));
        let step = cols.column("step").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        let value = cols.column("value").and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned());
        for i in 0..b.num_rows() {
            let (Some(rule_id), Some(seen_at)) = (get(&rule, i), time(&seen, i)) else {
                return Err(PayoutError::LogRow(format!("{} row {i} has no rule_id or seen_at", RULE_SIGHTINGS.name)));
            };
            let entry = out.entry(rule_id).or_default();
            match get(&kind, i).as_deref() {
                Some("rule") => entry.rule_at = Some(entry.rule_at.map_or(seen_at, |t| t.min(seen_at))),
                Some("hit") => {
                    let step = step.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i));
                    let value = value.as_ref().filter(|a| !a.is_null(i)).map(|a| a.value(i));
                    let (Some(mlflow_run_id), Some(metric_key), Some(step), Some(value), Some(logged_at)) =
                        (get(&run, i), get(&key, i), step, value, time(&logged, i))
                    else {
                        return Err(PayoutError::LogRow(format!("{} hit row {i} is incomplete", RULE_SIGHTINGS.name)));
                    };
                    let point = MetricPoint { value, step, timestamp_ms: logged_at.timestamp_millis() };
                    entry.hits.push((metric_key, Hit { mlflow_run_id, point, seen_at }));
                }
                other => {
                    return Err(PayoutError::LogRow(format!(
                        "{} row {i} has sighting {other:?}, not rule or hit",
                        RULE_SIGHTINGS.name
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Append new sightings in one commit (the table is created on first use).
pub async fn append(wh: &Warehouse, commit: &CommitInfo, sightings: &[Sighting]) -> Result<(), PayoutError> {
    if sightings.is_empty() {
        return Ok(());
    }
    let table = open_or_create(wh, &RULE_SIGHTINGS, commit).await?;
    table
        .write(vec![batch(sightings, &commit.run_id)?])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| PayoutError::write(RULE_SIGHTINGS.name, e))?;
    Ok(())
}

fn batch(sightings: &[Sighting], run_id: &str) -> Result<RecordBatch, PayoutError> {
    let text = |f: &dyn Fn(&Sighting) -> Option<String>| -> ArrayRef {
        Arc::new(sightings.iter().map(f).collect::<StringArray>())
    };
    let hit = |s: &Sighting| match s {
        Sighting::Hit { hit, .. } => Some(hit.clone()),
        Sighting::Rule { .. } => None,
    };
    let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
    let logged = |h: &Hit| Utc.timestamp_millis_opt(h.point.timestamp_ms).single();
    let columns: Vec<ArrayRef> = vec![
        text(&|s| {
            Some(match s {
                Sighting::Rule { rule_id, .. } | Sighting::Hit { rule_id, .. } => rule_id.clone(),
            })
        }),
        text(&|s| Some(if matches!(s, Sighting::Rule { .. }) { "rule" } else { "hit" }.to_string())),
        text(&|s| hit(s).map(|h| h.mlflow_run_id)),
        text(&|s| match s {
            Sighting::Hit { metric_key, .. } => Some(metric_key.clone()),
            Sighting::Rule { .. } => None,
        }),
        Arc::new(sightings.iter().map(|s| hit(s).map(|h| h.point.step)).collect::<Int64Array>()),
        Arc::new(sightings.iter().map(|s| hit(s).map(|h| h.point.value)).collect::<Float64Array>()),
        Arc::new(
            sightings
                .iter()
                .map(|s| micros(hit(s).and_then(|h| logged(&h))))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(
            sightings
                .iter()
                .map(|s| {
                    Some(match s {
                        Sighting::Rule { seen_at, .. } => seen_at.timestamp_micros(),
                        Sighting::Hit { hit, .. } => hit.seen_at.timestamp_micros(),
                    })
                })
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        text(&|_| Some(run_id.to_string())),
    ];
    Ok(RecordBatch::try_new(RULE_SIGHTINGS.arrow_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sightings_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::local(dir.path()).unwrap();
        let commit = CommitInfo { run_id: "r-1".into(), step: "rules" };
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        let hit = Hit {
            mlflow_run_id: "abc".into(),
            point: MetricPoint { value: 0.97, step: 3, timestamp_ms: 1_700_000_000_123 },
            seen_at: at(1_700_000_100_456),
        };
        let written = [
            Sighting::Rule { rule_id: "r1".into(), seen_at: at(1_700_000_000_000) },
            Sighting::Hit { rule_id: "r1".into(), metric_key: "val_accuracy".into(), hit: hit.clone() },
        ];
        append(&wh, &commit, &written).await.unwrap();
        let ctx = crate::tables::sql_context(&wh).await.unwrap();
        let seen = read(&ctx).await.unwrap();
        let r1 = &seen["r1"];
        assert_eq!(r1.rule_at, Some(at(1_700_000_000_000)));
        assert_eq!(r1.hits_of("val_accuracy").cloned().collect::<Vec<_>>(), vec![hit]);
        assert_eq!(r1.hits_of("loss").count(), 0);
    }
}
