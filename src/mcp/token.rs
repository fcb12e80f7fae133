//! The HTTP transport's bearer token: read from `PFSYNC_MCP_TOKEN` or `--token-file` (never a flag value),
//! compared in constant time, never logged.

use std::path::Path;

use crate::secret::{ApiKey, SecretError};

/// The environment variable the HTTP bearer token is read from.
pub const TOKEN_ENV: &str = "PFSYNC_MCP_TOKEN";

/// The shortest token taken, in bytes: guessing one is out of reach (`openssl rand -hex 32` gives 64).
pub const MIN_TOKEN_BYTES: usize = 32;

/// Why the server does not start with the token it was given (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("HTTP needs a bearer token: set {TOKEN_ENV} or pass --token-file PATH (never a flag value)")]
    Missing,
    #[error("cannot read --token-file {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error(transparent)]
    Malformed(#[from] SecretError),
    #[error(
        "the bearer token is {len} bytes; it must be at least {MIN_TOKEN_BYTES} (a random one: openssl rand -hex 32)"
    )]
    TooShort { len: usize },
    #[error(
        "the bearer token is a Purple Flea key pfsync holds (the payer's PURPLEFLEA_API_KEY or an \
         [[provider.agent_keys]] key): every MCP client's config would hold that key, and anyone with it could call \
         Purple Flea without pfsync's policy. Give the server a token of its own (openssl rand -hex 32)"
    )]
    ProviderKey,
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

    /// Refused at start: a token short enough to guess, or one that is a provider key.
    pub fn check(&self, provider_keys: &[ApiKey]) -> Result<(), TokenError> {
        let len = self.0.byte_len();
        if len < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { len });
        }
        if provider_keys.iter().any(|k| k.same_as(&self.0)) {
            return Err(TokenError::ProviderKey);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_token_and_a_provider_key_are_refused() {
        let key = |t: &str| ApiKey::new(t, "in a test").unwrap();
        let long = "0123456789abcdef0123456789abcdef";
        let token = Token(key(long));
        assert!(token.check(&[key("pf_test_sandbox")]).is_ok());
        let short = Token(key(&long[1..])).check(&[]).unwrap_err();
        assert_eq!(short.to_string().split(';').next(), Some("the bearer token is 31 bytes"));
        assert!(matches!(token.check(&[key("other"), key(long)]), Err(TokenError::ProviderKey)));
        assert!(!TokenError::ProviderKey.to_string().contains(long), "the key is never shown");
    }
}
