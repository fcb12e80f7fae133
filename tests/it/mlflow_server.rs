//! A real MLflow tracking server on 127.0.0.1 (the `mlflow` package from PyPI), for the metric-rule tests;
//! runs and metrics are logged through MLflow's own Python client ([`MlflowServer::python`]).
//!
//! ```ignore
//! let Some(ml) = crate::mlflow_server::server() else { return }; // no MLflow here: a skip line was printed
//! let run = ml.python("r = mlflow.MlflowClient().create_run('0'); print(r.info.run_id)");
//! ```
//!
//! One server per test process, started by the first test that asks and shared by all: tests keep apart by
//! making runs of their own. The server runs from the virtual environment `$PFSYNC_MLFLOW_VENV` (default
//! `~/.cache/pfsync-mlflow-venv`, where `.ci/run` installs `mlflow`), with a SQLite store in a temp folder.
//! Without `bin/mlflow` there, [`server`] prints a skip line and returns `None`, unless `CI=true` or
//! `PFSYNC_REQUIRE_MLFLOW` is set: then a missing MLflow fails the test. The server, its workers and
//! its folder go when the test process exits, however it exits: a watchdog shell started alongside waits
//! for this process to end, then kills the server's process group.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::Missing;

pub struct MlflowServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    venv: PathBuf,
    _dir: PathBuf,
    _server: Child,
    _watchdog: Child,
}

fn venv() -> PathBuf {
    match std::env::var_os("PFSYNC_MLFLOW_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/pfsync-mlflow-venv"),
    }
}

/// The server, started on first use; `None` (after a skip line) when MLflow is not installed, outside CI.
pub fn server() -> Option<&'static MlflowServer> {
    static SERVER: OnceLock<Result<MlflowServer, Missing>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let venv = venv();
        if !venv.join("bin/mlflow").is_file() {
            return Err(Missing {
                what: format!("no mlflow in {}", venv.display()),
                fix: "pip install mlflow into that venv, or set PFSYNC_MLFLOW_VENV to one that has it".into(),
                require: "PFSYNC_REQUIRE_MLFLOW",
            });
        }
        Ok(MlflowServer::start(venv))
    });
    match server {
        Ok(s) => Some(s),
        Err(missing) => missing.skip_or_fail(),
    }
}

impl MlflowServer {
    fn start(venv: PathBuf) -> MlflowServer {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("pfsync-mlflow-").tempdir().expect("a temp folder").keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let server = Command::new(venv.join("bin/mlflow"))
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            // Artifacts served by the server itself (`mlflow-artifacts:/...`), as pfsync's record is written.
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            // No background job runner: the tests need the tracking API only.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("server.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("server.err")).unwrap())
            .spawn()
            .expect("mlflow server starts");
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -9 "-$2" 2>/dev/null; sleep 1; rm -rf "$3""#;
        let watchdog = Command::new("sh")
            .args(["-c", script, "mlflow-watchdog"])
            .arg(std::process::id().to_string())
            .arg(server.id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the MLflow watchdog starts");
        let health = format!("{url}/health");
        loop {
            let up = Command::new("curl")
                .args(["-fsS", "-m", "2", &health])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if up.is_ok_and(|s| s.success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "MLflow did not come up at {url}: {}",
                std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        println!("MLflow up in {:.1} s at {url}", started.elapsed().as_secs_f64());
        MlflowServer { url, venv, _dir: dir, _server: server, _watchdog: watchdog }
    }

    /// Run Python with `mlflow` imported and the tracking URI set to this server; its stdout, trimmed.
    pub fn python(&self, code: &str) -> String {
        let program = format!("import mlflow\nmlflow.set_tracking_uri({:?})\n{code}", self.url);
        let out = Command::new(self.venv.join("bin/python"))
            .args(["-c", &program])
            .env("MLFLOW_TRACKING_URI", &self.url)
            .stdin(Stdio::null())
            .output()
            .expect("python runs");
        assert!(out.status.success(), "python failed: {code}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new run in experiment `experiment` (made if needed) with `values` logged for `key` at steps 0,
    /// 1, ...; its run id.
    pub fn run_with(&self, experiment: &str, key: &str, values: &[f64]) -> String {
        self.python(&format!(
            "c = mlflow.MlflowClient()\n\
             e = c.get_experiment_by_name({experiment:?})\n\
             eid = e.experiment_id if e else c.create_experiment({experiment:?})\n\
             r = c.create_run(eid)\n\
             for i, v in enumerate({values:?}): c.log_metric(r.info.run_id, {key:?}, v, step=i)\n\
             print(r.info.run_id)"
        ))
    }

    /// One new run per entry of `values` (each logged for `key` at steps 0, 1, ...), in one Python call;
    /// their run ids, in order.
    pub fn runs_with(&self, experiment: &str, key: &str, values: &[Vec<f64>]) -> Vec<String> {
        if values.is_empty() {
            return Vec::new();
        }
        let out = self.python(&format!(
            "c = mlflow.MlflowClient()\n\
             e = c.get_experiment_by_name({experiment:?})\n\
             eid = e.experiment_id if e else c.create_experiment({experiment:?})\n\
             for vs in {values:?}:\n    r = c.create_run(eid)\n    \
             for i, v in enumerate(vs): c.log_metric(r.info.run_id, {key:?}, v, step=i)\n    \
             print(r.info.run_id)"
        ));
        out.lines().map(str::to_string).collect()
    }

    /// Log more values of `key` to a run, at the given steps.
    pub fn log(&self, run_id: &str, key: &str, steps: &[(i64, f64)]) {
        self.python(&format!(
            "c = mlflow.MlflowClient()\nfor s, v in {steps:?}: c.log_metric({run_id:?}, {key:?}, v, step=s)"
        ));
    }

    /// The text of a run's artifact, as MLflow's client downloads it.
    pub fn artifact(&self, run_id: &str, path: &str) -> String {
        self.python(&format!("print(mlflow.artifacts.load_text('runs:/{run_id}/{path}'))"))
    }

    /// A run's tags, as `key=value` lines sorted, of the tags whose key starts with `purpleflea.`.
    pub fn purpleflea_tags(&self, run_id: &str) -> Vec<(String, String)> {
        let out = self.python(&format!(
            "t = mlflow.MlflowClient().get_run({run_id:?}).data.tags\n\
             for k in sorted(t):\n    if k.startswith('purpleflea.'): print(k + '=' + t[k])"
        ));
        out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}
