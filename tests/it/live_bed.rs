//! The Purple Flea test bed: Purple Flea's own casino and escrow services (Node.js, their open-source code)
//! on 127.0.0.1, for tests against the real thing (see `../shared/purpleflea-live/README.md` for what they
//! do and how they differ from the seed's contract).
//!
//! ```ignore
//! let Some(bed) = crate::live_bed::bed() else { return }; // no test bed here: a skip line was printed
//! let agents = bed.agents(2);                             // [(agent_id, api_key, referral_code), ...]
//! bed.fund(&agents[0].0, 10.0);                           // a settled deposit
//! reqwest::Client::new().get(format!("{}/auth/ledger", bed.casino_url)).bearer_auth(&agents[0].1) ...
//! ```
//!
//! One bed per test process, started by the first test that asks ([`bed`]) and shared by all: tests keep
//! apart by making agents of their own. It is stopped, and its folder removed, when the test process exits
//! (however it exits): a watchdog shell started alongside waits for this process to go. A static is never
//! dropped, so no `Drop` could do that.
//!
//! With `PFSYNC_LIVE_BED_DIR` set (CI starts one bed for the whole run), that running bed is used instead.
//! The start script is `$PFSYNC_LIVE_BED_SCRIPT`, by default `../shared/purpleflea-live/start.sh` next to
//! this crate; `agents.py` and `fund.py` sit beside it. Without them, [`bed`] prints a skip line and returns
//! `None`, unless `CI=true` or `PFSYNC_REQUIRE_LIVE_BED` is set: then a missing bed fails the test. A script
//! that exists but fails to start the bed fails the test. Its first run installs the services' npm
//! dependencies (a few minutes); later runs reuse them and start in about a second.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::common::{Missing, wait_until};

/// A running test bed.
pub struct LiveBed {
    /// The casino's API base, `http://127.0.0.1:PORT/api/v1` (accounts, balances, ledger, `/stats/pay`).
    pub casino_url: String,
    /// The escrow service's base, `http://127.0.0.1:PORT` (no `/api` prefix).
    pub escrow_url: String,
    /// The bed's state folder (the shared SQLite database `casino.db`, `escrow.db`, the services' logs).
    pub dir: PathBuf,
    scripts: PathBuf,
    /// Outlives this process on purpose (see the module docs): never waited for.
    _watchdog: Option<Child>,
}

/// The test bed, started on first use; `None` (after a skip line) when its scripts are missing, outside CI.
pub fn bed() -> Option<&'static LiveBed> {
    static BED: OnceLock<Result<LiveBed, Missing>> = OnceLock::new();
    let bed = BED.get_or_init(|| {
        let script = script()?;
        // A bed CI started (`.ci/run`): used as it is, and left for CI to stop.
        if let Some(dir) = std::env::var_os("PFSYNC_LIVE_BED_DIR").filter(|d| !d.is_empty()) {
            return Ok(LiveBed::attach(PathBuf::from(dir), &script));
        }
        Ok(LiveBed::start(&script))
    });
    match bed {
        Ok(b) => Some(b),
        Err(missing) => missing.skip_or_fail(),
    }
}

/// The bed's start script, with `agents.py` and `fund.py` beside it (an attached bed needs those too).
fn script() -> Result<PathBuf, Missing> {
    let script = match std::env::var_os("PFSYNC_LIVE_BED_SCRIPT") {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/purpleflea-live/start.sh"),
    };
    let beside = |name: &str| script.parent().is_some_and(|d| d.join(name).is_file());
    if script.is_file() && beside("agents.py") && beside("fund.py") {
        return Ok(script);
    }
    Err(Missing {
        what: format!("no Purple Flea test bed: no {} with agents.py and fund.py beside it", script.display()),
        fix: "set PFSYNC_LIVE_BED_SCRIPT to purpleflea-live/start.sh of the shared folder".into(),
        require: "PFSYNC_REQUIRE_LIVE_BED",
    })
}

impl LiveBed {
    /// A bed already running in `dir` (its `casino.url` and `escrow.url` written by `start.sh`).
    fn attach(dir: PathBuf, script: &Path) -> LiveBed {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default().trim().to_string();
        let (casino_url, escrow_url) = (read("casino.url"), read("escrow.url"));
        assert!(casino_url.starts_with("http://127.0.0.1:"), "PFSYNC_LIVE_BED_DIR: casino.url {casino_url:?}");
        let scripts = script.parent().map(Path::to_path_buf).unwrap_or_default();
        LiveBed { casino_url, escrow_url, dir, scripts, _watchdog: None }
    }

