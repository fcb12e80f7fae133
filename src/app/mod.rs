//! The commands, run from parsed flags: each module one command (or step of `pfsync run`), over what they
//! share (`step.rs`) and how they end (`error.rs`).

mod demo;
mod doctor;
mod error;
mod import;
mod manual;
mod mcp;
pub(crate) mod payouts;
mod query;
mod reconcile;
pub mod resolve;
mod rules;
mod run;
mod sandbox;
mod step;
mod sync;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::tables::CommitInfo;
pub use demo::SEED_QUERY;
use demo::demo;
pub use error::AppError;
use payouts::payouts_step;
pub use payouts::{payout_options, payout_outcome};
use query::{maintain, sql, status, tables};
pub use reconcile::fail_on;
use reconcile::reconcile_step;
use run::run_steps;
use sandbox::sandbox;
pub use step::{Context, StepOutcome};
use step::{connect, recorded, require_initialised};
use sync::{sync_options, sync_step};

pub async fn run(cli: Cli) -> Result<(), AppError> {
    crate::errors::quiet_caught_dependency_panics();
    // What reads no settings, or reports on them itself.
    match &cli.command {
        Command::Completions(args) => return manual::completions(args),
        Command::Man(args) => return manual::man(args),
        Command::Doctor(args) => return doctor::doctor(&cli.global, args).await,
        _ => {}
    }
    let mut overrides: crate::config::Overrides = (&cli.global).into();
    if matches!(cli.command, Command::Demo(_)) {
        overrides.default_warehouse = Some(crate::demo::DEFAULT_WAREHOUSE);
    }
    #[allow(unused_mut)] // mutated only by the `unity` feature
    let mut settings = Settings::resolve(&overrides)?;
    let run_id = match &cli.global.run_id {
        Some(id) if id.trim().is_empty() || id.len() > 200 => {
            return Err(AppError::Usage("--run-id must be 1..=200 characters".into()));
        }
        Some(id) => id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    // After the global flags are checked. `init` creates tables at the warehouse's own paths, for an admin to
    // register; `demo` makes its own local warehouse; every other command that touches tables finds them
    // through the catalog once they are registered.
    #[cfg(feature = "unity")]
    if let Some(section) = settings.unity.clone()
        && !matches!(cli.command, Command::Sandbox(_) | Command::Demo(_) | Command::Init | Command::Ddl(_))
    {
        let names: Vec<_> =
            crate::tables::ALL.iter().map(|s| s.table_name()).filter(|n| !settings.warehouse.is_mapped(n)).collect();
        let proxy = settings.proxy.as_ref().map(|p| p.url().clone());
        let catalog = crate::tables::unity::Catalog {
            workspace_url: section.workspace_url.as_deref(),
            vend_credentials: section.vend_credentials,
            proxy: proxy.as_ref(),
        };
        for (name, url) in crate::tables::unity::resolve(&mut settings.warehouse, &catalog, names).await? {
            tracing::info!(table = %name, location = %url, "location from Unity Catalog");
        }
    }
    let ctx = Context { settings, run_id, progress: !cli.global.quiet };
    // SIGTERM and Ctrl-C: a command with a batch in flight finishes and logs it (exit 9, see `stop`); the
    // servers (sandbox, mcp) shut down on their own.
    match &cli.command {
        Command::Sandbox(_) | Command::Mcp(_) => {}
        Command::Run(_) | Command::Sync(_) | Command::Payouts(_) | Command::Rules(_) | Command::Reconcile(_) => {
            crate::stop::on_signals(crate::stop::Mode::Finish)
        }
        _ => crate::stop::on_signals(crate::stop::Mode::Now),
    }
    let span = tracing::info_span!("run", run_id = %ctx.run_id);
    let _guard = span.enter();
    match cli.command {
        Command::Run(args) => run_steps(&ctx, &args).await,
        Command::Sync(args) => {
            let provider = connect(&ctx).await?;
            recorded(&ctx, "sync", sync_step(&ctx, provider.as_ref(), args.target, &sync_options(&args))).await
        }
        Command::Sandbox(args) => sandbox(&args).await,
        Command::Demo(args) => demo(&ctx, &args).await,
        Command::Sql(args) => sql(&ctx, &args).await,
        Command::Maintain(args) => maintain(&ctx, &args).await,
        Command::Payouts(args) => {
            let opts = payout_options(&args)?;
            let opts = payouts::with_client(&opts, &ctx.settings.client_config()?)?;
            let provider = connect(&ctx).await?;
            recorded(&ctx, "payouts", payouts_step(&ctx, provider.as_ref(), &opts)).await
        }
        Command::Rules(rargs) => {
            let args = &rargs.payouts;
            if args.names_a_source() {
                return Err(AppError::Usage(
                    "pfsync rules reads purpleflea.escrow.rules: --payouts-sql(-file), --actions-sql(-file) and --register are for pfsync payouts"
                        .into(),
                ));
            }
            let opts = payout_options(args)?;
            let opts = payouts::with_client(&opts, &ctx.settings.client_config()?)?;
            let client = rules::mlflow_from_env(ctx.settings.proxy.as_ref().map(|p| p.url()))?;
            let provider = connect(&ctx).await?;
            let limits = (&rargs.limits).into();
            recorded(&ctx, "rules", rules::rules_step(&ctx, provider.as_ref(), &opts, client, limits)).await
        }
        Command::Status(args) => status(&ctx, &args).await,
        Command::Resolve(args) => resolve::resolve(&ctx, &args).await,
        Command::Reconcile(args) => {
            crate::payouts::check_namespace(&args.namespace)?;
            let classes = fail_on(&args.flags.fail_on)?;
            require_initialised(&ctx).await?;
            recorded(&ctx, "reconcile", reconcile_step(&ctx, &args, &classes)).await
        }
        Command::Init => {
            let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "init" };
            for spec in crate::tables::ALL {
                let t = crate::tables::open_or_create(&ctx.settings.warehouse, spec, &commit).await?;
                println!(
                    "{:<36} version {:<4} {}",
                    spec.name,
                    t.version().unwrap_or(0),
                    ctx.settings.warehouse.location(&spec.table_name())
                );
            }
            Ok(())
        }
        Command::Tables(args) => tables(&ctx, &args).await,
        Command::Mcp(args) => mcp::mcp(&ctx, &args).await,
        Command::Import(args) => import::import(&ctx, &args).await,
        // Run above, before the settings are resolved.
        Command::Doctor(_) | Command::Completions(_) | Command::Man(_) => Ok(()),
        Command::Ddl(args) => {
            let grantees = crate::tables::ddl::Grantees {
                readers: args.readers,
                job: args.job_principal,
                vended_credentials: !args.no_credential_vending,
            };
            print!("{}", crate::tables::ddl::script(&ctx.settings.warehouse, &grantees));
            Ok(())
        }
    }
}
