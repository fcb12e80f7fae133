//! `pfsync doctor`'s verdicts: each check's outcome, how far a clock may be off, what the whole exits with,
//! and how it reads. Pure; the checks themselves (settings, keys, requests, tables) run in `app/doctor.rs`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::exit::Exit;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; nothing stops a run.
    Warn,
    /// A run would fail, with this exit code.
    Fail(Exit),
    /// Not run: a check before it failed.
    Skipped,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail(_) => "fail",
            Level::Skipped => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked: config, key, provider, clock, tables.
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, level: Level::Ok, detail: detail.into() }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, level: Level::Warn, detail: detail.into() }
    }

    pub fn fail(name: &'static str, exit: Exit, detail: impl Into<String>) -> Check {
        Check { name, level: Level::Fail(exit), detail: detail.into() }
    }

    pub fn skipped(name: &'static str, because: &str) -> Check {
        Check { name, level: Level::Skipped, detail: format!("not checked: {because}") }
    }
}

/// The clock check: `skew_secs` is the provider's `Date` minus this machine's time (the `Date` header has
/// whole seconds, so up to a second either way is no skew). Over `max_secs` fails: intents age by this
/// machine's clock, so an in-flight timeout would expire early (a clock ahead) or late (behind), against
/// other runs' intents and the provider's own times. Over a fifth of it warns.
pub fn clock(skew_secs: i64, max_secs: u64, source: &str) -> Check {
    let off = skew_secs.unsigned_abs();
    let direction = if skew_secs > 0 { "behind" } else { "ahead of" };
    let said = format!("this machine's clock is {off} s {direction} the provider's (the Date header of {source})");
    if off <= 1 {
        Check::ok("clock", format!("this machine's clock agrees with the provider's to the second ({source})"))
    } else if off > max_secs {
        Check::fail(
            "clock",
            Exit::Usage,
            format!(
                "{said}, more than --max-clock-skew-secs {max_secs}: in-flight timeouts would be judged wrong; sync \
                 this machine's clock (NTP)"
            ),
        )
    } else if off * 5 > max_secs {
        Check::warn("clock", said)
    } else {
        Check::ok("clock", said)
    }
}

/// The exit of the whole: the first failed check's (the checks run in the order a run depends on them, so
/// the first failure is the one to fix first), or success when nothing failed.
pub fn exit(checks: &[Check]) -> Exit {
    checks
        .iter()
        .find_map(|c| match c.level {
            Level::Fail(e) => Some(e),
            _ => None,
        })
        .unwrap_or(Exit::Ok)
}

/// One line per check, then the verdict.
pub fn text(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let _ = writeln!(s, "{:<5} {:<9} {}", c.level.as_str(), c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| matches!(c.level, Level::Fail(_))).count();
    let warned = checks.iter().filter(|c| c.level == Level::Warn).count();
    let _ = match exit(checks) {
        Exit::Ok if warned > 0 => writeln!(s, "doctor: no check failed, {warned} warning(s)"),
        Exit::Ok => writeln!(s, "doctor: every check passed"),
        e => writeln!(s, "doctor: {failed} check(s) failed; exit {} ({})", e.code(), e.meaning()),
    };
    s
}

/// The checks as one JSON object: `{"ok": bool, "exit_code": n, "checks": [{name, status, detail}]}`.
pub fn json(checks: &[Check]) -> serde_json::Value {
    #[derive(Serialize)]
    struct Line<'a> {
        name: &'a str,
        status: &'a str,
        detail: &'a str,
    }
    #[derive(Serialize)]
    struct Verdict<'a> {
        ok: bool,
        exit_code: u8,
        checks: Vec<Line<'a>>,
    }
    let exit = exit(checks);
    let checks = checks.iter().map(|c| Line { name: c.name, status: c.level.as_str(), detail: &c.detail }).collect();
    serde_json::to_value(Verdict { ok: exit == Exit::Ok, exit_code: exit.code(), checks }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_within_a_second_is_right_a_fifth_of_the_limit_warns_past_it_fails() {
        assert_eq!(clock(0, 60, "u").level, Level::Ok);
        assert_eq!(clock(-1, 60, "u").level, Level::Ok);
        assert_eq!(clock(12, 60, "u").level, Level::Ok);
        assert_eq!(clock(-13, 60, "u").level, Level::Warn);
        assert_eq!(clock(61, 60, "u").level, Level::Fail(Exit::Usage));
        let ahead = clock(-3600, 60, "http://h/api");
        assert!(ahead.detail.contains("3600 s ahead of the provider's"), "{}", ahead.detail);
        assert!(clock(90, 60, "u").detail.contains("90 s behind"));
    }

    #[test]
    fn the_first_failure_decides_the_exit_and_warnings_alone_pass() {
        let warn = [Check::ok("config", "x"), Check::warn("clock", "y")];
        assert_eq!(exit(&warn), Exit::Ok);
        assert!(text(&warn).ends_with("doctor: no check failed, 1 warning(s)\n"));
        let failed = [
            Check::ok("config", "x"),
            Check::fail("provider", Exit::Api, "refused"),
            Check::fail("tables", Exit::Usage, "none"),
            Check::skipped("clock", "the provider did not answer"),
        ];
        assert_eq!(exit(&failed), Exit::Api);
        let t = text(&failed);
        assert!(t.contains("fail  provider  refused\n") && t.contains("skip  clock"), "{t}");
        assert!(t.ends_with("doctor: 2 check(s) failed; exit 3 (the Purple Flea API failed after retries or refused the key (retry is safe))\n"), "{t}");
        assert_eq!(json(&failed)["exit_code"], 3);
        assert_eq!(json(&failed)["checks"][1]["status"], "fail");
    }
}