    fn start(script: &Path) -> LiveBed {
        let dir = tempfile::Builder::new().prefix("pfsync-live-bed-").tempdir().expect("a temp folder").keep();
        // Started first, so the bed goes even if this process dies while it starts.
        let watchdog = watchdog(&dir);
        let log = dir.join("start.log");
        let started = std::time::Instant::now();
        let status = Command::new(script)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("start.log"))
            .stderr(std::fs::File::create(dir.join("start.err")).expect("start.err"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default().trim().to_string();
        assert!(
            status.success(),
            "{} failed ({status}):\n{}\n{}",
            script.display(),
            read("start.log"),
            read("start.err")
        );
        let (casino_url, escrow_url) = (read("casino.url"), read("escrow.url"));
        assert!(casino_url.starts_with("http://127.0.0.1:"), "casino.url: {casino_url:?}");
        assert!(escrow_url.starts_with("http://127.0.0.1:"), "escrow.url: {escrow_url:?}");
        println!("test bed up in {:.1} s: casino {casino_url}, escrow {escrow_url}", started.elapsed().as_secs_f64());
        let scripts = script.parent().map(Path::to_path_buf).unwrap_or_default();
        LiveBed { casino_url, escrow_url, dir, scripts, _watchdog: Some(watchdog) }
    }

    /// `n` new agents, each `(agent_id, api_key, referral_code)`, made as `POST /auth/register` makes them
    /// (without its 10-a-minute limit) and with no balance: [`fund`](Self::fund) one to pay from it.
    pub fn agents(&self, n: usize) -> Vec<(String, String, String)> {
        self.agents_referred(n, None)
    }

    /// `n` new agents referred by the owner of `referral_code` (as registering with it makes them).
    pub fn agents_referred(&self, n: usize, referral_code: Option<&str>) -> Vec<(String, String, String)> {
        // agents.py picks the next deposit index outside its write transaction: one at a time.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let count = n.to_string();
        let mut args = vec![count.as_str()];
        args.extend(referral_code);
        let out = self.run("agents.py", &args);
        let agents: Vec<(String, String, String)> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("agents.py: {e}: {l}"));
                let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("agents.py: no {k}: {l}")).to_string();
                (field("agent_id"), field("api_key"), field("referral_code"))
            })
            .collect();
        assert_eq!(agents.len(), n, "agents.py made {} agents, not {n}: {out}", agents.len());
        agents
    }

    /// A bed of this test's own (not shared): for a test that restarts a service. Stopped with the process.
    /// `None` (after a skip line) when the scripts are missing, outside CI.
    pub fn private() -> Option<LiveBed> {
        match script() {
            Ok(script) => Some(LiveBed::start(&script)),
            Err(missing) => missing.skip_or_fail(),
        }
    }

    /// Move an escrow's `auto_release_at` into the past and restart the escrow service, whose timeout job
    /// runs at start: the escrow is refunded to its creator, less the commission, as after its timeout.
    pub fn time_out(&self, escrow_id: &str) {
        let db = self.dir.join("escrow.db");
        let sql = format!("UPDATE escrows SET auto_release_at = strftime('%s','now') - 60 WHERE id = '{escrow_id}'");
        let ok = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); c.execute(sys.argv[2]); c.commit()",
            ])
            .arg(&db)
            .arg(&sql)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot age escrow {escrow_id} in {}", db.display());
        let health = format!("{}/health", self.escrow_url);
        let up = || {
            let mut curl = Command::new("curl");
            curl.args(["-fsS", "-m", "2", &health]).stdout(Stdio::null()).stderr(Stdio::null());
            curl.status().is_ok_and(|s| s.success())
        };
        let pid = std::fs::read_to_string(self.dir.join("escrow.pid")).unwrap_or_default();
        let _ = Command::new("kill").arg(pid.trim()).status();
        // The new service takes the old one's port: start it once the old one has stopped answering.
        wait_until("the escrow service stops after SIGTERM", Duration::from_secs(30), || !up());
        // Detached through a shell that returns at once: the service outlives this call, as the bed's others do.
        let started = Command::new("sh")
            .arg("-c")
            .arg("\"$1\" >/dev/null 2>&1 &")
            .arg("sh")
            .arg(self.dir.join("start-escrow"))
            .stdin(Stdio::null())
            .status()
            .expect("start-escrow");
        assert!(started.success(), "start-escrow: {started}");
        wait_until(&format!("the escrow service is back at {health}"), Duration::from_secs(10), up);
    }

    /// Credit `amount` USD to `agent_id`'s casino balance as a settled deposit would (one ledger credit).
    pub fn fund(&self, agent_id: &str, amount: f64) {
        self.run("fund.py", &[agent_id, &amount.to_string()]);
    }

    /// Run one of the bed's scripts with the state folder first; its stdout.
    fn run(&self, name: &str, args: &[&str]) -> String {
        let path = self.scripts.join(name);
        let out = Command::new(&path)
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name} {args:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// A shell that waits for this test process to end, then stops the bed's services and removes its folder.
fn watchdog(dir: &Path) -> Child {
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
[ -f "$2/pids" ] && kill $(cat "$2/pids") 2>/dev/null
sleep 1; rm -rf "$2""#;
    Command::new("sh")
        .args(["-c", script, "live-bed-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test bed's watchdog starts")
}
