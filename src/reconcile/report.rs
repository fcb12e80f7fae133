//! What people read: a plain-text summary for stdout, and one self-contained HTML file (inline CSS and
//! SVG, no network assets) an auditor opens: what the run was made of (namespace, warehouse, pfsync version,
//! run id), headline totals, pfsync's own payouts per day against what matched them (a chart with axes and
//! scale, and its figures as a table), the money at risk, refused rows, counts per class, the provider's daily
//! totals and every open finding with its values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::own::{OwnDay, Tally};
use super::{FINDING_CLASSES, ReconcileReport};
use crate::money::Usd;
use crate::operation::OpKind;

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
    let risk = &r.own.at_risk;
    if risk.unknown.operations > 0 {
        let _ = writeln!(
            s,
            "  at risk: {} operation(s) with no known outcome ({} USD), {} of them for a person ({} USD)",
            risk.unknown.operations, risk.unknown.usd, risk.for_a_person.operations, risk.for_a_person.usd
        );
    }
    match &r.rebuilt {
        Some(why) => {
            let _ =
                writeln!(s, "  state rebuilt from the whole history ({why}): {} operations classified", r.classified);
        }
        None if r.classified > 0 || r.operations > 0 => {
            let _ = writeln!(
                s,
                "  state kept from what changed: {} operations classified (new data, or not settled)",
                r.classified
            );
        }
        None => {}
    }
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

/// A location as the report shows it: no user, password, query or fragment (an object-store URI never needs
/// them to be recognised, and they are where a credential would hide).
pub fn shown_location(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An amount a finding may not have (a missing_at_provider finding has no provider amount): an empty cell.
fn amount(u: Option<Usd>) -> String {
    u.map(|a| a.to_string()).unwrap_or_default()
}

/// Cents with thousands separators and two decimals: `1234567` -> `12,345.67`. Totals are summed as i128
/// cents, so no sum of amounts can overflow on its way to the page.
fn money(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

fn usd(u: Usd) -> String {
    money(u.cents().into())
}

/// A tick label: whole dollars when the step is whole dollars (`$1,000`), else with cents (`$2.50`).
fn tick_label(cents: i128, whole_dollars: bool) -> String {
    let m = money(cents);
    if whole_dollars { format!("${}", m.trim_end_matches(".00")) } else { format!("${m}") }
}

/// The y axis: a step of 1, 2 or 5 times a power of ten cents, so that at most five steps cover `max`.
fn scale(max_cents: i128) -> (i128, usize) {
    let max = max_cents.max(1);
    let mut power: i128 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = m * power;
            let steps = (max + step - 1) / step;
            if steps <= 5 {
                return (step, steps as usize);
            }
        }
        power *= 10;
    }
}

