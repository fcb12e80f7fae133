//! The transports: stdio (the process is the session), and streamable HTTP on loopback behind the bearer
//! token.

use std::net::SocketAddr;

use super::McpServer;
use super::token::{Token, require_token};

/// Why serving stopped, or never started.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "--listen {0} is not a loopback address: the tools move money and this server speaks plain HTTP. Listen on \
         127.0.0.1 and put a TLS-terminating proxy in front of it"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("MCP over HTTP: {0}")]
    Http(std::io::Error),
    #[error("MCP over stdio: {0}")]
    Stdio(Box<dyn std::error::Error + Send + Sync>),
}

impl ServeError {
    /// The HTTP transport's errors are the operator's to fix (the address, the port): exit 2.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ServeError::Stdio(_))
    }
}

/// Loopback only: the tools move money, and this server has no TLS of its own.
pub fn check_listen(listen: SocketAddr) -> Result<(), ServeError> {
    if listen.ip().to_canonical().is_loopback() { Ok(()) } else { Err(ServeError::NotLoopback(listen)) }
}

/// Serve over stdin/stdout until the client closes them.
pub async fn serve_stdio(server: McpServer) -> Result<(), ServeError> {
    use rmcp::ServiceExt;
    let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| ServeError::Stdio(Box::new(e)))?;
    running.waiting().await.map_err(|e| ServeError::Stdio(Box::new(e)))?;
    Ok(())
}

/// Serve streamable HTTP at `http://<listen>/mcp` until Ctrl-C (put a TLS-terminating proxy in front of it
/// on the same host).
pub async fn serve_http(
    server: McpServer,
    listen: SocketAddr,
    token: Token,
    allow_hosts: &[String],
) -> Result<(), ServeError> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    check_listen(listen)?;
    // Loopback names (rmcp's default), and the names a TLS proxy in front forwards.
    let mut config = StreamableHttpServerConfig::default();
    config.allowed_hosts.extend(allow_hosts.iter().cloned());
    let service: StreamableHttpService<McpServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| ServeError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: listen, source })?;
    println!("pfsync mcp ready at http://{addr}/mcp (bearer token required); Ctrl-C stops it");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(ServeError::Http)
}
