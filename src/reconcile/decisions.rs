//! Operations a person decided (`pfsync resolve`): shown in the report as such, with who, why and the class
//! reconcile put the operation in, so a `completed` taken on a person's word reads differently from one the
//! engine saw.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use datafusion::prelude::{SessionContext, col, lit};

use super::{Class, Finding, ReconcileError};
use crate::payouts::event::{Event, LogEvent};
use crate::payouts::state::{Status, status};
use crate::tables::PAYOUT_LOG;
use crate::tables::row::Row;

/// The latest decision a person recorded about one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonDecision {
    pub operation_id: String,
    pub kind: String,
    pub event: Event,
    pub attempt: i32,
    pub tx_id: Option<String>,
    pub decided_by: String,
    pub note: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// The class the operation is in this run: a finding's, else matched for a final outcome and
    /// in_progress for one the next run still sends.
    pub class: Class,
}

/// Pure: each operation's latest person's event among `events` (all of the operations concerned), classed.
pub fn decisions(events: &[LogEvent], findings: &[Finding]) -> Vec<PersonDecision> {
    let mut by_op: BTreeMap<&str, Vec<LogEvent>> = BTreeMap::new();
    for e in events {
        by_op.entry(e.operation_id.as_str()).or_default().push(e.clone());
    }
    let mut out = Vec::new();
    for (id, evs) in &by_op {
        let Some(latest) = evs.iter().filter(|e| e.decided_by.is_some()).max_by_key(|e| e.recorded_at) else {
            continue;
        };
        let class = findings.iter().find(|f| f.operation_id.as_deref() == Some(*id)).map(|f| f.class).unwrap_or(
            match status(evs) {
                Status::Completed { .. } | Status::Rejected { .. } | Status::Abandoned => Class::Matched,
                _ => Class::InProgress,
            },
        );
        out.push(PersonDecision {
            operation_id: id.to_string(),
            kind: latest.kind.as_str().to_string(),
            event: latest.event,
            attempt: latest.attempt,
            tx_id: latest.tx_id.clone(),
            decided_by: latest.decided_by.clone().unwrap_or_default(),
            note: latest.note.clone(),
            recorded_at: latest.recorded_at,
            class,
        });
    }
    out
}

/// Every event of the operations a person decided about, from the log registered in `ctx`.
pub async fn read(ctx: &SessionContext, findings: &[Finding]) -> Result<Vec<PersonDecision>, ReconcileError> {
    let failed = |source| ReconcileError::Query { query: "person decisions", source: Box::new(source) };
    if !ctx.table_exist(PAYOUT_LOG.name).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let log = ctx.table(PAYOUT_LOG.name).await.map_err(failed)?;
    let decided = log
        .clone()
        .filter(col("decided_by").is_not_null())
        .map_err(failed)?
        .select_columns(&["operation_id"])
        .map_err(failed)?
        .distinct()
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let mut ids = Vec::new();
    for b in &decided {
        let a = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let a = arrow::array::AsArray::as_string::<i32>(&a);
        ids.extend(a.iter().flatten().map(|s| lit(s.to_string())));
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let batches =
        log.filter(col("operation_id").in_list(ids, false)).map_err(failed)?.collect().await.map_err(failed)?;
    Ok(decisions(&LogEvent::from_batches(&batches)?, findings))
}
