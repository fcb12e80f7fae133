//! `pfsync completions` and `pfsync man`: generated from the clap definition, so they cannot fall behind
//! the flags. Neither reads settings, a key or a table.

use std::io::Write as _;

use clap::CommandFactory;

use super::error::AppError;
use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// `bytes` on stdout. A reader that stopped early (`| head`) wanted no more: not an error.
fn to_stdout(bytes: &[u8]) -> Result<(), AppError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::Internal(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

pub(super) fn completions(args: &CompletionsArgs) -> Result<(), AppError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pfsync", &mut script);
    to_stdout(&script)
}

fn render(page: clap::Command, name: &str) -> Result<Vec<u8>, AppError> {
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut bytes)
        .map_err(|e| AppError::Internal(format!("cannot render {name}.1: {e}")))?;
    Ok(bytes)
}

pub(super) fn man(args: &ManArgs) -> Result<(), AppError> {
    // Built, so every command's page lists the global options it takes.
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = &args.dir else {
        return to_stdout(&render(cmd, "pfsync")?);
    };
    std::fs::create_dir_all(dir).map_err(|e| AppError::Usage(format!("--dir {}: {e}", dir.display())))?;
    let mut pages = vec![("pfsync".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("pfsync-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = String::new();
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(page, &name)?)
            .map_err(|e| AppError::Usage(format!("cannot write {}: {e}", path.display())))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    to_stdout(written.as_bytes())
}
