//! Read -> plan -> execute, the **read** step: make sure the log exists, check and read every source,
//! validate rows into operations (refusals kept with their reason), and load the log history of the
//! operations read. Nothing here sends anything or decides what is sent.

use std::collections::{HashMap, HashSet};

use deltalake::DeltaTable;

use super::log::{LogEvent, history};
use super::plan::in_shard;
use super::source::{Source, SqlSource};
use super::state::Event;
use super::validate::{Reject, check_batch};
use super::{PayoutError, PayoutOptions, PayoutReport};
use crate::operation::{Fingerprint, Operation};
use crate::tables::store::check_schema;
use crate::tables::{
    CommitInfo, ESCROW_ACTIONS, ESCROW_RULES, PAYOUT_LOG, PENDING_PAYOUTS, REJECTS, WALLETS, Warehouse, open_existing,
    open_or_create, sql_context,
};

/// What the read step found.
pub struct Read {
    pub ops: Vec<Operation>,
    pub rejects: Vec<Reject>,
    pub history: HashMap<String, Vec<LogEvent>>,
    /// `None` in a dry run over a warehouse that has no log yet.
    pub log: Option<DeltaTable>,
    /// `None` likewise (the refusals recorded before are read from it).
    pub rejects_table: Option<DeltaTable>,
    /// What each change feed read (for moving its position on after the run).
    pub feeds: Vec<super::feed::FeedRead>,
}

/// The sources a run reads: the two default tables, or the queries that replace them.
pub fn sources(opts: &PayoutOptions) -> Vec<Box<dyn Source>> {
    if let Some(rules) = &opts.rules {
        return vec![Box::new(super::rules::RuleSource(rules.clone()))];
    }
    vec![
        Box::new(SqlSource::payouts(opts.payout_sql.as_deref())),
        Box::new(SqlSource::actions(opts.action_sql.as_deref())),
    ]
}

