//! The README as a newcomer meets it: its contents list matches its sections, every link inside the
//! repository resolves (a clone has nothing beside it), and the quick start, taken from the README's own
//! text, runs through the binary from an empty folder and ends with the user's payouts paid and reconciled.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Decimal128Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::{DataType as DeltaType, DecimalType, PrimitiveType, StructField};
use serde_json::Value;

use crate::common::{output_within, pfsync, pfsync_at, text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// Lines outside fenced code blocks (a `# comment` in a shell block is not a heading).
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_contents_list_every_section_in_order_with_working_anchors() {
    let text = readme();
    let lines = prose(&text);
    let headings: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("## ")).filter(|h| *h != "Contents").collect();
    let start = lines.iter().position(|l| *l == "## Contents").expect("a Contents section");
    let entries: Vec<(&str, &str)> = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("- ["))
        .map(|l| {
            let (title, rest) = l.split_once("](#").expect("an entry is [title](#anchor)");
            (title, rest.strip_suffix(')').expect("ends with )"))
        })
        .collect();
    let titles: Vec<&str> = entries.iter().map(|e| e.0).collect();
    assert_eq!(titles, headings, "the contents list every ## heading, in order");
    let anchors: Vec<String> =
        lines.iter().filter_map(|l| l.trim_start_matches('#').strip_prefix(' ')).map(anchor).collect();
    for (title, target) in &entries {
        assert_eq!(*target, anchor(title), "{title}");
    }
    // Every in-page link anywhere in the README goes to a heading that exists.
    for link in text.split("](#").skip(1).map(|s| s.split(')').next().unwrap()) {
        assert!(anchors.iter().any(|a| a == link), "#{link} is no heading of the README");
    }
}

#[test]
fn every_link_into_the_repository_resolves_and_none_leaves_it() {
    let mut pages = vec![root().join("README.md"), root().join("jobs/README.md")];
    pages.extend(std::fs::read_dir(root().join("docs")).unwrap().map(|e| e.unwrap().path()));
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(!text.contains("../shared"), "{} points outside the repository", page.display());
        let dir = page.parent().unwrap();
        for target in text.split("](").skip(1).map(|s| s.split(')').next().unwrap()) {
            if target.starts_with('#') || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let resolved = dir.join(file).canonicalize();
            assert!(
                resolved.as_ref().is_ok_and(|p| p.starts_with(root().canonicalize().unwrap())),
                "{}: the link {target} does not resolve inside the repository",
                page.display()
            );
        }
    }
}

/// The quick start's shell block marked `<!-- quickstart: NAME -->`.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- quickstart: {name} -->\n```sh\n");
    let start = readme.find(&marker).unwrap_or_else(|| panic!("no quickstart block {name}")) + marker.len();
    let len = readme[start..].find("```\n").expect("the block ends");
    readme[start..start + len].to_string()
}

/// The sandbox a user starts in a second terminal; stopped when the test ends, pass or fail.
struct Terminal(Child);

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Delta table the quick start's user "already has", as any writer leaves it: a DECIMAL amount.
async fn bonuses(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    let url = url::Url::from_directory_path(path).unwrap();
    let decimal = DecimalType::try_new(10, 2).unwrap();
    let table = deltalake::operations::create::CreateBuilder::new()
        .with_location(url.as_str())
        .with_columns([
            StructField::new("bonus_id", DeltaType::STRING, false),
            StructField::new("agent", DeltaType::STRING, false),
            StructField::new("usd", DeltaType::Primitive(PrimitiveType::Decimal(decimal)), false),
            StructField::new("note", DeltaType::STRING, true),
        ])
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("bonus_id", DataType::Utf8, false),
        Field::new("agent", DataType::Utf8, false),
        Field::new("usd", DataType::Decimal128(10, 2), false),
        Field::new("note", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["july-7"])),
        Arc::new(StringArray::from(vec!["agent-000003"])),
        Arc::new(Decimal128Array::from(vec![3000]).with_precision_and_scale(10, 2).unwrap()),
        Arc::new(StringArray::from(vec!["July bonus"])),
    ];
    table.write(vec![RecordBatch::try_new(schema, columns).unwrap()]).await.unwrap();
}

/// The quick start as a user types it: `pfsync` on the PATH, an empty folder, the README's blocks in order
/// in one shell (the exports of one block hold for the next), the sandbox in a second "terminal". The one
/// change: the sandbox listens on a free port instead of 8787, and the blocks use the address it printed.
#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_runs_as_printed_and_pays_and_reconciles_the_users_own_payouts() {
    let readme = readme();
    let dir = tempfile::tempdir().unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pfsync"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let shell = || {
        let mut c = pfsync_at("bash");
        c.current_dir(dir.path()).env("PATH", &path);
        c
    };

    let sandbox = block(&readme, "sandbox");
    assert_eq!(sandbox.trim(), "pfsync sandbox --port 8787");
    let mut child = shell()
        .args(["-c", &format!("exec {}", sandbox.trim().replace("--port 8787", "--port 0"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    let _terminal = Terminal(child);
    let address = ready.split("http://").nth(1).and_then(|s| s.split('/').next()).expect(&ready).to_string();

    bonuses(&dir.path().join("lake/bonuses")).await;

    let quick_start = ["demo", "csv", "delta"].map(|name| block(&readme, name)).join("\n");
    assert!(quick_start.contains("127.0.0.1:8787"), "the blocks use the sandbox's address");
    let script = format!("set -euo pipefail\nset -x\n{}", quick_start.replace("127.0.0.1:8787", &address));
    let o = tokio::task::block_in_place(|| output_within(shell().args(["-c", &script]), Duration::from_secs(300)))
        .unwrap_or_else(|o| panic!("the quick start hangs: {}", text(&o)));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "every command of the quick start succeeds:\n{out}");
    assert!(out.contains("completed 2 "), "the CSV's two payouts are paid:\n{out}");
    assert!(out.contains("matched 2 (19.75 USD); open findings 0"), "and reconciled:\n{out}");
    assert!(out.contains("completed 1 "), "the Delta table's payout is paid:\n{out}");
    assert!(out.contains("matched 3 (49.75 USD); open findings 0"), "all three reconciled:\n{out}");
    assert!(dir.path().join("report.html").is_file());

    // What the warehouse says afterwards, asked as a program would.
    let o = pfsync()
        .current_dir(dir.path())
        .args(["--warehouse", "my-warehouse", "sql", "--output", "json"])
        .arg("SELECT operation_id, status, CAST(amount_usd AS STRING) AS usd FROM purpleflea.payouts.status ORDER BY operation_id")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<(String, String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation_id"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
                r["usd"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [("july-7", "30.00"), ("june-bonus-1", "12.50"), ("june-bonus-2", "7.25")]
        .map(|(id, usd)| (id.to_string(), "completed".to_string(), usd.to_string()));
    assert_eq!(rows, expected);
}

#[test]
fn every_shell_block_of_the_quick_start_is_run_by_the_test() {
    let text = readme();
    let start = text.find("## Quick start").unwrap();
    let end = start + text[start..].find("\n## Commands").unwrap();
    let section = &text[start..end];
    let blocks = section.matches("```sh\n").count();
    let marked = section.matches("-->\n```sh\n").count();
    assert_eq!((blocks, marked), (4, 4), "a block without a quickstart marker is not run by a test");
}
