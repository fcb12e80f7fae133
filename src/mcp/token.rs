//! The HTTP transport's bearer token: read from `PFSYNC_MCP_TOKEN` or `--token-file` (never a flag value),
//! compared in constant time, never logged.

use std::path::Path;

use crate::secret::{ApiKey, SecretError};

/// The environment variable the HTTP bearer token is read from.
pub const TOKEN_ENV: &str = "PFSYNC_MCP_TOKEN";

/// Why the server does not start with the token it was given (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("HTTP needs a bearer token: set {TOKEN_ENV} or pass --token-file PATH (never a flag value)")]
    Missing,
    #[error("cannot read --token-file {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error(transparent)]
    Malformed(#[from] SecretError),
}

/// A bearer token compared in constant time; its text is never logged.
#[derive(Clone)]
pub struct Token(ApiKey);

impl Token {
    pub fn resolve(file: Option<&Path>) -> Result<Token, TokenError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| TokenError::Unreadable { path: path.display().to_string(), source })?;
            return Ok(Token(ApiKey::new(&text, "in --token-file")?));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(v) => Ok(Token(ApiKey::new(&v, "in PFSYNC_MCP_TOKEN")?)),
            Err(_) => Err(TokenError::Missing),
        }
    }

    fn accepts(&self, header: Option<&str>) -> bool {
        match header.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(presented) => self.0.matches(presented.trim()),
            None => false,
        }
    }
}

/// Every HTTP request passes here first: without the token, a 401 before any tool runs.
pub(super) async fn require_token(
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
