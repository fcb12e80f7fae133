//! What `pfsync demo` puts in front of a new user: a pending-payouts table and escrow actions (the guide's
//! bounty flow), including a few bad rows so the rejects table has something to show. Deterministic from
//! the seed.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;

use crate::money::{DECIMAL_PRECISION, DECIMAL_SCALE, Usd};
use crate::rng::SplitMix64;
use crate::sandbox::ORCHESTRATOR_AGENT;
use crate::tables::{CommitInfo, ESCROW_ACTIONS, PENDING_PAYOUTS, TableError, Warehouse, open_or_create};

/// Where the demo writes when neither --warehouse, PFSYNC_WAREHOUSE nor the config file names a place: a
/// folder of its own, never the real commands' default (`./pfsync-warehouse`), so a demo cannot clear a
/// warehouse a real run wrote.
pub const DEFAULT_WAREHOUSE: &str = "./pfsync-demo";

/// A file the demo leaves in its warehouse with the run id of every commit it made there, so a later demo
/// knows it may start that folder afresh: only if no commit of any other run has landed since.
pub const MARKER: &str = ".pfsync-demo";

const MARKER_HEAD: &str = "made by pfsync demo; the next demo clears this folder unless another run wrote to it";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{0} already holds data that `pfsync demo` did not make; the demo starts from an empty warehouse. \
         Pass --warehouse with another folder"
    )]
    NotADemoWarehouse(String),
    #[error(
        "{path} holds a commit the demo did not make ({table} version {version}, {by}): it may be real data, so \
         the demo leaves the folder alone. Pass --warehouse with another folder (the demo's own default is {})",
        DEFAULT_WAREHOUSE
    )]
    ForeignCommit { path: String, table: String, version: String, by: String },
    #[error("cannot prepare the demo warehouse {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("writing demo rows failed: {0}")]
    Write(String),
}

/// Start the demo's local warehouse afresh for run `run_id`: the in-process sandbox is new on every run,
/// so tables left by an earlier demo would describe another sandbox's money. A folder is cleared only when
/// the demo made it (it has the marker) and every Delta commit in it is one of the demo's runs the marker
/// names: a real command pointed at the same folder afterwards makes it the user's.
pub fn prepare_warehouse(dir: &Path, run_id: &str) -> Result<(), DemoError> {
    let io = |source| DemoError::Io { path: dir.display().to_string(), source };
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !empty {
            let marker = match std::fs::read_to_string(dir.join(MARKER)) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(DemoError::NotADemoWarehouse(dir.display().to_string()));
                }
                Err(e) => return Err(io(e)),
            };
            let runs: Vec<&str> = marker.lines().filter_map(|l| l.strip_prefix("run_id = ")).collect();
            if let Some((table, version, by)) = foreign_commit(dir, &runs).map_err(io)? {
                return Err(DemoError::ForeignCommit { path: dir.display().to_string(), table, version, by });
            }
            std::fs::remove_dir_all(dir).map_err(io)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join(MARKER), format!("{MARKER_HEAD}\nrun_id = {run_id}\n")).map_err(io)
}

/// The first Delta commit under `dir` whose `pfsync.run_id` is none of `runs` (or that has none: another
/// engine's), if any: its table folder, version and author.
fn foreign_commit(dir: &Path, runs: &[&str]) -> std::io::Result<Option<(String, String, String)>> {
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&folder)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                folders.push(path);
                continue;
            }
            let in_log = folder.file_name().is_some_and(|n| n == "_delta_log");
            if !in_log || path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let by = commit_run_id(&std::fs::read_to_string(&path)?);
            if by.as_deref().is_some_and(|r| runs.contains(&r)) {
                continue;
            }
            let table = folder.parent().and_then(|t| t.strip_prefix(dir).ok()).unwrap_or(&folder);
            let version = path.file_stem().map(|s| s.to_string_lossy().trim_start_matches('0').to_string());
            let by = match by {
                Some(r) => format!("run {}", crate::text::clip(&r, 64)),
                None => "not by pfsync".into(),
            };
            let version = version.filter(|v| !v.is_empty()).unwrap_or_else(|| "0".into());
            return Ok(Some((table.display().to_string(), version, by)));
        }
    }
    Ok(None)
}

