//! The reconciliation report as an auditor opens it: written by `pfsync reconcile --report` after real runs of
//! the binary, rendered by headless Chromium, and checked twice: the figures in the DOM Chromium built
//! (`--dump-dom`), and the chart's bars in the screenshot's pixels, to scale against the axis.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Missing, PfsyncCommand, output_in_place, pfsync, sandbox, text, warehouse};
use crate::payouts::write_pending;

/// Debian's chromium (or `PFSYNC_CHROMIUM`), or what is missing.
fn chromium() -> Result<PathBuf, Missing> {
    if let Some(p) = std::env::var_os("PFSYNC_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Missing {
        what: "no chromium on PATH".into(),
        fix: "apt-get install -y chromium (Debian's), or set PFSYNC_CHROMIUM".into(),
        require: "PFSYNC_REQUIRE_CHROMIUM",
    })
}

/// Headless Chromium as root on a machine with no network: no sandbox, no GPU, nothing that phones home, a
/// profile of its own, one CSS pixel per screen pixel.
fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// A PNG's pixels as RGB, for the 8-bit RGB and RGBA non-interlaced images Chromium writes.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (mut pos, mut idat, mut header) = (8, Vec::new(), None);
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => header = Some(data.to_vec()),
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let h = header.expect("IHDR");
    let width = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
    let (depth, color, interlace) = (h[8], h[9], h[12]);
    assert_eq!((depth, interlace), (8, 0), "8-bit, not interlaced");
    let bpp = match color {
        2 => 3,
        6 => 4,
        other => panic!("PNG color type {other}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
    let stride = width * bpp;
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let mut cur = line[1..].to_vec();
        for i in 0..stride {
            let a = if i >= bpp { cur[i - bpp] as i16 } else { 0 };
            let b = prev[i] as i16;
            let c = if i >= bpp { prev[i - bpp] as i16 } else { 0 };
            let add = match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[i] = cur[i].wrapping_add(add as u8);
        }
        rgb.extend(cur.chunks(bpp).map(|p| [p[0], p[1], p[2]]));
        prev = cur;
    }
    Image { width, height, rgb }
}

impl Image {
    /// The tallest vertical run of pixels of `color` in any column: a bar's height.
    fn tallest_run(&self, color: [u8; 3]) -> usize {
        let mut best = 0;
        for x in 0..self.width {
            let mut run = 0;
            for y in 0..self.height {
                if self.rgb[y * self.width + x] == color {
                    run += 1;
                    best = best.max(run);
                } else {
                    run = 0;
                }
            }
        }
        best
    }
}