/// pfsync's completed payouts per day (from the payout log) against the part of them the provider's records
/// match, as inline SVG with a y axis in USD, grid lines and the days on the x axis. The provider's other
/// money (opening balances, payments pfsync did not make) is not drawn: against it pfsync's bars would be
/// invisible.
fn chart(r: &ReconcileReport) -> String {
    let days: Vec<&OwnDay> = r.own.payouts().collect();
    if days.is_empty() {
        return "<p>pfsync has completed no payout yet.</p>".into();
    }
    // The last 30 days that have payouts; the table below the chart has every day.
    let days = &days[days.len().saturating_sub(30)..];
    let max = days.iter().map(|d| i128::from(d.completed.usd.cents().max(d.matched.usd.cents()))).max().unwrap_or(1);
    let (step, steps) = scale(max);
    let top = step * steps as i128;
    let whole = step % 100 == 0;
    let (left, right, plot_top, plot_h, bottom) = (90.0, 20.0, 20.0, 220.0, 60.0);
    let slot_w = 56.0;
    // Wide enough for the legend under a single day.
    let plot_w = (slot_w * days.len() as f64).max(480.0);
    let (w, h) = (left + plot_w + right, plot_top + plot_h + bottom);
    // Pixel positions only: the amounts on the page are the exact figures, formatted from cents.
    let y = |cents: i128| plot_top + plot_h - (cents as f64 / top as f64) * plot_h;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="own-payouts-chart" width="{w}" height="{h}" role="img" aria-label="pfsync payouts per day: paid out by pfsync vs matched at the provider, USD">"#
    );
    for i in 0..=steps {
        let v = step * i as i128;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{yv:.1}" y2="{yv:.1}" stroke="#e5e7eb"/><text class="tick" x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            tick_label(v, whole),
            yv = y(v)
        );
    }
    let bar = (slot_w / 3.0).min(24.0);
    for (i, d) in days.iter().enumerate() {
        let x = left + i as f64 * slot_w + (slot_w - 2.0 * bar) / 2.0;
        let (paid, matched) = (i128::from(d.completed.usd.cents()), i128::from(d.matched.usd.cents()));
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="#7c3aed"><title>{day}: pfsync paid out {} USD in {} payouts</title></rect><rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="#10b981"><title>{day}: {} USD matched at the provider ({} payouts)</title></rect><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            y(paid),
            y(0) - y(paid),
            money(paid),
            d.completed.operations,
            x + bar,
            y(matched),
            y(0) - y(matched),
            money(matched),
            d.matched.operations,
            x + bar,
            plot_top + plot_h + 16.0,
            d.day.format("%m-%d"),
            day = d.day
        );
    }
    let axis_y = plot_top + plot_h;
    let _ = write!(
        svg,
        r##"<line x1="{left}" x2="{left}" y1="{plot_top}" y2="{axis_y}" stroke="#374151"/><line x1="{left}" x2="{:.1}" y1="{axis_y}" y2="{axis_y}" stroke="#374151"/><text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">USD</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">day (UTC) the payout's outcome was logged</text>"##,
        left + plot_w,
        plot_top + plot_h / 2.0,
        plot_top + plot_h / 2.0,
        left + plot_w / 2.0,
        axis_y + 34.0,
    );
    let legend = axis_y + 50.0;
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{:.1}" width="10" height="10" fill="#7c3aed"/><text x="{:.1}" y="{legend:.1}" font-size="11">paid out by pfsync (payout log, completed)</text><rect x="{:.1}" y="{:.1}" width="10" height="10" fill="#10b981"/><text x="{:.1}" y="{legend:.1}" font-size="11">matched at the provider</text></svg>"##,
        legend - 9.0,
        left + 14.0,
        left + 270.0,
        legend - 9.0,
        left + 284.0,
    );
    svg
}

fn tally_cells(t: &Tally) -> String {
    format!(r#"<td class="num">{}</td><td class="num">{}</td>"#, t.operations, usd(t.usd))
}

/// Every day and kind of pfsync's own operations, as figures (the chart draws the payouts).
fn own_table(r: &ReconcileReport) -> String {
    if r.own.days.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        r#"<table id="own-days"><tr><th>day</th><th>kind</th><th>completed</th><th>paid out USD</th><th>matched</th><th>matched USD</th><th>not matched USD</th></tr>"#,
    );
    for d in &r.own.days {
        // A release or dispute moves the escrow's money, not an amount of its own: counts only.
        if matches!(d.kind, OpKind::EscrowRelease | OpKind::EscrowDispute) {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">-</td><td class="num">{}</td><td class="num">-</td><td class="num">-</td></tr>"#,
                d.day,
                d.kind.as_str(),
                d.completed.operations,
                d.matched.operations
            );
            continue;
        }
        let unmatched = i128::from(d.completed.usd.cents()) - i128::from(d.matched.usd.cents());
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td>{}{}<td class="num">{}</td></tr>"#,
            d.day,
            d.kind.as_str(),
            tally_cells(&d.completed),
            tally_cells(&d.matched),
            money(unmatched)
        );
    }
    h.push_str("</table>");
    h
}

