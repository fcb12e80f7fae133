//! The Databricks bundle in `jobs/`: it parses, keeps every key out of the YAML, passes only flags pfsync
//! has, and keeps the production rules (README, "Running on Databricks").

use serde_yaml::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn help(args: &[&str]) -> String {
    let out = crate::common::pfsync().args(args).arg("--help").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bundle root file and every resource file, with their text.
fn bundle() -> (Value, Vec<(PathBuf, String, Value)>) {
    let jobs = root().join("jobs");
    let main = yaml(&jobs.join("databricks.yml"));
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(jobs.join("resources")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_yaml::from_str(&text).unwrap();
            resources.push((path, text, value));
        }
    }
    assert!(!resources.is_empty());
    (main, resources)
}

/// Every job by its resource key.
fn jobs() -> Vec<(String, Value)> {
    let (_, resources) = bundle();
    let mut jobs = Vec::new();
    for (_, _, value) in resources {
        for (key, job) in value["resources"]["jobs"].as_mapping().unwrap() {
            jobs.push((key.as_str().unwrap().to_string(), job.clone()));
        }
    }
    jobs
}

fn job(name: &str) -> Value {
    jobs().into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no job {name}")).1
}

fn tasks(job: &Value) -> Vec<Value> {
    job["tasks"].as_sequence().unwrap().clone()
}

fn task(job: &Value, key: &str) -> Value {
    tasks(job).into_iter().find(|t| t["task_key"] == key).unwrap_or_else(|| panic!("no task {key}"))
}