/// The `pfsync.run_id` a Delta commit file's `commitInfo` carries.
fn commit_run_id(commit: &str) -> Option<String> {
    commit.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v.get("commitInfo")?.get("pfsync.run_id")?.as_str().map(str::to_string)
    })
}

fn text(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

fn money(v: Vec<Option<Usd>>) -> Result<ArrayRef, DemoError> {
    Ok(Arc::new(
        v.into_iter()
            .map(|u| u.map(Usd::to_decimal128))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)
            .map_err(|e| DemoError::Write(e.to_string()))?,
    ))
}

/// Write `payouts` good pending payouts plus four bad rows, and `bounties` escrow bounties (create, then
/// release or dispute).
pub async fn seed_sources(
    wh: &Warehouse,
    agents: usize,
    payouts: usize,
    bounties: usize,
    seed: u64,
    commit: &CommitInfo,
) -> Result<(), DemoError> {
    let mut rng = SplitMix64::new(seed ^ 0xD3_40);
    let agent = |rng: &mut SplitMix64| format!("agent-{:06}", rng.range(1, agents.max(1) as u64));
    let now = Some(Utc::now().timestamp_micros());

    let mut rows: Vec<(String, String, Option<Usd>, Option<String>)> = (1..=payouts)
        .map(|i| {
            let amount = Usd::from_cents(rng.range(100, 25_000) as i64).ok();
            (format!("demo-payout-{i:05}"), agent(&mut rng), amount, Some(format!("labeling task demo-{i}")))
        })
        .collect();
    // Bad rows, refused with a code into purpleflea.payouts.rejects while the rest are paid.
    rows.push(("demo-bad-negative".into(), agent(&mut rng), Usd::from_cents(-500).ok(), Some("refund?".into())));
    rows.push(("demo-bad-agent".into(), "agent-999999".into(), Usd::from_cents(100).ok(), Some("who?".into())));
    rows.push(("demo-bad-dup".into(), agent(&mut rng), Usd::from_cents(100).ok(), Some("twice".into())));
    rows.push(("demo-bad-dup".into(), agent(&mut rng), Usd::from_cents(900).ok(), Some("twice".into())));
    let n = rows.len();
    let columns = vec![
        text(rows.iter().map(|r| Some(r.0.clone())).collect()),
        text(rows.iter().map(|r| Some(r.1.clone())).collect()),
        money(rows.iter().map(|r| r.2).collect())?,
        text(rows.iter().map(|r| r.3.clone()).collect()),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        text(vec![Some("pfsync demo".into()); n]),
    ];
    write_rows(wh, &PENDING_PAYOUTS, commit, columns).await?;

    // The guide's bounty flow: fund a task, then release on a passing quality check or dispute a failing one.
    let mut acts: Vec<[Option<String>; 10]> = Vec::new();
    for i in 1..=bounties {
        let task = format!("demo-bounty-{i:03}");
        let amount = Usd::from_cents(rng.range(1_000, 10_000) as i64).unwrap_or(Usd::ZERO);
        acts.push([
            Some(task.clone()),
            Some("create".into()),
            None,
            Some(ORCHESTRATOR_AGENT.into()),
            Some(agent(&mut rng)),
            Some(amount.to_string()),
            Some(format!("Data labeling task {task}")),
            Some(format!(r#"{{"task_id":"{task}","source":"pfsync-demo"}}"#)),
            Some("bounty".into()),
            None,
        ]);
        let passed = rng.next_f64() < 0.7;
        acts.push([
            Some(format!("{task}-qc")),
            Some(if passed { "release" } else { "dispute" }.into()),
            None,
            None,
            None,
            None,
            None,
            None,
            Some(
                if passed { "Quality rate 92.0% passed threshold" } else { "Quality rate 61.0% below 80% threshold" }
                    .into(),
            ),
            Some(task),
        ]);
    }
    let n = acts.len();
    let col = |i: usize| text(acts.iter().map(|a| a[i].clone()).collect());
    let columns = vec![
        col(0),
        col(1),
        col(2),
        col(9),
        col(3),
        col(4),
        money(acts.iter().map(|a| a[5].as_deref().and_then(|s| Usd::parse(s).ok())).collect())?,
        col(6),
        col(7),
        col(8),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        text(vec![Some("pfsync demo".into()); n]),
    ];
    write_rows(wh, &ESCROW_ACTIONS, commit, columns).await?;
    Ok(())
}

/// The seed's EscrowReleaseCallback as two metric rules: two model bounties (escrow creates), one released
/// when run `accuracy_run` logs `val_accuracy >= 0.95`, one disputed because run `latency_run` did not log
/// `latency_ms < 50` by its deadline (already past).
pub async fn seed_rules(
    wh: &Warehouse,
    accuracy_run: &str,
    latency_run: &str,
    commit: &CommitInfo,
) -> Result<(), DemoError> {
    let now = Some(Utc::now().timestamp_micros());
    let creates = [("demo-model-1", "agent-000001", 1500), ("demo-model-2", "agent-000002", 2000)];
    let n = creates.len();
    type Create<'a> = (&'a str, &'a str, i64);
    let t = |f: &dyn Fn(&Create<'_>) -> Option<String>| text(creates.iter().map(f).collect());
    let columns = vec![
        t(&|c| Some(c.0.to_string())),
        t(&|_| Some("create".into())),
        t(&|_| None),
        t(&|_| None),
        t(&|_| Some(ORCHESTRATOR_AGENT.into())),
        t(&|c| Some(c.1.to_string())),
        money(creates.iter().map(|c| Usd::from_cents(c.2).ok()).collect())?,
        t(&|c| Some(format!("Model bounty {}", c.0))),
        t(&|_| None),
        t(&|_| Some("model bounty".into())),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        text(vec![Some("pfsync demo".into()); n]),
    ];
    write_rows(wh, &ESCROW_ACTIONS, commit, columns).await?;

    let past = Some(Utc::now().timestamp_micros() - 60_000_000);
    let s = |v: [&str; 2]| text(v.iter().map(|x| (!x.is_empty()).then(|| x.to_string())).collect());
    let columns: Vec<ArrayRef> = vec![
        s(["demo-rule-accuracy", "demo-rule-latency"]),
        s(["", ""]),
        s(["demo-model-1", "demo-model-2"]),
        s([accuracy_run, latency_run]),
        s(["", ""]),
        s(["", ""]),
        Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>, None]).with_timezone("UTC")),
        s(["val_accuracy", "latency_ms"]),
        Arc::new(arrow::array::Float64Array::from(vec![0.95, 50.0])),
        s([">=", "<"]),
        Arc::new(TimestampMicrosecondArray::from(vec![None, past]).with_timezone("UTC")),
        s(["nothing", "dispute"]),
        s(["EscrowReleaseCallback: validation accuracy above 95%", "latency below 50 ms by the deadline"]),
        s(["pfsync demo", "pfsync demo"]),
    ];
    write_rows(wh, &crate::tables::ESCROW_RULES, commit, columns).await?;
    Ok(())
}

