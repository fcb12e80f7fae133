//! Seeded fault simulation, TigerBeetle style. One scenario = a seed that decides the pending payouts and
//! escrow actions (bad rows included), the sandbox's faults, at which named crash point (and which
//! occurrence of it) each `pfsync run` kills itself (`PFSYNC_CRASH_AT`, compiled only with the
//! `test-hooks` feature), and when a second run overlaps it. Kills are chosen by the seed, not by a
//! wall-clock sleep, so a failing seed reproduces. The safety invariants (nothing paid twice, no bad row
//! paid, books balanced, an intent before every outcome, schemas intact) are checked after every run; the
//! scenario reruns `pfsync run` until it exits 0 (or 5: only refused rows remain), then checks that
//! nothing was lost (every valid operation paid once, no open finding).
//!
//! CI runs a few seeds. The long run, and any failing seed again:
//!   PFSYNC_SIM_SEEDS=500 cargo test --test it simulation -- --nocapture
//!   PFSYNC_SIM_SEEDS=251..500 cargo test --test it simulation -- --nocapture   (a range, to split a run)
//!   PFSYNC_SIM_SEED=1234 cargo test --test it simulation -- --nocapture
//! `PFSYNC_SIM_BIN` points the scenarios at another `pfsync` binary (a frozen copy, so a long run is not
//! disturbed by a rebuild of the target dir).

use std::process::{Child, Stdio};
use std::time::Duration;

use pfsync::hooks::CrashPoint;
use pfsync::rng::SplitMix64;
use pfsync::sandbox::{FaultConfig, Sandbox, SandboxConfig, SeedConfig};
use pfsync::secret::ApiKey;
use pfsync::tables::{ALL, open_existing, sql_context};

use crate::common::{PaidBy, PfsyncCommand, assert_paid_once, count, paid_per, pfsync, pfsync_at, text, warehouse};
use crate::payouts::{write_actions, write_pending};

