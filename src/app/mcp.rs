//! `pfsync mcp`: connect the provider, make sure the tables the tools write exist, and serve.

use super::error::AppError;
use super::step::Context;
use crate::cli::McpArgs;
use crate::mcp::{Engine, McpServer, Token, check_listen, policy, serve_http, serve_stdio};
use crate::payouts::PayoutOptions;
use crate::tables::{CommitInfo, ESCROW_ACTIONS, MCP_CALLS, PENDING_PAYOUTS, open_or_create};

pub(super) async fn mcp(ctx: &Context, args: &McpArgs) -> Result<(), AppError> {
    policy::check_client(&args.client).map_err(|e| AppError::Usage(format!("--client: {e}")))?;
    if let Some(addr) = args.listen {
        check_listen(addr).map_err(|e| AppError::Usage(e.to_string()))?;
    }
    // The token is read before anything else, so a server that cannot authenticate never starts.
    let token = match args.listen {
        Some(_) => Some(Token::resolve(args.token_file.as_deref()).map_err(|e| AppError::Usage(e.to_string()))?),
        None if args.token_file.is_some() => {
            return Err(AppError::Usage("--token-file is for HTTP: add --listen 127.0.0.1:PORT".into()));
        }
        None => None,
    };
    let cfg = ctx.settings.client_config()?;
    if let Some(token) = &token {
        let mut keys = ctx.settings.provider.held_keys().map_err(|e| AppError::Usage(format!("[provider] {e}")))?;
        keys.extend(cfg.api_key.clone());
        token.check(&keys).map_err(|e| AppError::Usage(e.to_string()))?;
    }
    let opts = PayoutOptions {
        namespace: ctx.settings.mcp.namespace().to_string(),
        clock: crate::clock::process_clock(),
        ..PayoutOptions::default()
    };
    let opts = super::payouts::with_client(&opts, &cfg)?;
    // `connect` refuses a warehouse with none of pfsync's tables: the money tools create the tables they
    // write, but balances come from the synced ones, and a mistyped warehouse's payouts no job reconciles.
    let provider = super::step::connect(ctx).await?;
    // The money tools append to the two source tables (as an upstream job would) and every call to the audit
    // table: created empty when absent, as `pfsync init` does; an existing one with other columns is refused.
    let commit = CommitInfo { run_id: ctx.run_id.clone(), step: "mcp" };
    for spec in [&PENDING_PAYOUTS, &ESCROW_ACTIONS, &MCP_CALLS] {
        open_or_create(&ctx.settings.warehouse, spec, &commit).await?;
    }
    let transport = if args.listen.is_some() { "http" } else { "stdio" };
    let engine = Engine::new(
        ctx.settings.warehouse.clone(),
        provider,
        args.client.clone(),
        transport,
        ctx.settings.mcp.clone(),
        opts,
    );
    let server = McpServer::new(engine);
    tracing::info!(client = %args.client, transport, "pfsync mcp serving");
    let served = match (args.listen, token) {
        (Some(addr), Some(token)) => serve_http(server, addr, token, &args.allow_hosts).await,
        _ => serve_stdio(server).await,
    };
    served.map_err(|e| if e.is_usage() { AppError::Usage(e.to_string()) } else { AppError::Internal(e.to_string()) })
}