/// A small events table a pipeline would append to (change data feed on), in two commits, at `dir`; the
/// feed that pays its inserted events.
pub async fn seed_feed(
    dir: &Path,
    agents: usize,
    commit: &CommitInfo,
) -> Result<crate::payouts::feed::FeedSpec, DemoError> {
    use deltalake::kernel::{DataType as DeltaType, StructField};
    let io = |source| DemoError::Io { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let url =
        url::Url::from_directory_path(dir).map_err(|_| DemoError::Write(format!("{} is no folder", dir.display())))?;
    let names = ["event_id", "agent_id", "amount"];
    let mut table = deltalake::operations::create::CreateBuilder::new()
        .with_location(url.as_str())
        .with_columns(names.map(|n| StructField::new(n.to_string(), DeltaType::STRING, true)))
        .with_configuration_property(deltalake::TableProperty::EnableChangeDataFeed, Some("true"))
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| DemoError::Write(e.to_string()))?;
    let schema = Arc::new(arrow::datatypes::Schema::new(
        names.map(|n| arrow::datatypes::Field::new(n, arrow::datatypes::DataType::Utf8, true)).to_vec(),
    ));
    for n in 0..2 {
        let rows: Vec<[String; 3]> = (0..3)
            .map(|i| {
                let k = n * 3 + i + 1;
                [format!("trade-{k:03}"), format!("agent-{:06}", 1 + k % agents.max(1)), format!("{}.50", k)]
            })
            .collect();
        let col = |j: usize| text(rows.iter().map(|r| Some(r[j].clone())).collect());
        let batch = RecordBatch::try_new(schema.clone(), vec![col(0), col(1), col(2)])
            .map_err(|e| DemoError::Write(e.to_string()))?;
        table = table
            .write(vec![batch])
            .with_commit_properties(commit.properties())
            .await
            .map_err(|e| DemoError::Write(e.to_string()))?;
    }
    Ok(crate::payouts::feed::FeedSpec {
        name: "demo-trades".into(),
        location: url,
        query: "SELECT concat('demo-', event_id) AS payout_id, agent_id, amount AS amount_usd, \
                concat('trade ', event_id, ' (version ', CAST(_commit_version AS STRING), ')') AS reason \
                FROM changes WHERE _change_type = 'insert'"
            .into(),
        shape: crate::payouts::source::RowShape::Payouts,
        start_version: None,
        table_id: None,
    })
}

