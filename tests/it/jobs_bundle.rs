//! The Databricks bundle in `jobs/` parses, keeps the key out of the YAML, and passes only flags pfsync has.

use std::path::Path;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pfsync")).args(args).arg("--help").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_bundle_parses_and_uses_only_existing_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let bundle: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("databricks.yml")).unwrap()).unwrap();
    assert_eq!(bundle["bundle"]["name"], "pfsync");
    let text = std::fs::read_to_string(root.join("resources/pfsync_job.yml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert!(!text.contains("pf_live_") && !text.contains("pf_test_"), "no key in the YAML");
    assert!(text.contains("{{secrets/purple-flea/api_key}}"));
    let tasks = job["resources"]["jobs"]["pfsync"]["tasks"].as_sequence().unwrap();
    assert_eq!(tasks.len(), 3);
    let global = help(&[]);
    let run = help(&["run"]);
    for task in tasks {
        let params: Vec<&str> = task["spark_python_task"]["parameters"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(params.contains(&"run"), "{params:?}");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("jobs/resources")
                .join(task["spark_python_task"]["python_file"].as_str().unwrap())
                .exists()
        );
        for p in params.iter().filter(|p| p.starts_with("--")) {
            let flag = p.split('=').next().unwrap();
            assert!(global.contains(flag) || run.contains(flag), "{flag} is not a pfsync flag");
        }
        assert!(task["max_retries"].as_i64().unwrap() >= 1, "retries are safe and wanted");
    }
}
