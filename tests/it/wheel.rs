//! The Python wheel that carries the binary (scripts/build-wheel.sh): it installs into a fresh virtual
//! environment, its console command and its Databricks entry point run pfsync, the binary asks for no
//! glibc newer than 2.31, and the entry point takes the key from a Databricks secret without printing it.
//!
//! Building the wheel is a release build for an old glibc (tens of minutes on 2 cores), so these tests use
//! the wheel `.ci/run` built, and are left out of a plain `cargo test` (ignored):
//! `PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored wheel::`. Run without `PFSYNC_WHEEL`,
//! they print a skip line, unless `CI=true` or `PFSYNC_REQUIRE_WHEEL` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pfsync::sandbox::{Sandbox, SandboxConfig};
use pfsync::secret::ApiKey;

use crate::common::{Missing, text};

const MAX_GLIBC: (u32, u32) = (2, 31);
const SECRET: &str = "pf_live_FROM_THE_SCOPE_7c21e9";

/// A virtual environment with the wheel installed, made once for all tests here.
struct Venv {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    wheel: PathBuf,
}

fn venv() -> Option<&'static Venv> {
    static VENV: OnceLock<Result<Venv, Missing>> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let Some(wheel) = std::env::var_os("PFSYNC_WHEEL").filter(|w| !w.is_empty()).map(PathBuf::from) else {
            return Err(Missing {
                what: "PFSYNC_WHEEL is not set".into(),
                fix: "build the wheel with scripts/build-wheel.sh and set PFSYNC_WHEEL to it, as .ci/run does".into(),
                require: "PFSYNC_REQUIRE_WHEEL",
            });
        };
        assert!(wheel.is_file(), "PFSYNC_WHEEL={} is not a file", wheel.display());
        let dir = tempfile::tempdir().unwrap();
        let python = std::env::var("PFSYNC_PYTHON").unwrap_or_else(|_| "python3".into());
        ok(Command::new(python).args(["-m", "venv"]).arg(dir.path().join("venv")).output().unwrap());
        let bin = dir.path().join("venv/bin");
        // No index: the wheel needs nothing else, and the test needs no network.
        ok(Command::new(bin.join("pip"))
            .args(["install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check"])
            .arg(&wheel)
            .output()
            .unwrap());
        Ok(Venv { _dir: dir, bin, wheel })
    });
    match venv {
        Ok(v) => Some(v),
        Err(missing) => missing.skip_or_fail(),
    }
}

/// A `pfsync` built with the cloud and Unity Catalog features, for the S3 and Unity tests: the one
/// `PFSYNC_CLOUD_BIN` names (`cargo build --features unity` makes one), else the wheel's; `None` (the test
/// skips) when there is neither and nothing requires it.
pub fn cloud_pfsync() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("PFSYNC_CLOUD_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    venv().map(|v| v.bin.join("pfsync"))
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A python_wheel_task: Databricks imports the package's `main` entry point and calls it with the task's
/// parameters in `sys.argv`, inside its own Python process.
fn wheel_task(venv: &Venv, cwd: &Path, args: &[&str]) -> Command {
    let script = "import sys\n\
        from importlib import metadata\n\
        [ep] = [e for e in metadata.distribution('pfsync').entry_points if e.name == 'main']\n\
        sys.argv = ['pfsync', *sys.argv[1:]]\n\
        ep.load()()\n";
    let mut c = Command::new(venv.bin.join("python"));
    c.arg("-c").arg(script).args(args).current_dir(cwd).env_remove("PURPLEFLEA_API_KEY");
    c
}

#[test]
#[ignore = "needs the wheel: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored wheel::"]
fn the_wheel_installs_and_its_command_and_entry_point_run_pfsync() {
    let Some(venv) = venv() else { return };
    let name = venv.wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("pfsync-{}-", env!("CARGO_PKG_VERSION"))), "{name}");
    let tag = name.split("manylinux_").nth(1).unwrap_or_else(|| panic!("a manylinux wheel: {name}"));
    let glibc: Vec<u32> = tag.split('_').take(2).map(|n| n.parse().unwrap()).collect();
    assert!((glibc[0], glibc[1]) <= MAX_GLIBC, "{name} claims glibc {glibc:?}");
    assert!(name.ends_with("_x86_64.whl"), "{name}");

    // The console command is the binary itself.
    let version = ok(Command::new(venv.bin.join("pfsync")).arg("--version").output().unwrap());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("pfsync {}", env!("CARGO_PKG_VERSION")));
    ok(Command::new(venv.bin.join("pfsync")).arg("--help").output().unwrap());
    // `python -m pfsync` and the python_wheel_task entry point find and run it.
    let module = ok(Command::new(venv.bin.join("python")).args(["-m", "pfsync", "--version"]).output().unwrap());
    assert_eq!(module.stdout, version.stdout);
    let scratch = tempfile::tempdir().unwrap();
    let task = ok(wheel_task(venv, scratch.path(), &["--version"]).output().unwrap());
    assert_eq!(task.stdout, version.stdout);

    // The whole job end to end through the entry point, as a Workflow task would run it.
    let demo = ok(wheel_task(venv, scratch.path(), &["demo", "--agents", "200"]).output().unwrap());
    assert!(scratch.path().join("pfsync-demo/purpleflea/agents/wallets/_delta_log").is_dir(), "{}", text(&demo));
    assert!(!text(&demo).contains('\u{1b}'), "no colour codes when stderr is not a terminal");
    // A failing command fails the task with pfsync's exit code (2: usage), not a Python traceback.
    let bad = wheel_task(venv, scratch.path(), &["no-such-command"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(!text(&bad).contains("Traceback"), "{}", text(&bad));
}

#[test]
#[ignore = "needs the wheel: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored wheel::"]
fn the_binary_asks_for_no_glibc_newer_than_2_31() {
    let Some(venv) = venv() else { return };
    let out = ok(Command::new("objdump").arg("-T").arg(venv.bin.join("pfsync")).output().unwrap());
    let symbols = String::from_utf8_lossy(&out.stdout);
    let highest = symbols
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("the binary links glibc dynamically");
    println!("highest GLIBC_ symbol version: {}.{}", highest.0, highest.1);
    assert!(highest <= MAX_GLIBC, "the binary needs GLIBC_{}.{}", highest.0, highest.1);
}

/// A stand-in for the Databricks SDK, first on the path: `WorkspaceClient().dbutils.secrets.get` answers
/// from a JSON file, as the real one answers from the workspace's secret scopes.
fn fake_sdk(dir: &Path, secrets: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("fake-sdk");
    std::fs::create_dir_all(root.join("databricks/sdk")).unwrap();
    std::fs::write(root.join("databricks/__init__.py"), "").unwrap();
    let map: serde_json::Map<String, serde_json::Value> =
        secrets.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
    std::fs::write(root.join("secrets.json"), serde_json::to_string(&map).unwrap()).unwrap();
    std::fs::write(
        root.join("databricks/sdk/__init__.py"),
        r#"import json, os

class NotFound(Exception):
    pass

class _Secrets:
    def get(self, scope, key):
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "secrets.json")) as f:
            secrets = json.load(f)
        if f"{scope}/{key}" not in secrets:
            raise NotFound(f"Secret does not exist with scope: {scope} and key: {key}")
        return secrets[f"{scope}/{key}"]

class _DbUtils:
    secrets = _Secrets()

class _Config:
    host = "https://adb-1.example.azuredatabricks.net"

class WorkspaceClient:
    def __init__(self):
        self.dbutils = _DbUtils()
        self.config = _Config()
"#,
    )
    .unwrap();
    root
}