/// The text of the element with `id` in a serialized DOM, tags removed.
fn element_text(dom: &str, id: &str) -> String {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag: String = dom[start + 1..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    let end = dom[at..].find(&format!("</{tag}>")).map(|e| at + e).unwrap();
    let mut out = String::new();
    let mut in_tag = false;
    for ch in dom[start..end].chars() {
        match ch {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The y-axis labels of the chart, in order.
fn ticks(dom: &str) -> Vec<String> {
    dom.split("class=\"tick\"").skip(1).map(|s| s[s.find('>').unwrap() + 1..s.find('<').unwrap()].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_shows_pfsyncs_own_payouts_to_scale_the_money_at_risk_and_the_refused_rows_in_chromium() {
    let Some(chromium) = chromium().or_else(|m| m.skip_or_fail().ok_or(())).ok() else { return };
    let sb = sandbox(10).await;
    let dir = tempfile::tempdir().unwrap();
    let wh = warehouse(&dir);
    let run = |args: &[&str]| {
        let mut c = pfsync();
        c.warehouse(dir.path()).sandbox(&sb).arg("-q").args(args);
        output_in_place(&mut c)
    };
    let o = run(&["init"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Three payouts paid, one refused (a negative amount), then two whose run dies after logging its intents.
    write_pending(
        &wh,
        &[
            ("p-1", "agent-000001", "1.25", "bonus"),
            ("p-2", "agent-000002", "2.50", "bonus"),
            ("p-3", "agent-000003", "10.00", "bonus"),
            ("p-bad", "agent-000004", "-5.00", "bonus"),
        ],
    )
    .await;
    let o = run(&["payouts"]);
    assert_eq!(o.status.code(), Some(5), "one row refused: {}", text(&o));
    write_pending(&wh, &[("p-4", "agent-000004", "4.00", "bonus"), ("p-5", "agent-000005", "6.00", "bonus")]).await;
    let mut c = pfsync();
    c.warehouse(dir.path()).sandbox(&sb).arg("-q").arg("payouts").env("PFSYNC_CRASH_AT", "after_intents");
    let o = output_in_place(&mut c);
    assert_eq!(o.status.code(), None, "killed after its intents: {}", text(&o));

    let report = dir.path().join("report.html");
    let report_arg = report.to_str().unwrap();
    let o = run(&["--run-id", "audit-run-7", "reconcile", "--stale-after-secs", "0", "--report", report_arg]);
    assert_eq!(o.status.code(), Some(8), "the two unknown payouts are stale findings: {}", text(&o));

    let profile = tempfile::tempdir().unwrap();
    let url = url::Url::from_file_path(&report).unwrap().to_string();
    let dom = headless(&chromium, profile.path()).arg("--dump-dom").arg(&url).output().expect("chromium runs");
    assert!(dom.status.success(), "{}", text(&dom));
    let dom = String::from_utf8(dom.stdout).unwrap();

    // What the report was made of.
    assert_eq!(element_text(&dom, "meta-run"), "audit-run-7");
    assert_eq!(element_text(&dom, "meta-namespace"), "default");
    assert_eq!(element_text(&dom, "meta-version"), env!("CARGO_PKG_VERSION"));
    assert!(element_text(&dom, "meta-warehouse").contains(dir.path().file_name().unwrap().to_str().unwrap()));
    // pfsync's own payouts against what matched them: 13.75 USD, on an axis that ends at $15, not at the
    // sandbox's million of opening balances (which the provider's daily totals still show).
    assert_eq!(ticks(&dom), ["$0", "$5", "$10", "$15"], "the y axis");
    let days = element_text(&dom, "own-days");
    assert!(days.contains("payout 3 13.75 3 13.75 0.00"), "{days}");
    let provider = element_text(&dom, "daily-totals");
    assert!(provider.contains("payout") && provider.contains(",0"), "opening balances are there: {provider}");
    // Money at risk: the two payouts whose run died, 10.00 USD, past the stale threshold.
    assert_eq!(
        element_text(&dom, "risk-unknown"),
        "10.00 USD 2 operation(s) with no known outcome (the next pfsync payouts looks them up)"
    );
    assert!(element_text(&dom, "risk-person").starts_with("10.00 USD 2 operation(s)"));
    assert!(element_text(&dom, "risk-unmatched").starts_with("0.00 USD 0 operation(s)"));
    assert!(element_text(&dom, "risk-findings").contains("stale_unknown 2 10.00 0.00"), "{dom}");
    // Refused rows.
    let refused = element_text(&dom, "refused");
    assert!(refused.contains("p-bad payout invalid_amount"), "{refused}");
    assert!(element_text(&dom, "refused-summary").starts_with("1 row(s) refused"));

    // The screenshot: both bars drawn, each 13.75/15 of the 220-pixel plot high (the pixels, not the markup).
    let png = dir.path().join("report.png");
    let shot = headless(&chromium, profile.path())
        .arg("--window-size=1100,1600")
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(shot.status.success(), "{}", text(&shot));
    let image = decode_png(&std::fs::read(&png).unwrap());
    assert_eq!((image.width, image.height), (1100, 1600));
    let want = 220.0 * 13.75 / 15.0;
    for (what, color) in [("paid out", [0x7c, 0x3a, 0xed]), ("matched", [0x10, 0xb9, 0x81])] {
        let bar = image.tallest_run(color) as f64;
        assert!((bar - want).abs() <= 2.0, "the {what} bar is {bar} px high, expected {want:.1}");
    }
}
