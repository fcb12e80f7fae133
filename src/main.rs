//! `pfsync`: parse flags, set up logging, run, and turn the outcome into a documented exit code.

use std::process::ExitCode;

use clap::Parser;
use pfsync::app;
use pfsync::cli::Cli;
use pfsync::exit::Exit;

fn main() -> ExitCode {
    // First, before the key is read from anywhere.
    let no_core_dumps = pfsync::secret::forbid_core_dumps();
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
            if json_logs {
                tracing::error!(exit_code = code as u8, "{e}");
            } else {
                // Error text can carry values from outside (ids, paths, API messages): one line, no ESC.
                eprintln!("error: {}", pfsync::logging::escape_control(&e.to_string()));
            }
            ExitCode::from(code as u8)
        }
    }
}