async fn sandbox_with_key(key: &str) -> Sandbox {
    let mut cfg = SandboxConfig::for_tests(20);
    cfg.api_key = ApiKey::new(key, "test").unwrap();
    Sandbox::start(cfg).await.unwrap()
}

#[tokio::test]
#[ignore = "needs the wheel: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored wheel::"]
async fn the_entry_point_takes_the_key_from_a_databricks_secret_and_never_prints_it() {
    let Some(venv) = venv() else { return };
    let sb = sandbox_with_key(SECRET).await;
    let url = sb.base_url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sdk = fake_sdk(dir.path(), &[("purple-flea/api_key", SECRET)]);
    let run = |setting_as: &'static str, wh: &'static str| {
        let (url, sdk, cwd) = (url.clone(), sdk.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![];
            if setting_as == "parameter" {
                args.push("PFSYNC_API_KEY_SECRET=purple-flea/api_key");
            }
            let wh_arg = format!("--warehouse={}", cwd.join(wh).display());
            // A warehouse is initialised once, before its first run (the README's walkthrough does the same).
            ok(wheel_task(venv, &cwd, &[&wh_arg, "init"]).output().unwrap());
            args.extend(["--api-url", &url, "--faucet-url", &url, &wh_arg, "-vv", "sync", "wallets"]);
            let mut c = wheel_task(venv, &cwd, &args);
            c.env("PYTHONPATH", &sdk).env("RUST_LOG", "trace");
            if setting_as == "environment" {
                c.env("PFSYNC_API_KEY_SECRET", "purple-flea/api_key");
            }
            c.output().unwrap()
        })
    };
    // As a leading task parameter (serverless has no environment variables) and as a variable.
    for (how, wh) in [("parameter", "wh1"), ("environment", "wh2")] {
        let out = run(how, wh).await.unwrap();
        let all = text(&out);
        assert!(out.status.success(), "{how}: {all}");
        assert!(all.contains("PURPLEFLEA_API_KEY from the Databricks secret purple-flea/api_key"), "{how}: {all}");
        assert!(!all.contains("FROM_THE_SCOPE") && !all.contains("7c21e9"), "{how}: the key leaked:\n{all}");
        assert!(dir.path().join(wh).join("purpleflea/agents/wallets/_delta_log").is_dir(), "{how}: {all}");
    }
    // Without the setting there is no key, and the sandbox is never asked.
    let wh3 = format!("--warehouse={}", dir.path().join("wh3").display());
    ok(wheel_task(venv, dir.path(), &[&wh3, "init"]).output().unwrap());
    let out = wheel_task(venv, dir.path(), &["--api-url", &url, &wh3, "sync", "wallets"])
        .env("PYTHONPATH", &sdk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("PURPLEFLEA_API_KEY"), "{}", text(&out));
    sb.shutdown().await;
}

#[test]
#[ignore = "needs the wheel: PFSYNC_WHEEL=dist/pfsync-...whl cargo test --test it -- --ignored wheel::"]
fn a_bad_secret_setting_stops_before_pfsync_runs() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sdk = fake_sdk(dir.path(), &[("purple-flea/api_key", SECRET)]);
    for (setting, expect) in [
        ("PFSYNC_API_KEY_SECRET=purple-flea", "must be SCOPE/KEY"),
        ("PFSYNC_API_KEY_SECRET=purple-flea/missing", "cannot read the secret purple-flea/missing"),
    ] {
        let out = wheel_task(venv, dir.path(), &[setting, "demo"]).env("PYTHONPATH", &sdk).output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{setting}: {all}");
        assert!(all.contains(expect) && all.contains("PFSYNC_API_KEY_SECRET"), "{setting}: {all}");
        assert!(!all.contains("Traceback") && !all.contains("FROM_THE_SCOPE"), "{all}");
        assert!(!dir.path().join("pfsync-demo").exists(), "{setting}: pfsync did not run");
    }
}
