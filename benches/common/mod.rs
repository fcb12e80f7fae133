//! Shared by the benches: peak memory and environment knobs.

#![allow(dead_code)]

/// Peak resident set size of this process so far, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `pfsync sandbox` in its own process on a free loopback port (so its memory is not the bench's):
/// the child, its stdout (for the stop summary) and its base URL.
pub fn spawn_sandbox(args: &[&str]) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>, url::Url) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pfsync"))
        .args(["sandbox", "--port", "0"])
        .args(args)
        .env_remove("PURPLEFLEA_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sandbox");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url").parse().expect("url");
    (child, out, url)
}

/// Append one scenario's figures as a JSON line to `$PFSYNC_BENCH_RESULTS` (set by `scripts/bench.sh`, which
/// renders `BENCHMARKS.md` from them); without it the figures are only printed.
pub fn record(bench: &str, size: u64, metrics: &[(&str, f64)]) {
    let Ok(path) = std::env::var("PFSYNC_BENCH_RESULTS") else { return };
    let metrics: serde_json::Map<String, serde_json::Value> =
        metrics.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let line = serde_json::json!({ "bench": bench, "size": size, "metrics": metrics }).to_string();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("bench results file");
    writeln!(f, "{line}").expect("write bench results");
}

/// Run `one(size)` for every size in `$PFSYNC_BENCH_SIZES` (default `defaults`: the size and a tenth
/// of it), each in a fresh child process of this bench so each peak RSS is its own.
pub fn for_each_size(defaults: &str, one: impl FnOnce(usize)) {
    if let Ok(size) = std::env::var("PFSYNC_BENCH_ONE") {
        one(size.parse().expect("PFSYNC_BENCH_ONE"));
        return;
    }
    let sizes = std::env::var("PFSYNC_BENCH_SIZES").unwrap_or_else(|_| defaults.to_string());
    for size in sizes.split(',') {
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("PFSYNC_BENCH_ONE", size.trim())
            .status()
            .expect("child");
        assert!(status.success(), "bench child for size {size} failed");
    }
}