fn params(task: &Value) -> Vec<String> {
    task["python_wheel_task"]["parameters"]
        .as_sequence()
        .unwrap_or_else(|| panic!("not a python_wheel_task: {task:?}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// The leading `PFSYNC_..._SECRET=scope/key` (and `PFSYNC_AGENT_KEY_SECRETS=...`) settings the wheel's entry
/// point takes, and pfsync's own args.
fn split(params: &[String]) -> (Vec<String>, Vec<String>) {
    let n = params
        .iter()
        .take_while(|p| p.starts_with("PFSYNC_") && (p.contains("_SECRET=") || p.contains("_SECRETS=")))
        .count();
    (params[..n].to_vec(), params[n..].to_vec())
}

#[test]
fn the_bundle_parses_and_uses_only_existing_flags() {
    let (main, resources) = bundle();
    assert_eq!(main["bundle"]["name"], "pfsync");
    let shim = std::fs::read_to_string(root().join("python/pfsync/__init__.py")).unwrap();
    let pyproject = std::fs::read_to_string(root().join("pyproject.toml")).unwrap();
    assert!(shim.contains("\ndef main(") && pyproject.contains("main = \"pfsync:main\""), "the entry point exists");
    for (path, text, _) in &resources {
        for key in ["pf_live_", "pf_test_", "sk_live_", "dapi"] {
            assert!(!text.contains(key), "{}: no key in the YAML", path.display());
        }
        assert!(!text.contains("PURPLEFLEA_API_KEY"), "{}: the key comes from the secret scope", path.display());
    }
    let global = help(&[]);
    let mut seen = 0;
    for (name, job) in jobs() {
        for task in tasks(&job) {
            let wheel = &task["python_wheel_task"];
            assert_eq!(wheel["package_name"], "pfsync", "{name}: {task:?}");
            assert_eq!(wheel["entry_point"], "main", "{name}: {task:?}");
            let (settings, args) = split(&params(&task));
            for s in &settings {
                let setting = s.split('=').next().unwrap();
                if setting == "PFSYNC_AGENT_KEY_SECRETS" {
                    // NAME=scope/key pairs, the whole value one variable (see agent_keys_... below).
                    assert!(shim.contains("\"PFSYNC_AGENT_KEY_SECRETS\""), "the entry point takes {setting}");
                    assert_eq!(s, "PFSYNC_AGENT_KEY_SECRETS=${var.agent_key_secrets}");
                    continue;
                }
                assert!(shim.contains(&format!("\"{setting}\":")), "{setting} is not a setting the entry point takes");
                assert!(s.contains("=${var.secret_scope}/${var."), "{s}: a scope and key from variables");
            }
            let command = args.iter().find(|a| !a.starts_with("--")).expect("a pfsync command");
            let sub = help(&[command.as_str()]);
            assert!(!sub.is_empty(), "{command} is not a pfsync command");
            for p in args.iter().filter(|p| p.starts_with("--")) {
                let flag = p.split('=').next().unwrap();
                assert!(global.contains(flag) || sub.contains(flag), "{name}: {flag} is not a pfsync flag");
            }
            if command == "run" {
                assert!(
                    settings.iter().any(|s| s.starts_with("PFSYNC_API_KEY_SECRET=")),
                    "{name}/{:?}: the key from the secret scope",
                    task["task_key"]
                );
            }
            assert!(task["max_retries"].as_i64().unwrap() >= 1, "retries are safe and wanted");
            seen += 1;
        }
    }
    assert!(seen >= 7, "{seen} tasks");
    // pfsync-<provider>.toml, which every task passes as --config, is one pfsync accepts (all of it with the
    // wheel's `unity` feature; without it, pfsync refuses a [unity] section, so only the file's shape is
    // checked).
    for provider in ["live", "seed"] {
        let toml = root().join(format!("jobs/pfsync-{provider}.toml"));
        let file = pfsync::config::FileConfig::load(&toml).unwrap_or_else(|e| panic!("{}: {e}", toml.display()));
        assert!(file.unity.is_some_and(|u| u.vend_credentials));
        #[cfg(feature = "unity")]
        pfsync::config::Settings::resolve(&pfsync::config::Overrides { config: Some(toml), ..Default::default() })
            .expect("a valid config");
    }
}

#[test]
fn the_wheel_is_built_by_the_bundle_and_installed_by_every_task() {
    let (main, _) = bundle();
    let artifacts = main["artifacts"].as_mapping().unwrap();
    assert_eq!(artifacts.len(), 1);
    let (_, wheel) = artifacts.iter().next().unwrap();
    assert_eq!(wheel["type"], "whl");
    let build = wheel["build"].as_str().unwrap();
    assert!(build.contains("scripts/build-wheel.sh --out jobs/dist"), "{build}");
    assert!(root().join("jobs").join(wheel["path"].as_str().unwrap()).join("scripts/build-wheel.sh").exists());
    assert_eq!(wheel["files"][0]["source"], "dist/pfsync-*.whl");
    for (name, job) in jobs() {
        let serverless = job.get("environments").is_some();
        for task in tasks(&job) {
            if serverless {
                assert_eq!(task["environment_key"], job["environments"][0]["environment_key"], "{name}");
            } else {
                assert_eq!(task["libraries"][0]["whl"], "../dist/pfsync-*.whl", "{name}: {task:?}");
            }
        }
    }
}

#[test]
fn the_copy_from_volume_wrapper_is_gone() {
    assert!(!root().join("jobs/src/run_pfsync.py").exists());
    for (path, text, _) in bundle().1 {
        assert!(!text.contains("spark_python_task") && !text.contains("run_pfsync"), "{}", path.display());
    }
}

#[test]
fn the_prod_target_has_a_root_path_a_run_as_identity_and_permissions() {
    let (main, _) = bundle();
    let prod = &main["targets"]["prod"];
    assert_eq!(prod["mode"], "production");
    assert!(prod["workspace"]["root_path"].as_str().is_some_and(|p| p.starts_with("/Workspace/")), "{prod:?}");
    let run_as = &prod["run_as"];
    assert!(run_as.get("service_principal_name").or(run_as.get("user_name")).is_some(), "{run_as:?}");
    let permissions = prod["permissions"].as_sequence().unwrap();
    assert!(permissions.iter().any(|p| p["level"] == "CAN_MANAGE"));
    assert!(permissions.iter().all(|p| p["level"].as_str().is_some()));
}

#[test]
fn every_job_cluster_is_single_user_and_the_secrets_never_ride_in_spark_env_vars() {
    let mut clusters = 0;
    for (name, job) in jobs() {
        for c in job["job_clusters"].as_sequence().into_iter().flatten() {
            assert_eq!(c["new_cluster"]["data_security_mode"], "SINGLE_USER", "{name}");
            assert!(c["new_cluster"].get("spark_env_vars").is_none(), "{name}");
            clusters += 1;
        }
    }
    assert!(clusters >= 2);
}

/// A retry right after a crash would find the crashed run's intents still within `--in-flight-timeout` and
/// leave them alone (exit 6 again): the payouts task waits at least that long between attempts.
#[test]
fn payouts_retry_no_sooner_than_the_in_flight_timeout() {
    let timeout_ms = pfsync::payouts::PayoutOptions::default().in_flight_timeout.as_millis() as u64;
    for name in ["pfsync", "pfsync_serverless"] {
        let payouts = task(&job(name), "payouts");
        let custom = params(&payouts).iter().any(|p| p.starts_with("--in-flight-timeout"));
        assert!(!custom, "{name}: the check below assumes the default --in-flight-timeout");
        let interval = payouts["min_retry_interval_millis"].as_u64().unwrap_or(0);
        assert!(interval >= timeout_ms, "{name}: payouts retry after {interval} ms, before {timeout_ms} ms");
    }
}

#[test]
fn reconcile_runs_after_payouts_whatever_happened_to_them() {
    for name in ["pfsync", "pfsync_serverless"] {
        let reconcile = task(&job(name), "reconcile");
        assert_eq!(reconcile["run_if"], "ALL_DONE", "{name}");
        assert_eq!(reconcile["depends_on"][0]["task_key"], "payouts", "{name}");
        assert!(params(&reconcile).iter().any(|p| p.starts_with("--steps=") && p.contains("reconcile")));
    }
}

#[test]
fn the_brake_limits_are_job_parameters_not_literals() {
    for name in ["pfsync", "pfsync_serverless"] {
        let job = job(name);
        let declared: Vec<&str> =
            job["parameters"].as_sequence().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        let payouts = params(&task(&job, "payouts"));
        for flag in ["--max-total-usd=", "--max-count="] {
            let value = payouts.iter().find_map(|p| p.strip_prefix(flag)).unwrap_or_else(|| panic!("{name}: {flag}"));
            let parameter = value
                .strip_prefix("{{job.parameters.")
                .and_then(|v| v.strip_suffix("}}"))
                .unwrap_or_else(|| panic!("{name}: {flag}{value} is a literal"));
            assert!(declared.contains(&parameter), "{name}: {parameter} is not a job parameter");
        }
    }
}

/// Production failures page the on-call; the prod target adds the notifications to every job, so a
/// development copy needs no alert variables.
#[test]
fn failures_notify_by_email_and_webhook_from_variables() {
    let (main, _) = bundle();
    let prod = &main["targets"]["prod"]["resources"]["jobs"];
    for (name, job) in jobs() {
        assert!(job.get("email_notifications").is_none() && job.get("webhook_notifications").is_none(), "{name}");
        let job = &prod[name.as_str()];
        let email = job["email_notifications"]["on_failure"][0].as_str().unwrap_or_else(|| panic!("{name}"));
        let hook = job["webhook_notifications"]["on_failure"][0]["id"].as_str().unwrap_or_else(|| panic!("{name}"));
        for v in [email, hook] {
            let var =
                v.strip_prefix("${var.").and_then(|v| v.strip_suffix('}')).unwrap_or_else(|| panic!("{name}: {v}"));
            assert!(main["variables"].get(var).is_some(), "{name}: no variable {var}");
        }
    }
}

#[test]
fn maintain_runs_weekly() {
    let job = job("pfsync_maintain");
    let cron = job["schedule"]["quartz_cron_expression"].as_str().unwrap();
    let fields: Vec<&str> = cron.split_whitespace().collect();
    // seconds minutes hours day-of-month month day-of-week: one day of the week, every week.
    assert_eq!(fields.len(), 6, "{cron}");
    assert_eq!((fields[3], fields[4]), ("?", "*"), "{cron}");
    assert!(fields[5].chars().all(|c| c.is_ascii_alphanumeric()), "one day of the week: {cron}");
    let tasks = tasks(&job);
    assert_eq!(tasks.len(), 1);
    let (_, args) = split(&params(&tasks[0]));
    assert_eq!(args.iter().find(|a| !a.starts_with("--")).unwrap(), "maintain");
}

#[test]
fn the_serverless_variant_installs_the_wheel_through_an_environment() {
    let job = job("pfsync_serverless");
    assert!(job.get("job_clusters").is_none());
    let env = &job["environments"][0];
    let deps: Vec<&str> =
        env["spec"]["dependencies"].as_sequence().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(deps.contains(&"../dist/pfsync-*.whl"), "{deps:?}");
    let cluster = job_tasks_by_key("pfsync");
    for t in tasks(&job) {
        assert_eq!(t["environment_key"], env["environment_key"]);
        assert!(t.get("job_cluster_key").is_none());
        // The same arguments as the job-cluster variant.
        assert_eq!(params(&t), params(&cluster[t["task_key"].as_str().unwrap()]));
    }
}

fn job_tasks_by_key(name: &str) -> std::collections::HashMap<String, Value> {
    tasks(&job(name)).into_iter().map(|t| (t["task_key"].as_str().unwrap().to_string(), t)).collect()
}

#[test]
fn the_warehouse_is_a_cloud_uri_never_a_volume() {
    let (main, _) = bundle();
    let mut values = vec![main["variables"]["warehouse"].get("default").cloned()];
    for (_, target) in main["targets"].as_mapping().unwrap() {
        values.push(target["variables"].get("warehouse").cloned());
    }
    for v in values.into_iter().flatten() {
        let v = v.as_str().unwrap();
        assert!(["abfss://", "s3://", "gs://"].iter().any(|s| v.starts_with(s)), "warehouse {v}");
    }
    let description = main["variables"]["warehouse"]["description"].as_str().unwrap();
    assert!(description.contains("abfss://"), "{description}");
    for (name, job) in jobs() {
        for t in tasks(&job) {
            let p = params(&t);
            assert!(p.contains(&"--warehouse=${var.warehouse}".to_string()), "{name}: {p:?}");
        }
    }
}

/// Every `${var.NAME}` anywhere in the bundle, by name.
fn variables_used(text: &str) -> Vec<String> {
    text.split("${var.").skip(1).map(|s| s.split('}').next().unwrap().to_string()).collect()
}

/// `databricks bundle deploy -t dev` asks for every variable without a default: only the two that differ
/// per workspace and cloud. The alert and run-as variables are the prod target's alone.
#[test]
fn the_dev_target_needs_only_the_warehouse_and_a_node_type() {
    let (main, resources) = bundle();
    let variables = main["variables"].as_mapping().unwrap();
    let required: Vec<&str> =
        variables.iter().filter(|(_, v)| v.get("default").is_none()).map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(required, ["warehouse", "node_type_id"]);
    assert_eq!(main["targets"]["dev"]["mode"], "development");
    assert!(main["targets"]["dev"].get("resources").is_none(), "dev adds no notifications");
    let root_text = std::fs::read_to_string(root().join("jobs/databricks.yml")).unwrap();
    let mut used: Vec<String> = resources.iter().flat_map(|(_, text, _)| variables_used(text)).collect();
    used.extend(variables_used(&root_text));
    for v in &used {
        assert!(variables.contains_key(v.as_str()), "${{var.{v}}} is not declared");
    }
    for (_, text, _) in &resources {
        for prod_only in ["alert_email", "alert_webhook_id", "service_principal"] {
            assert!(!variables_used(text).iter().any(|v| v == prod_only), "{prod_only} only in the prod target");
        }
    }
}

/// A node type exists on one cloud only: no default, and the bundle and the README name one per cloud
/// (x86_64: the wheel's binary).
#[test]
fn the_node_type_is_chosen_per_cloud() {
    let (main, _) = bundle();
    let node = &main["variables"]["node_type_id"];
    assert!(node.get("default").is_none());
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for (cloud, node_type) in [("AWS", "m5d.xlarge"), ("Azure", "Standard_D4ds_v5"), ("GCP", "n2-standard-4")] {
        let description = node["description"].as_str().unwrap();
        assert!(description.contains(cloud) && description.contains(node_type), "{description}");
        assert!(readme.contains(&format!("`{node_type}`")), "the walkthrough names {node_type} for {cloud}");
    }
}

#[test]
fn the_bundle_names_the_oldest_databricks_cli_it_works_with() {
    let (main, _) = bundle();
    let version = main["bundle"]["databricks_cli_version"].as_str().unwrap();
    let minimum = version.strip_prefix(">= ").expect("a lower bound");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains(&format!("Databricks CLI {minimum} or later")), "the walkthrough says {minimum}");
}

/// Purple Flea's services as they run are what the jobs pay through unless `--var provider=seed`.
#[test]
fn the_live_provider_is_deployed_by_default_and_the_seed_is_a_variable_away() {
    let (main, _) = bundle();
    assert_eq!(main["variables"]["provider"]["default"], "live");
    let kind = |provider: &str| {
        let text = std::fs::read_to_string(root().join(format!("jobs/pfsync-{provider}.toml"))).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        table["provider"]["kind"].as_str().unwrap().to_string()
    };
    assert_eq!((kind("live"), kind("seed")), ("live".to_string(), "seed".to_string()));
    for (name, job) in jobs() {
        for t in tasks(&job) {
            let p = params(&t);
            assert!(
                p.contains(&"--config=${workspace.file_path}/pfsync-${var.provider}.toml".to_string()),
                "{name}: {p:?}"
            );
        }
    }
}

/// A dry run is one job parameter away (Run now with different parameters), never an edit of a task.
#[test]
fn a_dry_run_is_a_job_parameter() {
    for name in ["pfsync", "pfsync_serverless"] {
        let job = job(name);
        let dry = job["parameters"].as_sequence().unwrap().iter().find(|p| p["name"] == "dry_run").cloned();
        assert_eq!(dry.unwrap()["default"], "false", "{name}: sends by default");
        let payouts = params(&task(&job, "payouts"));
        assert!(payouts.contains(&"--dry-run={{job.parameters.dry_run}}".to_string()), "{name}: {payouts:?}");
    }
    // The binary takes the flag with the parameter's two values.
    let dir = tempfile::tempdir().unwrap();
    for value in ["true", "false"] {
        let o = crate::common::pfsync()
            .args(["--warehouse", dir.path().join("w").to_str().unwrap(), "payouts", "--max-count=0"])
            .arg(format!("--dry-run={value}"))
            .env("PURPLEFLEA_API_KEY", "pf_test_sandbox")
            .args(["--api-url", "http://127.0.0.1:9/api", "--max-attempts=1", "--max-elapsed-secs=1"])
            .output()
            .unwrap();
        let text = crate::common::text(&o);
        assert!(!text.contains("unexpected value") && !text.contains("invalid value"), "--dry-run={value}: {text}");
    }
}

/// Agent keys ride in one bundle variable (`NAME=scope/key,...`) that the wheel's entry point reads from the
/// secret scope into `PFSYNC_AGENT_KEY_<NAME>`, the variables `[[provider.agent_keys]]` names.
#[test]
fn agent_keys_come_from_the_secret_scope_through_one_bundle_variable() {
    for name in ["pfsync", "pfsync_serverless"] {
        for t in tasks(&job(name)) {
            let (settings, _) = split(&params(&t));
            assert!(settings.contains(&"PFSYNC_AGENT_KEY_SECRETS=${var.agent_key_secrets}".to_string()), "{name}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sdk = dir.path().join("databricks/sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    std::fs::write(dir.path().join("databricks/__init__.py"), "").unwrap();
    std::fs::write(
        sdk.join("__init__.py"),
        "class _S:\n    def get(self, scope, key):\n        return {'pf/w1': 'sk_live_one', 'pf/w2': 'sk_live_two'}[scope + '/' + key]\n\
         class _D:\n    secrets = _S()\nclass WorkspaceClient:\n    dbutils = _D()\n",
    )
    .unwrap();
    let program = "import json, sys, pfsync\n\
        settings, rest = pfsync.split_settings(sys.argv[1:])\n\
        try:\n    env, notes = pfsync.child_environment({}, settings)\n    print(json.dumps([rest, env, notes]))\n\
        except pfsync.SecretError as e:\n    print(json.dumps(['error', str(e)]))\n";
    let run = |value: &str| -> serde_json::Value {
        let o = std::process::Command::new("python3")
            .env("PYTHONPATH", format!("{}:{}", root().join("python").display(), dir.path().display()))
            .args(["-c", program, &format!("PFSYNC_AGENT_KEY_SECRETS={value}"), "run"])
            .output()
            .expect("python3 (the wheel's entry point is Python)");
        assert!(o.status.success(), "{}", crate::common::text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let out = run("WORKER1=pf/w1, WORKER2=pf/w2");
    assert_eq!(out[0], serde_json::json!(["run"]), "the setting is the entry point's, not pfsync's");
    assert_eq!(
        out[1],
        serde_json::json!({"PFSYNC_AGENT_KEY_WORKER1": "sk_live_one", "PFSYNC_AGENT_KEY_WORKER2": "sk_live_two"})
    );
    let notes = out[2].to_string();
    assert!(notes.contains("PFSYNC_AGENT_KEY_WORKER1 from the Databricks secret pf/w1") && !notes.contains("sk_live"));
    assert_eq!(run("")[1], serde_json::json!({}), "empty: the payer's key only");
    for bad in ["worker1=pf/w1", "WORKER1", "WORKER1=pf/w1,WORKER1=pf/w2"] {
        assert_eq!(run(bad)[0], "error", "{bad}");
    }
}