#[derive(Debug, Default)]
struct Tally {
    runs: u32,
    kills: u32,
    faults: u64,
    /// SIGKILLs per crash point.
    by_point: std::collections::BTreeMap<&'static str, u32>,
    /// Events of the change feed, and metric rules that fire.
    feed_events: usize,
    rules: usize,
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("PFSYNC_SIM_SEED") {
        return vec![s.parse().expect("PFSYNC_SIM_SEED")];
    }
    let spec = std::env::var("PFSYNC_SIM_SEEDS").unwrap_or_else(|_| "3".into());
    match spec.split_once("..") {
        Some((a, b)) => {
            (a.parse().expect("PFSYNC_SIM_SEEDS A..B")..=b.parse().expect("PFSYNC_SIM_SEEDS A..B")).collect()
        }
        None => (1..=spec.parse().expect("PFSYNC_SIM_SEEDS")).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_simulation_never_pays_twice_or_loses_a_payout() {
    let mut total = Tally::default();
    let seeds = seeds();
    for &seed in &seeds {
        let t = scenario(seed).await;
        println!(
            "seed {seed}: ok ({} runs, {} SIGKILLs, {} faults; {} feed events, {} metric rules)",
            t.runs, t.kills, t.faults, t.feed_events, t.rules
        );
        total.feed_events += t.feed_events;
        total.rules += t.rules;
        total.runs += t.runs;
        total.kills += t.kills;
        total.faults += t.faults;
        for (p, n) in t.by_point {
            *total.by_point.entry(p).or_default() += n;
        }
    }
    println!(
        "simulation: {} seeds, 0 violations; {} pfsync runs, {} SIGKILLs ({:?}), {} injected faults; {} feed events, {} metric rules",
        seeds.len(),
        total.runs,
        total.kills,
        total.by_point,
        total.faults,
        total.feed_events,
        total.rules
    );
}

/// A killed run's intents are left alone this long (`--in-flight-timeout`); the client's budget
/// (0.5 s timeout + 0.5 s of retries) fits twice into it.
const IN_FLIGHT_SECS: u64 = 2;

/// What a run reads besides the two default tables: the config file with the scenario's change feed, and
/// the MLflow server of its metric rules (when MLflow is installed: then `pfsync run` has a rules step).
struct Extra<'a> {
    config: std::path::PathBuf,
    mlflow: Option<&'a str>,
}

#[allow(clippy::too_many_arguments)]
fn spawn(
    sb: &Sandbox,
    wh: &std::path::Path,
    key: &str,
    seed: u64,
    attempt: u32,
    crash: Option<(CrashPoint, u64)>,
    extra: &Extra<'_>,
    clock_offset: u64,
) -> Child {
    let mut c = match std::env::var_os("PFSYNC_SIM_BIN") {
        Some(bin) => pfsync_at(bin),
        None => pfsync(),
    };
    c.provider(sb.base_url().as_str(), key)
        .args(["-q", "--max-attempts", "4"])
        .client_budget(0.5, 0.5)
        .arg("--run-id")
        .arg(format!("sim-{seed}-{attempt}"))
        .warehouse(wh)
        .config(&extra.config)
        .args(["run", "--batch-size", "7", "--concurrency", "8", "--in-flight-timeout", &IN_FLIGHT_SECS.to_string()])
        .env("PURPLEFLEA_API_KEY", key)
        .env(pfsync::clock::TEST_OFFSET_ENV, clock_offset.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uri) = extra.mlflow {
        // After payouts, so a rule's release finds the escrow its create made in the same run.
        c.args(["--steps", "sync,payouts,rules,reconcile"]).env("MLFLOW_TRACKING_URI", uri);
    }
    if let Some((point, n)) = crash {
        c.env("PFSYNC_CRASH_AT", format!("{}:{n}", point.as_str()));
    }
    c.spawn().expect("spawn pfsync")
}

async fn scenario(seed: u64) -> Tally {
    let mut rng = SplitMix64::new(seed);
    let key = format!("pf_test_SIMSECRET{seed:x}");
    let faults = FaultConfig {
        seed,
        latency_prob: 0.2,
        latency_min: Duration::from_millis(1),
        latency_max: Duration::from_millis(15),
        rate_limit_prob: 0.04,
        retry_after_prob: 0.5,
        retry_after_secs: 0,
        error_before_prob: 0.03,
        error_after_prob: 0.03,
        drop_after_prob: 0.03,
        slow_body_prob: 0.02,
        slow_body: Duration::from_millis(40),
        malformed_prob: 0.02,
        max_rps: None,
    };
    let cfg = SandboxConfig {
        world: SeedConfig { agents: 40, seed, escrows: Some(3), ..SeedConfig::default() },
        api_key: ApiKey::new(&key, "sim").expect("key"),
        faults,
        ..SandboxConfig::for_tests(40)
    };
    let sb = Sandbox::start(cfg).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = warehouse(&dir);

    // The seed decides the pending payouts: valid ones, and bad ones that must never be paid.
    let n_good = rng.range(10, 40) as usize;
    let mut rows: Vec<(String, String, String, String)> = (0..n_good)
        .map(|i| {
            let cents = rng.range(1, 50_000);
            // Ids, agents and amounts all come from the seed.
            (
                format!("sim{seed}-p{i}"),
                format!("agent-{:06}", rng.range(1, 40)),
                format!("{}.{:02}", cents / 100, cents % 100),
                format!("task {i}"),
            )
        })
        .collect();
    let bad = vec![
        (format!("sim{seed}-neg"), "agent-000001".to_string(), "-3.00".to_string(), "r".to_string()),
        (format!("sim{seed}-ghost"), "agent-999999".to_string(), "3.00".to_string(), "r".to_string()),
        (format!("sim{seed}-dup"), "agent-000002".to_string(), "1.00".to_string(), "r".to_string()),
        (format!("sim{seed}-dup"), "agent-000002".to_string(), "2.00".to_string(), "r".to_string()),
    ];
    rows.extend(bad.iter().cloned());
    let refs: Vec<(&str, &str, &str, &str)> =
        rows.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str())).collect();
    write_pending(&wh, &refs).await;

    // And the escrow actions: creates, each maybe followed by a release or a dispute, plus a bad create
    // (unknown seller) and a release of an escrow that no action creates; neither may ever move money.
    let n_escrows = rng.range(0, 6) as usize;
    let mut actions: Vec<(String, &'static str, Option<String>, String, String)> = Vec::new();
    for i in 0..n_escrows {
        let cents = rng.range(1, 5_000);
        let seller = format!("agent-{:06}", rng.range(1, 40));
        actions.push((
            format!("sim{seed}-e{i}"),
            "create",
            None,
            seller,
            format!("{}.{:02}", cents / 100, cents % 100),
        ));
        match rng.range(0, 3) {
            0 => actions.push((
                format!("sim{seed}-r{i}"),
                "release",
                Some(format!("sim{seed}-e{i}")),
                String::new(),
                String::new(),
            )),
            1 => actions.push((
                format!("sim{seed}-d{i}"),
                "dispute",
                Some(format!("sim{seed}-e{i}")),
                String::new(),
                String::new(),
            )),
            _ => {}
        }
    }
    let n_good_actions = actions.len();
    actions.push((format!("sim{seed}-ebad"), "create", None, "agent-999999".into(), "1.00".into()));
    actions.push((
        format!("sim{seed}-rbad"),
        "release",
        Some(format!("sim{seed}-nothing")),
        String::new(),
        String::new(),
    ));
    let action_refs: Vec<_> = actions
        .iter()
        .map(|(id, a, c, s, amt)| (id.as_str(), *a, None, c.as_deref(), s.as_str(), amt.as_str(), "sim"))
        .collect();
    write_actions(&wh, &action_refs).await;

    // A change feed: events appended to a CDF table in two commits, each paid once (id from the event).
    let events = dir.path().join("events");
    let mut t = crate::feeds::events_table(&events, true).await;
    let mut once: Vec<String> = Vec::new();
    for commit in 0..2 {
        let n = rng.range(1, 4) as usize;
        let evs: Vec<(String, String, String)> = (0..n)
            .map(|i| {
                let cents = rng.range(1, 3_000);
                (
                    format!("sim{seed}-f{commit}x{i}"),
                    format!("agent-{:06}", rng.range(1, 40)),
                    format!("{}.{:02}", cents / 100, cents % 100),
                )
            })
            .collect();
        once.extend(evs.iter().map(|e| format!("pfsync:default:payout:{}", e.0)));
        let refs: Vec<(&str, &str, &str)> = evs.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        t = crate::feeds::append(t, &refs).await;
    }
    let config = dir.path().join("sim.toml");
    let query = "SELECT event_id AS payout_id, agent_id, amount AS amount_usd, concat('event ', event_id) AS reason \
                 FROM changes WHERE _change_type = 'insert'";
    std::fs::write(
        &config,
        format!("[[feeds]]\nname = \"events\"\ntable = {:?}\nquery = {query:?}\n", events.display().to_string()),
    )
    .unwrap();

    // Metric rules (with MLflow installed): each create that no action settles gets a rule whose metric
    // crosses, so it is released once by the rules step; and one rule row that is refused.
    let ml = crate::mlflow_server::server();
    let mut n_rules = 0;
    if let Some(ml) = ml {
        let unsettled: Vec<String> = (0..n_escrows)
            .map(|i| format!("sim{seed}-e{i}"))
            .filter(|e| !actions.iter().any(|a| a.2.as_deref() == Some(e.as_str())))
            .collect();
        let curves: Vec<Vec<f64>> = unsettled.iter().map(|_| vec![0.5, 0.7 + rng.next_f64() * 0.1, 0.95]).collect();
        let runs = tokio::task::block_in_place(|| ml.runs_with("pfsync-simulation", "val_accuracy", &curves));
        let mut rules: Vec<crate::rules::RuleRow> = Vec::new();
        for (i, (create, run)) in unsettled.iter().zip(runs).enumerate() {
            let rule_id: &'static str = Box::leak(format!("sim{seed}-m{i}").into_boxed_str());
            let create: &'static str = Box::leak(create.clone().into_boxed_str());
            once.push(format!("pfsync:default:escrow_release:rule:{rule_id}"));
            rules.push(crate::rules::RuleRow {
                rule_id,
                create_action_id: Some(create),
                mlflow_run_id: Some(run),
                metric_key: "val_accuracy",
                threshold: Some(0.9),
                direction: ">=",
                ..Default::default()
            });
        }
        n_rules = rules.len();
        rules.push(crate::rules::RuleRow {
            rule_id: Box::leak(format!("sim{seed}-mbad").into_boxed_str()),
            create_action_id: Some("nothing"),
            mlflow_run_id: Some("0123456789abcdef0123456789abcdef".into()),
            metric_key: "val_accuracy",
            threshold: Some(0.9),
            direction: "=>",
            ..Default::default()
        });
        crate::rules::write_rules(&wh, &rules).await;
    }
    let extra = Extra { config, mlflow: ml.map(|m| m.url.as_str()) };

    let mut tally = Tally::default();
    let path = dir.path().to_path_buf();
    let mut outputs = String::new();
    let mut done = false;
    // How far later than the machine's clock the next run believes it is (see below).
    let mut clock_offset = 0u64;
    let world =
        World { seed, rows: &rows, n_good, bad: &bad, actions: &actions, n_good_actions, once: &once, key: &key };
    for attempt in 0..16u32 {
        // The seed picks where this run dies (if at all): a named crash point and which time it is reached.
        let crash = (rng.next_f64() < 0.5 && attempt < 8).then(|| {
            let point = CrashPoint::ALL[rng.range(0, CrashPoint::ALL.len() as u64 - 1) as usize];
            (point, rng.range(1, 3))
        });
        // Sometimes a second run overlaps this one (a scheduler retry while the first still runs); it runs
        // to its end, whatever happens to the first.
        let overlap = (rng.next_f64() < 0.25 && attempt < 8)
            .then(|| spawn(&sb, &path, &key, seed, 100 + attempt, None, &extra, clock_offset));
        let child = spawn(&sb, &path, &key, seed, attempt, crash, &extra, clock_offset);
        tally.runs += 1 + overlap.is_some() as u32;
        let (code, out) = tokio::task::block_in_place(|| {
            let out = child.wait_with_output().expect("wait");
            (out.status.code(), text(&out))
        });
        outputs.push_str(&out);
        let mut other_code = Some(0);
        if let Some(other) = overlap {
            let o = tokio::task::block_in_place(|| other.wait_with_output().expect("wait"));
            outputs.push_str(&String::from_utf8_lossy(&o.stdout));
            outputs.push_str(&String::from_utf8_lossy(&o.stderr));
            other_code = o.status.code();
        }
        // Safety holds after every run, killed or not.
        check_safety(&sb, &wh, &world, &format!("after run {attempt} (crash {crash:?}, exit {code:?})")).await;
        if code.is_none() {
            tally.kills += 1;
            if let Some((point, _)) = crash {
                *tally.by_point.entry(point.as_str()).or_default() += 1;
            }
            // The killed run's intents may still be in flight for all the next run can tell: it leaves them
            // alone until the in-flight timeout, as a scheduler's retry interval would. The next run starts
            // that much later on its own clock (the sandbox answers by key, not by time): no waiting.
            clock_offset += IN_FLIGHT_SECS + 1;
        }
        if matches!(code, Some(0) | Some(5)) && matches!(other_code, Some(0) | Some(5)) {
            done = true;
            break;
        }
    }
    tally.faults = sb.stats().faults;
    assert!(done, "seed {seed}: pfsync run never finished cleanly within the bound; last output:\n{}", tail(&outputs));
    check_safety(&sb, &wh, &world, "at the end").await;

    // Nothing lost: every valid operation moved money exactly once, and reconcile left nothing open.
    let good: Vec<&str> = rows.iter().take(n_good).map(|r| r.0.as_str()).collect();
    let per_key = assert_paid_once(&sb, PaidBy::Key, &good, &format!("seed {seed}"));
    for (id, action, ..) in actions.iter().take(n_good_actions) {
        let k = format!("pfsync:default:escrow_{action}:{id}");
        assert_eq!(per_key.get(&k).copied().unwrap_or(0), 1, "seed {seed}: escrow action {id} moved money once");
    }
    for k in &once {
        assert_eq!(
            per_key.get(k).copied().unwrap_or(0),
            1,
            "seed {seed}: {k} (a feed event or a rule) moved money once"
        );
    }
    tally.feed_events = once.len() - n_rules;
    tally.rules = n_rules;
    let ctx = sql_context(&wh).await.expect("sql");
    let open = count(&ctx, "SELECT count(*) FROM purpleflea.payouts.open_findings").await;
    assert_eq!(open, 0, "seed {seed}: open reconciliation findings");
    // The key never appears in any output.
    assert!(!outputs.contains(&key) && !outputs.contains(&format!("SIMSECRET{seed:x}")), "seed {seed}: API key leaked");
    tally
}

