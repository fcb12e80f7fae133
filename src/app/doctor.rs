//! `pfsync doctor`: the checks a run depends on, in the order it depends on them, each read-only. The
//! provider is asked only what a sync asks first (a page of wallets, or the payer's own wallet); nothing is
//! sent that moves money, and no table is created or written.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::error::AppError;
use crate::cli::{DoctorArgs, GlobalArgs, Output};
use crate::config::Settings;
use crate::doctor::{self, Check};
use crate::exit::Exit;
use crate::http::DateProbe;
use crate::provider::Provider;
use crate::provider::records::ListQuery;

pub(super) async fn doctor(global: &GlobalArgs, args: &DoctorArgs) -> Result<(), AppError> {
    let checks = run_checks(global, args).await;
    match args.output {
        Output::Json => println!("{:#}", doctor::json(&checks)),
        Output::Table => print!("{}", doctor::text(&checks)),
    }
    match doctor::exit(&checks) {
        Exit::Ok => Ok(()),
        exit => Err(AppError::ChecksFailed {
            failed: checks.iter().filter(|c| matches!(c.level, doctor::Level::Fail(_))).count() as u64,
            exit,
        }),
    }
}

async fn run_checks(global: &GlobalArgs, args: &DoctorArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    #[allow(unused_mut)] // mutated only by the `unity` feature
    let mut settings = match Settings::resolve(&global.into()) {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::fail("config", Exit::Usage, e.to_string()));
            for name in ["key", "provider", "clock", "tables"] {
                checks.push(Check::skipped(name, "the settings do not resolve"));
            }
            return checks;
        }
    };
    checks.push(Check::ok(
        "config",
        format!(
            "warehouse {}, provider {}, API {}, config file {}",
            settings.warehouse.root(),
            settings.provider.kind_name().unwrap_or("?"),
            crate::http::shown(&settings.api_url),
            global.config.as_ref().map_or("(none)".to_string(), |p| p.display().to_string())
        ),
    ));
    checks.extend(provider_checks(&settings, args).await);
    #[cfg(feature = "unity")]
    if let Some(section) = settings.unity.clone() {
        let names: Vec<_> =
            crate::tables::ALL.iter().map(|s| s.table_name()).filter(|n| !settings.warehouse.is_mapped(n)).collect();
        let proxy = settings.proxy.as_ref().map(|p| p.url().clone());
        let catalog = crate::tables::unity::Catalog {
            workspace_url: section.workspace_url.as_deref(),
            vend_credentials: section.vend_credentials,
            proxy: proxy.as_ref(),
        };
        if let Err(e) = crate::tables::unity::resolve(&mut settings.warehouse, &catalog, names).await {
            let e = AppError::from(e);
            checks.push(Check::fail("tables", e.exit(), format!("table locations from Unity Catalog: {e}")));
            return checks;
        }
    }
    checks.push(table_check(&settings).await);
    checks
}

/// The key, the provider (connected, its keys accepted, a read answered) and the clock of every server it
/// talked to.
async fn provider_checks(settings: &Settings, args: &DoctorArgs) -> Vec<Check> {
    let mut common = match settings.provider_common() {
        Ok(c) => c,
        Err(e) => {
            return vec![
                Check::fail("key", Exit::Usage, e.to_string()),
                Check::skipped("provider", "no key"),
                Check::skipped("clock", "no key"),
            ];
        }
    };
    let mut out = vec![Check::ok("key", format!("the payer's key is set ({})", key_source(settings)))];
    let probe = Arc::new(DateProbe::new(crate::clock::process_clock()));
    common.client.date_probe = Some(probe.clone());
    let started = Instant::now();
    let read = match crate::provider::connect(&settings.provider, &common).await {
        Ok(p) => first_read(p.as_ref()).await,
        Err(e) => Err(e),
    };
    let ms = started.elapsed().as_millis();
    out.push(match read {
        Ok(what) => Check::ok("provider", format!("answered in {ms} ms: keys accepted, {what}")),
        Err(e) => Check::fail("provider", Exit::from(e.class()), e.to_string()),
    });
    let skews = probe.skews();
    match skews.iter().max_by_key(|(_, s)| s.unsigned_abs()) {
        Some((origin, skew)) => out.push(doctor::clock(*skew, args.max_clock_skew_secs, origin)),
        None => out.push(Check::skipped("clock", "no server answered, so none said its time")),
    }
    out
}

fn key_source(settings: &Settings) -> String {
    match &settings.api_key_file {
        Some(p) => format!("from --api-key-file {}", p.display()),
        None => format!("from {}", crate::secret::API_KEY_ENV),
    }
}

/// What a sync asks first, read-only: a page of one wallet from a provider that lists, or the payer's own
/// wallet from one that answers only to each agent's key.
async fn first_read(p: &dyn Provider) -> Result<String, crate::provider::ProviderError> {
    if let Some(l) = p.listings() {
        let page = l.wallets(ListQuery { limit: Some(1), ..ListQuery::default() }).next().await;
        return match page {
            Some(Err(e)) => Err(e),
            _ => Ok("a page of wallets read".to_string()),
        };
    }
    if let Some(h) = p.held_agents() {
        h.wallet(h.payer_id()).await?;
        return Ok(format!("the payer's wallet read ({} agent key(s) held)", h.agent_ids().len()));
    }
    Ok("nothing to read".to_string())
}

/// Which of pfsync's tables exist and open with their schema; none at all is a warehouse never initialised
/// (or a mistyped one).
async fn table_check(settings: &Settings) -> Check {
    let wh = &settings.warehouse;
    let (mut present, mut missing) = (0, Vec::new());
    for spec in crate::tables::ALL {
        match crate::tables::open_existing(wh, spec).await {
            Ok(Some(_)) => present += 1,
            Ok(None) => missing.push(spec.name),
            Err(e) => return Check::fail("tables", Exit::from(e.class()), format!("{}: {e}", spec.name)),
        }
    }
    let all = crate::tables::ALL.len();
    if present == 0 {
        return Check::fail(
            "tables",
            Exit::Usage,
            format!("none of pfsync's {all} tables under {}: run `pfsync init` (or check --warehouse)", wh.root()),
        );
    }
    if missing.is_empty() {
        Check::ok("tables", format!("all {all} tables under {} open with their schema", wh.root()))
    } else {
        Check::warn(
            "tables",
            format!(
                "{present} of {all} tables under {}; not created yet: {} (`pfsync init` creates them)",
                wh.root(),
                missing.join(", ")
            ),
        )
    }
}