pub async fn read(
    wh: &Warehouse,
    commit: &CommitInfo,
    opts: &PayoutOptions,
    report: &mut PayoutReport,
) -> Result<Read, PayoutError> {
    // pfsync's own tables exist from the first run on. The sources' default tables belong to the upstream
    // jobs that write them, at a location they own: pfsync never creates one at run time (`pfsync init`
    // may), and a missing one is an empty source. A dry run creates nothing: it reads what is there.
    if !opts.dry_run {
        for spec in [&PAYOUT_LOG, &REJECTS] {
            open_or_create(wh, spec, commit).await?;
        }
    }
    // A default source table that exists must hold the columns pfsync reads, with types it converts
    // (nullable and extra columns are fine), and a protocol delta-rs reads in full.
    let rules = opts.rules.is_some();
    let defaults: &[&crate::tables::TableSpec] = match rules {
        true => &[&ESCROW_RULES],
        false => &[&PENDING_PAYOUTS, &ESCROW_ACTIONS],
    };
    for spec in defaults {
        let custom = match spec.name {
            n if n == PENDING_PAYOUTS.name => opts.payout_sql.is_some(),
            n if n == ESCROW_ACTIONS.name => opts.action_sql.is_some(),
            _ => false,
        };
        if custom {
            continue;
        }
        let location = wh.location(&spec.table_name());
        match open_existing(wh, spec).await? {
            Some(table) => check_schema(&table, spec, &location)?,
            // Said, not silent: a source mapped to the wrong place would otherwise read as "nothing to pay".
            None => tracing::warn!(
                table = spec.name,
                %location,
                "the default source table does not exist there, so nothing is read from it (pfsync init \
                 creates it empty; the upstream job that fills it writes there)"
            ),
        }
    }
    let log = open_existing(wh, &PAYOUT_LOG).await?;
    // Read in a dry run too: what was refused before is told apart from new refusals.
    let rejects_table = open_existing(wh, &REJECTS).await?;

    let ctx = sql_context(wh).await?;
    for (name, location) in &opts.extra_tables {
        crate::tables::register_location(&ctx, wh, name, location).await?;
    }
    let shard = opts.shard;
    let mut ops = Vec::new();
    let mut rejects: Vec<Reject> = Vec::new();
    // Only a refused row's source text is kept; the rest is dropped as rows are validated.
    let mut rows: HashMap<String, String> = HashMap::new();
    let mut all = sources(opts);
    let mut feeds = Vec::new();
    if opts.rules.is_none() {
        for spec in &opts.feeds {
            let table = super::feed::FeedTable::open(spec, &opts.namespace, wh.storage_options()).await?;
            let start = feed_start(wh, commit, opts.dry_run, spec, &table).await?;
            let f = super::feed::FeedSource::new(spec.clone(), table, start);
            feeds.push((f.clone(), all.len()));
            all.push(Box::new(super::feed::SharedFeed(f)));
        }
    }
    let mut feed_ids: HashMap<usize, Vec<String>> = HashMap::new();
    for (index, source) in all.iter().enumerate() {
        let raw = source.read(&ctx).await?;
        if feeds.iter().any(|(_, i)| *i == index) {
            feed_ids.insert(index, raw.iter().filter_map(|r| r.id().map(str::to_string)).collect());
        }
        tracing::debug!(source = %source.name(), rows = raw.len(), "source read");
        for row in raw {
            // Rows of other shards are not ours to validate either (their shard's run reports them).
            if !row.id().is_none_or(|id| in_shard(id, shard)) {
                continue;
            }
            report.source_rows += 1;
            match row.validate() {
                Ok(op) => {
                    rows.insert(op.id.clone(), row.into_source_row());
                    ops.push(op);
                }
                Err(r) => rejects.push(r),
            }
        }
    }

    // With the creates that releases and disputes name, so one whose create ran in an earlier run (or
    // another step) finds it in the log.
    let ids: Vec<String> = ops
        .iter()
        .flat_map(|o| {
            let create = match o.escrow() {
                Some(crate::operation::EscrowRef::CreatedBy(c)) => Some(c.clone()),
                _ => None,
            };
            std::iter::once(o.id.clone()).chain(create)
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let past = match &log {
        Some(t) => history(t, &ids).await?,
        None => HashMap::new(),
    };
    let logged: HashMap<String, Fingerprint> =
        past.iter().filter_map(|(id, ev)| logged_fingerprint(ev).map(|f| (id.clone(), f))).collect();
    let known = if opts.check_agents { agents_known(&ctx).await? } else { None };
    let (ops, more) = check_batch(ops, &logged, known.as_ref(), &rows);
    rejects.extend(more);
    report.rejected_rows = rejects.len() as u64;
    let feeds =
        feeds.into_iter().map(|(f, index)| f.read_so_far(feed_ids.remove(&index).unwrap_or_default())).collect();
    Ok(Read { ops, rejects, history: past, log, rejects_table, feeds })
}

/// Where a feed's read starts (see `feed::decide_start`). A position stored without namespace or table
/// that this feed takes over is written under its own ids first (not in a dry run), so no other feed takes
/// it over too; a concurrent take-over makes it read the log and decide again.
async fn feed_start(
    wh: &Warehouse,
    commit: &CommitInfo,
    dry_run: bool,
    spec: &super::feed::FeedSpec,
    table: &super::feed::FeedTable,
) -> Result<i64, PayoutError> {
    use super::feed::{Start, decide_start};
    let refuse = |message: String| PayoutError::Source { source_name: format!("feed {}", spec.name), message };
    for _ in 0..3 {
        let Some(log) = open_existing(wh, &PAYOUT_LOG).await? else { return Ok(spec.first_version()) };
        let stored = super::log::feed_stored(&log, &table.key).await?;
        let start = decide_start(&table.key, spec, &stored, table.latest).map_err(refuse)?;
        tracing::debug!(feed = %spec.name, table_id = %table.key.table_id, ?start, "feed start");
        match start {
            Start::Adopt { consumed, from } if !dry_run => {
                if super::log::adopt_feed_position(log, commit, &table.key, consumed, from).await? {
                    return Ok(from);
                }
            }
            start => return Ok(start.version()),
        }
    }
    Err(refuse("other runs kept taking over this feed's position meanwhile; run again".into()))
}

/// The fingerprint an operation was first logged with.
fn logged_fingerprint(events: &[LogEvent]) -> Option<Fingerprint> {
    let first = events.iter().find(|e| e.event == Event::Intent)?;
    Some(Fingerprint {
        kind: first.kind,
        agent_id: first.agent_id.clone(),
        counterparty: first.counterparty_agent_id.clone(),
        amount: first.amount_usd,
        reason: first.reason.clone().unwrap_or_default(),
    })
}

/// The agents the wallets table lists, or `None` when there is no wallets table to ask (yet).
async fn agents_known(ctx: &datafusion::prelude::SessionContext) -> Result<Option<HashSet<String>>, PayoutError> {
    if !ctx.table_exist(WALLETS.name).unwrap_or(false) {
        return Ok(None);
    }
    let what = "reading agent ids from purpleflea.agents.wallets";
    let batches = ctx
        .sql("SELECT agent_id FROM purpleflea.agents.wallets")
        .await
        .map_err(PayoutError::query(what))?
        .collect()
        .await
        .map_err(PayoutError::query(what))?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    let mut out = HashSet::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let s = c
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| PayoutError::LogRow("purpleflea.agents.wallets.agent_id is not text".into()))?;
        out.extend(s.iter().flatten().map(str::to_string));
    }
    Ok(Some(out))
}
