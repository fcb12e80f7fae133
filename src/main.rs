//! `pfsync`: parse flags, set up logging, run, and turn the outcome into a documented exit code.

use std::process::ExitCode;

use clap::Parser;
use pfsync::app;
use pfsync::cli::Cli;
use pfsync::exit::Exit;

fn main() -> ExitCode {
    // First, before the key is read from anywhere.
    let no_core_dumps = pfsync::secret::forbid_core_dumps();
    let ignored_proxies = remove_proxy_variables();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { Exit::Ok as u8 });
        }
    };
    let json_logs = cli.global.log_format == pfsync::cli::LogFormat::Json;
    pfsync::logging::init(cli.global.log_format, cli.global.verbose, cli.global.quiet);
    if let Err(e) = no_core_dumps {
        tracing::warn!(error = %e, "could not turn core dumps off: a crash dump may hold the API key");
    }
    if !ignored_proxies.is_empty() {
        tracing::info!(
            variables = ?ignored_proxies,
            "proxy variables ignored: a proxy would see every key; set [http] proxy in the config to use one"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Internal as u8);
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit();
            let message = pfsync::logging::with_causes(&e);
            if json_logs {
                tracing::error!(exit_code = code as u8, "{message}");
            } else {
                // Error text can carry values from outside (ids, paths, API messages): one line, no ESC. A
                // usage error is about the user's own input (a config file, a query): its lines (a TOML error
                // pointing at a column) are kept, each escaped and indented under the first.
                let shown = if code == Exit::Usage {
                    pfsync::logging::escape_lines(&message)
                } else {
                    pfsync::logging::escape_control(&message).into_owned()
                };
                eprintln!("error: {shown}");
            }
            ExitCode::from(code as u8)
        }
    }
}

/// pfsync's own clients never read the proxy variables (`pfsync::http::outbound`), but the clients libraries
/// build (delta-rs's Unity Catalog client, the object stores) do, and would hand a proxy their tokens. So they
/// leave the process's environment before any of those exists. Returns the names that were set.
fn remove_proxy_variables() -> Vec<&'static str> {
    let set: Vec<&'static str> =
        pfsync::http::PROXY_VARS.into_iter().filter(|v| std::env::var_os(v).is_some()).collect();
    for v in &set {
        // SAFETY: no other thread exists yet (the async runtime and logging start later in `main`), so no
        // one reads the environment while it changes.
        unsafe { std::env::remove_var(v) };
    }
    set
}