/// Money at risk: outcomes not known, those a person must decide, completed operations the provider does not
/// match, and the money each open finding class involves.
fn at_risk(r: &ReconcileReport) -> String {
    let a = &r.own.at_risk;
    let card = |id: &str, t: &Tally, what: &str| {
        let cls = if t.operations > 0 { "bad" } else { "good" };
        format!(
            r#"<div class="card {cls}" id="{id}"><b>{} USD</b>{} operation(s) {what}</div>"#,
            usd(t.usd),
            t.operations
        )
    };
    let mut h = String::from(r#"<div class="cards">"#);
    h.push_str(&card(
        "risk-unknown",
        &a.unknown,
        "with no known outcome (the next <code>pfsync payouts</code> looks them up)",
    ));
    h.push_str(&card(
        "risk-person",
        &a.for_a_person,
        "of them past the stale threshold: for a person to decide (<code>stale_unknown</code>)",
    ));
    h.push_str(&card("risk-unmatched", &a.unmatched, "completed in the log but not matched at the provider"));
    h.push_str("</div>");
    let mut by_class: BTreeMap<&str, (u64, i128, i128)> = BTreeMap::new();
    for f in r.open() {
        let e = by_class.entry(f.finding.class.as_str()).or_default();
        e.0 += 1;
        e.1 += f.finding.expected_amount.map_or(0, |u| i128::from(u.cents()));
        e.2 += f.finding.actual_amount.map_or(0, |u| i128::from(u.cents()));
    }
    if !by_class.is_empty() {
        h.push_str(r#"<table id="risk-findings"><tr><th>open finding class</th><th>findings</th><th>expected USD (log)</th><th>actual USD (provider)</th></tr>"#);
        for (class, (n, expected, actual)) in by_class {
            let _ = write!(
                h,
                r#"<tr><td>{class}</td><td class="num">{n}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                money(expected),
                money(actual)
            );
        }
        h.push_str("</table>");
    }
    h
}

/// Refused source rows: the newest 100, and how many more there are.
fn refused(r: &ReconcileReport) -> String {
    if r.refused.is_empty() {
        return r#"<p id="refused-none">No source row was refused.</p>"#.into();
    }
    let refusals: u64 = r.refused.iter().map(|x| x.refusals).sum();
    let mut h = format!(
        r#"<p id="refused-summary">{} row(s) refused, {refusals} refusal(s) in all. Nothing was sent for them; a corrected row is validated again by the next run.</p><table id="refused"><tr><th>operation</th><th>kind</th><th>code</th><th>message</th><th>times</th><th>first refused</th><th>last refused</th></tr>"#,
        r.refused.len()
    );
    for x in r.refused.iter().take(100) {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(x.operation_id.as_deref().unwrap_or("(none)")),
            esc(&x.kind),
            esc(&x.code),
            esc(&x.message),
            x.refusals,
            x.first_refused_at.format("%Y-%m-%d %H:%M:%S"),
            x.last_refused_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    h.push_str("</table>");
    if r.refused.len() > 100 {
        let _ = write!(
            h,
            "<p>and {} more: <code>SELECT * FROM purpleflea.payouts.rejects</code></p>",
            r.refused.len() - 100
        );
    }
    h
}

pub fn html(r: &ReconcileReport) -> String {
    let open: Vec<_> = r.open().collect();
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pfsync reconciliation {run}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1f2937}}h1{{font-size:1.4rem}}
.cards{{display:flex;gap:1rem;flex-wrap:wrap}}.card{{border:1px solid #e5e7eb;border-radius:8px;padding:.8rem 1.2rem;max-width:22rem}}
.card b{{display:block;font-size:1.5rem}}.bad b{{color:#b91c1c}}.good b{{color:#047857}}
dl.meta{{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;font-size:.9rem}}dl.meta dt{{color:#6b7280}}dl.meta dd{{margin:0;font-family:ui-monospace,monospace}}
table{{border-collapse:collapse;margin:1rem 0;font-size:.85rem}}td,th{{border:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left}}
th{{background:#f9fafb}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}p.note{{color:#4b5563;font-size:.85rem;max-width:60rem}}</style></head><body>
<h1>Purple Flea reconciliation</h1>
<dl class="meta"><dt>run id</dt><dd id="meta-run">{run}</dd><dt>at</dt><dd>{at}</dd><dt>namespace</dt><dd id="meta-namespace">{ns}</dd><dt>warehouse</dt><dd id="meta-warehouse">{wh}</dd><dt>pfsync</dt><dd id="meta-version">{version}</dd></dl>
<p>Every operation in the payout log and every provider transaction carrying a pfsync key ends in exactly one class.</p>
<div class="cards"><div class="card"><b>{ops}</b>operations</div><div class="card"><b>{txs}</b>provider transactions</div>
<div class="card good"><b>{matched}</b>matched ({mu} USD)</div><div class="card {cls}"><b>{nopen}</b>open findings</div>
<div class="card"><b>{nres}</b>resolved this run</div></div>"#,
        run = esc(&r.run_id),
        at = r.at.format("%Y-%m-%d %H:%M:%S UTC"),
        ns = esc(&r.namespace),
        wh = esc(&r.warehouse),
        version = env!("CARGO_PKG_VERSION"),
        ops = r.operations,
        txs = r.provider_transactions,
        matched = r.counts.get("matched").copied().unwrap_or(0),
        mu = usd(r.matched_usd),
        cls = if open.is_empty() { "good" } else { "bad" },
        nopen = open.len(),
        nres = r.resolved().count()
    );
    h.push_str("<h2>pfsync's payouts per day: paid out vs matched</h2>");
    h.push_str(r#"<p class="note">What the payout log says pfsync paid (completed payouts, on the day their outcome was logged) and how much of that the provider's records match. Only pfsync's own payouts: the provider's other money is in the daily totals below.</p>"#);
    h.push_str(&chart(r));
    h.push_str(&own_table(r));
    h.push_str("<h2>Money at risk</h2>");
    h.push_str(&at_risk(r));
    h.push_str("<h2>Refused rows</h2>");
    h.push_str(&refused(r));
    h.push_str("<h2>Counts per class</h2><table><tr><th>class</th><th>count</th></tr>");
    for (c, n) in &r.counts {
        let _ = write!(h, r#"<tr><td>{}</td><td class="num">{n}</td></tr>"#, esc(c));
    }
    h.push_str("</table><h2>Provider money per day and kind</h2>");
    h.push_str(r#"<p class="note">Every transaction in pfsync's copy of the provider's records (the sandbox's opening balances included; for Purple Flea's live services, the ledgers of the agents whose keys pfsync holds), and the part of it pfsync's completed operations account for.</p>"#);
    h.push_str(r#"<table id="daily-totals"><tr><th>day</th><th>kind</th><th>transactions</th><th>amount USD</th><th>matched USD</th></tr>"#);
    if r.daily.is_empty() {
        h.push_str(r#"<tr><td colspan="5">No provider transactions synced yet.</td></tr>"#);
    }
    for d in &r.daily {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            d.day,
            esc(d.kind.as_str()),
            d.transactions,
            usd(d.amount_usd),
            usd(d.matched_usd)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands_and_keeps_exact_cents() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(101_256_700), "1,012,567.00");
        assert_eq!(money(-123_456), "-1,234.56");
    }

    #[test]
    fn the_axis_covers_the_largest_bar_in_at_most_five_round_steps() {
        assert_eq!(scale(1375), (500, 3), "13.75 USD: $0, $5, $10, $15");
        assert_eq!(scale(5000), (1000, 5));
        assert_eq!(scale(101_256_700), (50_000_000, 3));
        assert_eq!(scale(0), (1, 1));
        assert_eq!(tick_label(1500, true), "$15");
        assert_eq!(tick_label(250, false), "$2.50");
        assert_eq!(tick_label(100_000_000, true), "$1,000,000");
    }

    #[test]
    fn a_location_loses_what_could_carry_a_credential() {
        let u = url::Url::parse("s3://user:secret@bucket/lake?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(shown_location(&u), "s3://bucket/lake");
    }
}