/// What a scenario set up, for the invariant checks.
struct World<'a> {
    seed: u64,
    rows: &'a [(String, String, String, String)],
    n_good: usize,
    bad: &'a [(String, String, String, String)],
    actions: &'a [(String, &'static str, Option<String>, String, String)],
    n_good_actions: usize,
    /// Idempotency keys of the feed's events and the rules' releases: at most once always, once at the end.
    once: &'a [String],
    key: &'a str,
}

/// The invariants that hold at every instant, whatever was killed where.
async fn check_safety(sb: &Sandbox, wh: &pfsync::tables::Warehouse, w: &World<'_>, when: &str) {
    let seed = w.seed;
    // 1. Nothing moved money twice; no bad row ever.
    let per_key = paid_per(sb, PaidBy::Key);
    for (id, ..) in w.rows.iter().take(w.n_good) {
        let k = format!("pfsync:default:payout:{id}");
        assert!(per_key.get(&k).copied().unwrap_or(0) <= 1, "seed {seed} {when}: {id} paid twice");
    }
    for (id, ..) in w.bad {
        let k = format!("pfsync:default:payout:{id}");
        assert_eq!(per_key.get(&k), None, "seed {seed} {when}: bad row {id} paid");
    }
    for (i, (id, action, ..)) in w.actions.iter().enumerate() {
        let k = format!("pfsync:default:escrow_{action}:{id}");
        let most = usize::from(i < w.n_good_actions);
        assert!(
            per_key.get(&k).copied().unwrap_or(0) <= most,
            "seed {seed} {when}: escrow action {id} moved money more than {most} time(s)"
        );
    }
    for k in w.once {
        assert!(per_key.get(k).copied().unwrap_or(0) <= 1, "seed {seed} {when}: {k} moved money twice");
    }
    // 2. Money is conserved in the provider's books.
    sb.ledger().check_books().unwrap_or_else(|e| panic!("seed {seed} {when}: {e}"));
    // 3. Every table opens with its declared schema.
    for spec in ALL {
        if let Some(t) = open_existing(wh, spec).await.unwrap_or_else(|e| panic!("seed {seed} {when}: {e}")) {
            pfsync::tables::store::check_schema(&t, spec, &wh.location(&spec.table_name()))
                .unwrap_or_else(|e| panic!("seed {seed} {when}: {e}"));
        }
    }
    // 4. The log has an intent before every outcome.
    if open_existing(wh, &pfsync::tables::PAYOUT_LOG).await.ok().flatten().is_some() {
        let ctx = sql_context(wh).await.expect("sql");
        let orphans = count(
            &ctx,
            "SELECT count(*) FROM purpleflea.payouts.log o WHERE o.event <> 'intent' AND NOT EXISTS \
             (SELECT 1 FROM purpleflea.payouts.log i WHERE i.event = 'intent' AND i.operation_id = o.operation_id \
              AND i.attempt = o.attempt AND i.recorded_at <= o.recorded_at)",
        )
        .await;
        assert_eq!(orphans, 0, "seed {seed} {when}: outcomes without a prior intent");
    }
    let _ = w.key;
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