/// Append one batch of `columns` (in the spec's order) to a table, creating it when absent.
async fn write_rows(
    wh: &Warehouse,
    spec: &crate::tables::TableSpec,
    commit: &CommitInfo,
    columns: Vec<ArrayRef>,
) -> Result<(), DemoError> {
    let batch = RecordBatch::try_new(spec.arrow_schema(), columns).map_err(|e| DemoError::Write(e.to_string()))?;
    let table = open_or_create(wh, spec, commit).await?;
    // With the run id, as every commit pfsync makes: the next demo clears only folders of its own commits.
    table
        .write(vec![batch])
        .with_commit_properties(commit.properties())
        .await
        .map_err(|e| DemoError::Write(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_demo_folder_with_only_demo_commits_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let wh = dir.path().join("wh");
        prepare_warehouse(&wh, "demo-1").unwrap();
        std::fs::write(wh.join("table"), "x").unwrap();
        let log = wh.join("t").join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let commit = |run: &str| format!("{{\"commitInfo\":{{\"pfsync.run_id\":\"{run}\"}}}}\n{{\"add\":{{}}}}\n");
        std::fs::write(log.join("00000000000000000000.json"), commit("demo-1")).unwrap();
        prepare_warehouse(&wh, "demo-2").unwrap();
        assert!(!wh.join("table").exists(), "a demo folder starts afresh");

        // A commit of another run (a real `pfsync payouts` into the demo's folder): the folder is the user's.
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join("00000000000000000000.json"), commit("demo-2")).unwrap();
        std::fs::write(log.join("00000000000000000001.json"), commit("real-run")).unwrap();
        let e = prepare_warehouse(&wh, "demo-3").unwrap_err();
        assert!(matches!(&e, DemoError::ForeignCommit { version, by, .. } if version == "1" && by == "run real-run"));
        assert!(log.join("00000000000000000001.json").exists());
        // And one no pfsync run made (another engine's commit).
        std::fs::write(log.join("00000000000000000001.json"), "{\"commitInfo\":{}}\n").unwrap();
        assert!(matches!(prepare_warehouse(&wh, "demo-3"), Err(DemoError::ForeignCommit { .. })));

        let other = dir.path().join("real");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("precious"), "x").unwrap();
        assert!(matches!(prepare_warehouse(&other, "demo-4"), Err(DemoError::NotADemoWarehouse(_))));
        assert!(other.join("precious").exists());
    }
}
