//! `pfsync mcp`: an MCP tool server for agents, in front of the synced tables and the exactly-once engine.
//!
//! - `tools.rs`: the tools, their JSON schemas, and what each does (read tools query the tables; money tools
//!   append a row to the pending or actions table and, under the `execute` policy, run the engine for it);
//! - `policy.rs`: the `[mcp]` section: execute | queue | deny per tool, limits, allowlists;
//! - `audit.rs`: every call into `purpleflea.ops.mcp_calls`.
//!
//! Transports: stdio (the process is the session), and streamable HTTP on loopback, behind a bearer token
//! read from `PFSYNC_MCP_TOKEN` or `--token-file` (never a flag value). No Purple Flea key ever passes
//! through a tool: the server holds it, as `pfsync payouts` does.

pub mod audit;
pub mod policy;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

pub use tools::Engine;

/// The environment variable the HTTP bearer token is read from.
pub const TOKEN_ENV: &str = "PFSYNC_MCP_TOKEN";

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
            .with_instructions(tools::INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::definitions()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::definitions().into_iter().find(|t| t.name == name)
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

/// Serve over stdin/stdout until the client closes them.
pub async fn serve_stdio(server: McpServer) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP over stdio: {e}"))?;
    running.waiting().await.map_err(|e| format!("MCP over stdio: {e}"))?;
    Ok(())
}

/// A bearer token compared in constant time; its text is never logged.
#[derive(Clone)]
pub struct Token(crate::secret::ApiKey);

impl Token {
    pub fn resolve(file: Option<&std::path::Path>) -> Result<Token, String> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
            return crate::secret::ApiKey::new(&text, "in --token-file").map(Token).map_err(|e| e.to_string());
        }
        match std::env::var(TOKEN_ENV) {
            Ok(v) => crate::secret::ApiKey::new(&v, "in PFSYNC_MCP_TOKEN").map(Token).map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "HTTP needs a bearer token: set {TOKEN_ENV} or pass --token-file PATH (never a flag value)"
            )),
        }
    }

    fn accepts(&self, header: Option<&str>) -> bool {
        match header.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(presented) => self.0.matches(presented.trim()),
            None => false,
        }
    }
}

async fn require_token(
    axum::extract::State(token): axum::extract::State<Token>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !token.accepts(header) {
        tracing::warn!("MCP request refused: missing or wrong bearer token");
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Serve streamable HTTP at `http://<listen>/mcp` until Ctrl-C. Loopback only: the tools move money, and
/// this server has no TLS of its own (put a TLS-terminating proxy in front of it on the same host).
pub async fn serve_http(
    server: McpServer,
    listen: SocketAddr,
    token: Token,
    allow_hosts: &[String],
) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    if !listen.ip().to_canonical().is_loopback() {
        return Err(format!(
            "--listen {listen} is not a loopback address: the tools move money and this server speaks plain HTTP. \
             Listen on 127.0.0.1 and put a TLS-terminating proxy in front of it"
        ));
    }
    // Loopback names (rmcp's default), and the names a TLS proxy in front forwards.
    let mut config = StreamableHttpServerConfig::default();
    config.allowed_hosts.extend(allow_hosts.iter().cloned());
    let service: StreamableHttpService<McpServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("pfsync mcp ready at http://{addr}/mcp (bearer token required); Ctrl-C stops it");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("MCP over HTTP: {e}"))
}
