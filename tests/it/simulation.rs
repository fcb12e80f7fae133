//! Seeded fault simulation, TigerBeetle style. One scenario = a seed that decides the pending payouts and
//! escrow actions (bad rows included), the sandbox's faults, where `pfsync run` is SIGKILLed, and when a
//! second run overlaps it. The
//! scenario reruns `pfsync run` until it exits 0 (or 5: only refused rows remain) or a bound is hit, then
//! checks the invariants against the sandbox's own ledger and the tables.
//!
//! CI runs a few seeds. The long run, and any failing seed again:
//!   PFSYNC_SIM_SEEDS=500 cargo test --test it simulation -- --nocapture
//!   PFSYNC_SIM_SEED=1234 cargo test --test it simulation -- --nocapture
//! `PFSYNC_SIM_BIN` points the scenarios at another `pfsync` binary (a frozen copy, so a long run is not
//! disturbed by a rebuild of the target dir).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pfsync::rng::SplitMix64;
use pfsync::sandbox::{FaultConfig, Sandbox, SandboxConfig, SeedConfig};
use pfsync::secret::ApiKey;
use pfsync::tables::{ALL, open_existing, sql_context};

use crate::common::{count, warehouse};
use crate::payouts::{write_actions, write_pending};

#[derive(Debug, Default)]
struct Tally {
    runs: u32,
    kills: u32,
    faults: u64,
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("PFSYNC_SIM_SEED") {
        return vec![s.parse().expect("PFSYNC_SIM_SEED")];
    }
    let n: u64 = std::env::var("PFSYNC_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    (1..=n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_simulation_never_pays_twice_or_loses_a_payout() {
    let mut total = Tally::default();
    let seeds = seeds();
    for &seed in &seeds {
        let t = scenario(seed).await;
        println!("seed {seed}: ok ({} runs, {} SIGKILLs, {} faults)", t.runs, t.kills, t.faults);
        total.runs += t.runs;
        total.kills += t.kills;
        total.faults += t.faults;
    }
    println!(
        "simulation: {} seeds, 0 violations; {} pfsync runs, {} SIGKILLs, {} injected faults",
        seeds.len(),
        total.runs,
        total.kills,
        total.faults
    );
}

fn spawn(sb: &Sandbox, wh: &std::path::Path, key: &str, seed: u64, attempt: u32) -> Child {
    let url = sb.base_url().to_string();
    let bin = std::env::var_os("PFSYNC_SIM_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pfsync").into());
    Command::new(bin)
        .args(["--api-url", &url, "--faucet-url", &url, "-q", "--max-attempts", "4", "--max-elapsed-secs", "20"])
        .arg("--run-id")
        .arg(format!("sim-{seed}-{attempt}"))
        .arg("--warehouse")
        .arg(wh)
        .args(["run", "--batch-size", "7", "--concurrency", "8"])
        .env("PURPLEFLEA_API_KEY", key)
        .env_remove("PFSYNC_PAUSE_AT")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pfsync")
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
    let mut actions: Vec<(String, &str, Option<String>, String, String)> = Vec::new();
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

    let mut tally = Tally::default();
    let path = dir.path().to_path_buf();
    let mut outputs = String::new();
    let mut done = false;
    for attempt in 0..12u32 {
        let kill_after = (rng.next_f64() < 0.5 && attempt < 8).then(|| Duration::from_millis(rng.range(30, 1500)));
        // Sometimes a second run overlaps this one (a scheduler retry while the first still runs); it runs
        // to its end, whatever happens to the first.
        let overlap = (rng.next_f64() < 0.25 && attempt < 8).then(|| spawn(&sb, &path, &key, seed, 100 + attempt));
        let child = spawn(&sb, &path, &key, seed, attempt);
        tally.runs += 1 + overlap.is_some() as u32;
        let (code, out) = tokio::task::block_in_place(|| {
            let mut child = child;
            if let Some(after) = kill_after {
                std::thread::sleep(after);
                if child.try_wait().ok().flatten().is_none() {
                    let _ = child.kill(); // SIGKILL: anywhere, mid-page, mid-batch, mid-commit.
                }
            }
            let out = child.wait_with_output().expect("wait");
            (
                out.status.code(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        });
        if code.is_none() {
            tally.kills += 1;
        }
        outputs.push_str(&out);
        // The overlapping run may finish last; its verdict counts too (it may meet the other run's requests
        // in flight, 409 -> unknown, which the next attempt resolves by lookup).
        let mut other_clean = true;
        if let Some(other) = overlap {
            let o = tokio::task::block_in_place(|| other.wait_with_output().expect("wait"));
            outputs.push_str(&String::from_utf8_lossy(&o.stdout));
            outputs.push_str(&String::from_utf8_lossy(&o.stderr));
            other_clean = matches!(o.status.code(), Some(0) | Some(5));
        }
        if matches!(code, Some(0) | Some(5)) && other_clean {
            done = true;
            break;
        }
    }
    tally.faults = sb.stats().faults;
    assert!(done, "seed {seed}: pfsync run never finished cleanly within the bound; last output:\n{}", tail(&outputs));

    // 1. Every valid payout exactly once at the provider; no bad row ever.
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for t in sb.ledger().transactions() {
        if let Some(k) = &t.idempotency_key {
            *per_key.entry(k.clone()).or_default() += 1;
        }
    }
    for (id, ..) in rows.iter().take(n_good) {
        let k = format!("pfsync:default:payout:{id}");
        assert_eq!(per_key.get(&k).copied().unwrap_or(0), 1, "seed {seed}: {id} paid exactly once");
    }
    for (id, ..) in &bad {
        let k = format!("pfsync:default:payout:{id}");
        assert_eq!(per_key.get(&k), None, "seed {seed}: bad row {id} never paid");
    }
    for (i, (id, action, ..)) in actions.iter().enumerate() {
        let k = format!("pfsync:default:escrow_{action}:{id}");
        let want = usize::from(i < n_good_actions);
        assert_eq!(
            per_key.get(&k).copied().unwrap_or(0),
            want,
            "seed {seed}: escrow action {id} moved money {want} time(s)"
        );
    }
    // 2. Money is conserved in the provider's books.
    sb.ledger().check_books().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    // 3. Every table opens with its declared schema.
    for spec in ALL {
        if let Some(t) = open_existing(&wh, spec).await.unwrap_or_else(|e| panic!("seed {seed}: {e}")) {
            pfsync::tables::store::check_schema(&t, spec, &wh.location(&spec.table_name()))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
    // 4. The log has an intent before every outcome, and reconcile left nothing open.
    let ctx = sql_context(&wh).await.expect("sql");
    let orphans = count(
        &ctx,
        "SELECT count(*) FROM purpleflea.payouts.log o WHERE o.event <> 'intent' AND NOT EXISTS \
         (SELECT 1 FROM purpleflea.payouts.log i WHERE i.event = 'intent' AND i.operation_id = o.operation_id \
          AND i.attempt = o.attempt AND i.recorded_at <= o.recorded_at)",
    )
    .await;
    assert_eq!(orphans, 0, "seed {seed}: outcomes without a prior intent");
    let open = count(&ctx, "SELECT count(*) FROM purpleflea.payouts.open_findings").await;
    assert_eq!(open, 0, "seed {seed}: open reconciliation findings");
    // 5. The key never appears in any output.
    assert!(!outputs.contains(&key) && !outputs.contains(&format!("SIMSECRET{seed:x}")), "seed {seed}: API key leaked");
    tally
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
