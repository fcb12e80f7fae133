//! `pfsync mcp`: an MCP tool server for agents, in front of the synced tables and the exactly-once engine.
//!
//! - `tool.rs`: the tools by name ([`Tool`]), and the kind of each (read, money, direct);
//! - `schema.rs`: their JSON schemas and descriptions (`tools/list`), generated from [`Tool::ALL`];
//! - `dispatch.rs`: one call: parsed, checked, sent down its kind's path, and audited;
//! - `args.rs` and `request.rs`: arguments read strictly, and the validated requests of governed tools;
//! - `read.rs`, `status.rs` and `query.rs`: the read tools, a request's status, and read-only SQL;
//! - `money.rs`: money tools, operations of the exactly-once engine (a row of the pending or actions table
//!   and, under the `execute` policy, the engine run for it);
//! - `escrow.rs`: what pfsync knows of the escrow a release, dispute or complete names (whose, how much);
//! - `direct.rs`: `claim_faucet` and `mark_complete`, which act on the provider during the call;
//! - `policy.rs`: the `[mcp]` section: execute | queue | deny per tool, limits, allowlists;
//! - `audit.rs`: every call into `purpleflea.ops.mcp_calls`;
//! - `error.rs`: [`McpError`], whose text is what the agent reads;
//! - `serve.rs` and `token.rs`: the transports, and the HTTP bearer token.
//!
//! Transports: stdio (the process is the session), and streamable HTTP on loopback, behind a bearer token
//! read from `PFSYNC_MCP_TOKEN` or `--token-file` (never a flag value). No Purple Flea key ever passes
//! through a tool: the server holds it, as `pfsync payouts` does.

mod args;
pub mod audit;
mod direct;
mod dispatch;
mod error;
mod escrow;
mod money;
pub mod policy;
mod query;
mod read;
mod request;
mod schema;
mod serve;
mod status;
mod token;
mod tool;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

pub use dispatch::Engine;
pub use error::McpError;
pub use serve::{ServeError, check_listen, serve_http, serve_stdio};
pub use token::{TOKEN_ENV, Token, TokenError};
pub use tool::{Kind, Tool};

/// One server, shared by every session (HTTP) or the one session (stdio).
#[derive(Clone)]
pub struct McpServer {
    engine: Arc<Engine>,
}

impl McpServer {
    pub fn new(engine: Engine) -> McpServer {
        McpServer { engine: Arc::new(engine) }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pfsync", env!("CARGO_PKG_VERSION")))
            .with_instructions(schema::INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(schema::definitions()))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        Tool::parse(name).map(Tool::definition)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let client_info = context.peer.peer_info().map(|p| format!("{} {}", p.client_info.name, p.client_info.version));
        let args = request.arguments.unwrap_or_default();
        Ok(self.engine.call(&request.name, args, client_info).await.into())
    }
}
