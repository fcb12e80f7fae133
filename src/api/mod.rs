//! The Purple Flea API as pfsync speaks it: typed models, the HTTP client, retries and rate limits, and
//! idempotency keys.

pub mod client;
pub mod cursor;
pub mod error;
pub mod idempotency;
pub mod models;
pub mod ratelimit;
pub mod retry;

pub use client::{
    Client, ClientConfig, DEFAULT_API_URL, DEFAULT_FAUCET_URL, IDEMPOTENCY_HEADER, REPLAYED_HEADER, Sent, check_url,
    shown, shown_text,
};
pub use error::ApiError;
pub use idempotency::IdempotencyKey;
pub use models::*;
pub use retry::RetryPolicy;
