//! `pfsync rules` and the `rules` step of `pfsync run`: metric rules through the exactly-once engine, then
//! the MLflow runs tagged with what was done. A tag that cannot be set is retried by the next run (every
//! completed rule whose run lacks its tags is tagged again); it never touches the payment.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, StringArray};

use super::error::AppError;
use super::payouts::engine_step;
use super::step::{Context, StepOutcome};
use crate::mlflow::{MlflowClient, MlflowConfig, MlflowError};
use crate::payouts::rules::{Fired, RULE_OP_PREFIX, RuleLimits, Rules, SightingStore};
use crate::payouts::{PayoutError, PayoutOptions};
use crate::tables::{CommitInfo, PAYOUT_LOG, Warehouse, sql_context};

/// Tags set on an MLflow run whose rule moved money.
pub const TAG_ESCROW_ID: &str = "purpleflea.escrow_id";
pub const TAG_TX_ID: &str = "purpleflea.tx_id";
pub const TAG_ACTION: &str = "purpleflea.action";
pub const TAG_RUN_ID: &str = "purpleflea.pfsync_run_id";
pub const TAG_RULE_ID: &str = "purpleflea.rule_id";
/// The JSON artifact with the same record, where the MLflow server serves artifacts.
pub const ARTIFACT_NAME: &str = "purpleflea_escrow.json";

/// The MLflow client from the environment; `None` when nothing is configured (a rules table with rows
/// is then an error, an empty or missing one is not). `proxy` is `[http] proxy`.
pub fn mlflow_from_env(proxy: Option<&url::Url>) -> Result<Option<MlflowClient>, AppError> {
    match MlflowConfig::from_env() {
        Ok(mut cfg) => {
            cfg.proxy = proxy.cloned();
            Ok(Some(MlflowClient::new(cfg).map_err(PayoutError::from)?))
        }
        Err(MlflowError::NotConfigured) => Ok(None),
        Err(e) => Err(PayoutError::from(e).into()),
    }
}

pub(super) async fn rules_step(
    ctx: &Context,
    provider: &dyn crate::provider::Provider,
    opts: &PayoutOptions,
    client: Option<MlflowClient>,
    limits: RuleLimits,
) -> Result<StepOutcome, AppError> {
    // What the step sees for the first time is recorded, except in a dry run, which writes nothing.
    let store = (!opts.dry_run).then(|| SightingStore {
        wh: ctx.settings.warehouse.clone(),
        commit: CommitInfo { run_id: ctx.run_id.clone(), step: "rules" },
    });
    let rules = Rules::new(client, chrono::Utc::now(), limits, store);
    let opts = PayoutOptions { rules: Some(rules.clone()), ..opts.clone() };
    let mut outcome = engine_step(ctx, provider, &opts, "rules").await?;
    let deferred = rules.deferred();
    outcome.counts.insert("rules_deferred".into(), deferred.len() as u64);
    if !deferred.is_empty() {
        println!(
            "rules: {} rule(s) not decided in this run (left to the next): {}",
            deferred.len(),
            deferred.join(", ")
        );
        // Worse outcomes (unknown, brake) keep their code; otherwise the run says rules are left over.
        if outcome.result.is_ok() {
            outcome.result = Err(AppError::RulesDeferred { deferred: deferred.len() as u64 });
        }
    }
    if !opts.dry_run
        && let Some(client) = rules.client()
    {
        let (tagged, failed) = tag_runs(&ctx.settings.warehouse, client, &rules.fired()).await;
        println!("rules: {tagged} MLflow run(s) tagged, {failed} tag failure(s) (retried next run)");
        outcome.counts.insert("mlflow_runs_tagged".into(), tagged);
        outcome.counts.insert("mlflow_tag_failures".into(), failed);
    }
    Ok(outcome)
}

/// A completed rule operation, as the log holds it.
struct Done {
    kind: String,
    tx_id: Option<String>,
    escrow_id: Option<String>,
    run_id: String,
}

async fn completed_rules(wh: &Warehouse) -> Result<HashMap<String, Done>, AppError> {
    let ctx = sql_context(wh).await?;
    let mut out = HashMap::new();
    if !ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false) {
        return Ok(out);
    }
    let sql = format!(
        "SELECT operation_id, kind, tx_id, escrow_id, run_id FROM {} WHERE event = 'completed' \
         AND starts_with(operation_id, '{RULE_OP_PREFIX}') ORDER BY recorded_at",
        PAYOUT_LOG.name
    );
    let what = "reading completed rules from the payout log";
    let batches =
        ctx.sql(&sql).await.map_err(PayoutError::query(what))?.collect().await.map_err(PayoutError::query(what))?;
    for b in batches {
        let col = |i: usize| -> Result<StringArray, AppError> {
            let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).map_err(PayoutError::from)?;
            Ok(c.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::from(Vec::<String>::new())))
        };
        let (id, kind, tx, esc, run) = (col(0)?, col(1)?, col(2)?, col(3)?, col(4)?);
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            out.insert(
                id.value(i).to_string(),
                Done {
                    kind: kind.value(i).to_string(),
                    tx_id: opt(&tx, i),
                    escrow_id: opt(&esc, i),
                    run_id: run.value(i).to_string(),
                },
            );
        }
    }
    Ok(out)
}

/// Tag the MLflow run of every rule that fired and whose outcome is logged as completed: only tags that
/// are missing or differ are set, so a rerun sets nothing. Returns (runs tagged now, failures).
pub(super) async fn tag_runs(wh: &Warehouse, client: &MlflowClient, fired: &HashMap<String, Fired>) -> (u64, u64) {
    let done = match completed_rules(wh).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the payout log to tag MLflow runs; retried next run");
            return (0, 1);
        }
    };
    let (mut tagged, mut failed) = (0, 0);
    for (op_id, f) in fired {
        let (Some(run), Some(d)) = (&f.mlflow_run_id, done.get(op_id)) else { continue };
        let mut want: BTreeMap<&str, String> = BTreeMap::new();
        want.insert(TAG_RULE_ID, f.rule_id.clone());
        want.insert(TAG_ACTION, d.kind.trim_start_matches("escrow_").to_string());
        want.insert(TAG_RUN_ID, d.run_id.clone());
        if let Some(e) = &d.escrow_id {
            want.insert(TAG_ESCROW_ID, e.clone());
        }
        if let Some(t) = &d.tx_id {
            want.insert(TAG_TX_ID, t.clone());
        }
        let result: Result<bool, MlflowError> = async {
            let info = client.run(run).await?;
            let missing: Vec<(&str, &String)> =
                want.iter().filter(|(k, v)| info.tags.get(**k) != Some(*v)).map(|(k, v)| (*k, v)).collect();
            if missing.is_empty() {
                return Ok(false);
            }
            // The record as a JSON artifact first (where the server serves artifacts), then the tags: a run
            // with its tags has its artifact too.
            let record = serde_json::to_string_pretty(&want).unwrap_or_default();
            client.put_artifact(&info, ARTIFACT_NAME, record).await?;
            for (k, v) in missing {
                client.set_tag(run, k, v).await?;
            }
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => tagged += 1,
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                tracing::warn!(rule = %f.rule_id, mlflow_run = %run, error = %e, "tagging the MLflow run failed; retried next run");
            }
        }
    }
    (tagged, failed)
}
