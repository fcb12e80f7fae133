//! What people read: a plain-text summary for stdout, and one self-contained HTML file (inline CSS and
//! SVG, no network assets) with headline totals, counts per class, daily paid out vs matched, and every open
//! finding with its values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{FINDING_CLASSES, ReconcileReport};
use crate::money::Usd;
use crate::provider::records::TxKind;

pub fn text(r: &ReconcileReport) -> String {
    let mut s = String::new();
    let open = r.open().count();
    let _ = writeln!(
        s,
        "reconcile {}: {} operations, {} provider transactions; matched {} ({} USD); open findings {}, resolved this run {}",
        r.run_id,
        r.operations,
        r.provider_transactions,
        // A class no operation fell in has no entry: none matched.
        r.counts.get("matched").copied().unwrap_or(0),
        r.matched_usd,
        open,
        r.resolved().count()
    );
    for c in FINDING_CLASSES {
        let n = r.open().filter(|f| f.finding.class == *c).count();
        if n > 0 {
            let _ = writeln!(s, "  {:<22} {n}", c.as_str());
        }
    }
    for f in r.open().take(20) {
        let _ = writeln!(
            s,
            "  - {} {}: {} (open since {})",
            f.finding.class.as_str(),
            f.finding
                .operation_id
                .as_deref()
                .or(f.finding.tx_ids.as_deref())
                .or(f.finding.agent_id.as_deref())
                .unwrap_or("-"),
            f.finding.detail,
            f.first_seen_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if !r.decisions.is_empty() {
        let _ = writeln!(s, "  decided by a person: {}", r.decisions.len());
    }
    for d in &r.decisions {
        let _ = writeln!(
            s,
            "  - {} {} {}{} by {} at {}: {} [{}]",
            d.operation_id,
            d.kind,
            d.event.as_str(),
            d.tx_id.as_deref().map(|t| format!(" (tx {t})")).unwrap_or_default(),
            d.decided_by,
            d.recorded_at.format("%Y-%m-%d %H:%M:%S UTC"),
            d.note.as_deref().unwrap_or("-"),
            d.class.as_str()
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An amount a finding may not have (a missing_at_provider finding has no provider amount): an empty cell.
fn amount(u: Option<Usd>) -> String {
    u.map(|a| a.to_string()).unwrap_or_default()
}

/// Bars of paid out vs matched payouts per day, as inline SVG.
fn chart(r: &ReconcileReport) -> String {
    // One row per day and kind (daily_totals.sql groups by both), so one payout row per day.
    let days: BTreeMap<chrono::NaiveDate, (Usd, Usd)> =
        r.daily.iter().filter(|d| d.kind == TxKind::Payout).map(|d| (d.day, (d.amount_usd, d.matched_usd))).collect();
    if days.is_empty() {
        return "<p>No payouts in the ledger yet.</p>".into();
    }
    let days: Vec<_> = days.into_iter().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    let max = days.iter().map(|(_, (p, m))| p.cents().max(m.cents())).max().unwrap_or(1).max(1) as f64;
    let (w, h, pad) = (760.0, 220.0, 30.0);
    let slot = (w - 2.0 * pad) / days.len() as f64;
    let bar = (slot / 2.5).min(40.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img" aria-label="Daily payouts: paid out vs matched">"#,
        h + 40.0
    );
    for (i, (day, (paid, matched))) in days.iter().enumerate() {
        let x = pad + i as f64 * slot;
        let hp = (paid.cents() as f64 / max) * h;
        let hm = (matched.cents() as f64 / max) * h;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hp:.1}" fill="#7c3aed"><title>{day} paid out {} USD</title></rect><rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{hm:.1}" fill="#10b981"><title>{day} matched {} USD</title></rect><text x="{x:.1}" y="{:.1}" font-size="10">{}</text>"##,
            h - hp + 5.0,
            paid,
            x + bar,
            h - hm + 5.0,
            matched,
            h + 20.0,
            day.format("%m-%d")
        );
    }
    svg.push_str(r##"<rect x="30" y="248" width="10" height="10" fill="#7c3aed"/><text x="44" y="257" font-size="11">paid out</text><rect x="110" y="248" width="10" height="10" fill="#10b981"/><text x="124" y="257" font-size="11">matched to the log</text></svg>"##);
    svg
}

pub fn html(r: &ReconcileReport) -> String {
    let open: Vec<_> = r.open().collect();
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pfsync reconciliation {run}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1f2937}}h1{{font-size:1.4rem}}
.cards{{display:flex;gap:1rem;flex-wrap:wrap}}.card{{border:1px solid #e5e7eb;border-radius:8px;padding:.8rem 1.2rem}}
.card b{{display:block;font-size:1.5rem}}.bad b{{color:#b91c1c}}.good b{{color:#047857}}
table{{border-collapse:collapse;margin:1rem 0;font-size:.85rem}}td,th{{border:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left}}
th{{background:#f9fafb}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}</style></head><body>
<h1>Purple Flea reconciliation</h1><p>Run <code>{run}</code> at {at}. Every operation in the payout log and every provider transaction carrying a pfsync key ends in exactly one class.</p>
<div class="cards"><div class="card"><b>{ops}</b>operations</div><div class="card"><b>{txs}</b>provider transactions</div>
<div class="card good"><b>{matched}</b>matched ({mu} USD)</div><div class="card {cls}"><b>{nopen}</b>open findings</div>
<div class="card"><b>{nres}</b>resolved this run</div></div>"#,
        run = esc(&r.run_id),
        at = r.at.format("%Y-%m-%d %H:%M:%S UTC"),
        ops = r.operations,
        txs = r.provider_transactions,
        matched = r.counts.get("matched").copied().unwrap_or(0),
        mu = r.matched_usd,
        cls = if open.is_empty() { "good" } else { "bad" },
        nopen = open.len(),
        nres = r.resolved().count()
    );
    h.push_str("<h2>Counts per class</h2><table><tr><th>class</th><th>count</th></tr>");
    for (c, n) in &r.counts {
        let _ = write!(h, r#"<tr><td>{}</td><td class="num">{n}</td></tr>"#, esc(c));
    }
    h.push_str("</table><h2>Daily payouts: paid out vs matched</h2>");
    h.push_str(&chart(r));
    h.push_str("<h2>Daily totals by kind</h2><table><tr><th>day</th><th>kind</th><th>transactions</th><th>amount USD</th><th>matched USD</th></tr>");
    for d in &r.daily {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            d.day,
            esc(d.kind.as_str()),
            d.transactions,
            d.amount_usd,
            d.matched_usd
        );
    }
    h.push_str("</table><h2>Open findings</h2>");
    if open.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>class</th><th>operation</th><th>provider tx</th><th>agent (expected / actual)</th><th>amount USD (expected / actual)</th><th>detail</th><th>open since</th></tr>");
        for f in &open {
            let x = &f.finding;
            // Ids, agents and amounts a finding of this class does not have show as empty cells.
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td class="num">{} / {}</td><td>{}</td><td>{}</td></tr>"#,
                x.class.as_str(),
                esc(x.operation_id.as_deref().unwrap_or("")),
                esc(x.tx_ids.as_deref().unwrap_or("")),
                esc(x.expected_agent.as_deref().or(x.agent_id.as_deref()).unwrap_or("")),
                esc(x.actual_agent.as_deref().unwrap_or("")),
                amount(x.expected_amount),
                amount(x.actual_amount),
                esc(&x.detail),
                f.first_seen_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Decided by a person</h2>");
    if r.decisions.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>operation</th><th>kind</th><th>decision</th><th>provider tx</th><th>by</th><th>note</th><th>at</th><th>class</th></tr>");
        for d in &r.decisions {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&d.operation_id),
                esc(&d.kind),
                d.event.as_str(),
                esc(d.tx_id.as_deref().unwrap_or("")),
                esc(&d.decided_by),
                esc(d.note.as_deref().unwrap_or("")),
                d.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                d.class.as_str()
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
