//! Transport: one HTTP client beneath every provider and service pfsync speaks to (the payment providers,
//! MLflow, Unity Catalog go through their own small clients but follow the same rules): URLs checked
//! before a key is sent, retries that never repeat a request that may have run unless its provider
//! replays it, a client-side rate limit, a concurrency limit and a cap on response bodies. Every client
//! is built from [`outbound::client_builder`]: no proxy from the environment, no redirects.

pub mod client;
pub mod date;
pub mod error;
pub mod idempotency;
pub mod outbound;
pub mod ratelimit;
pub mod retry;
pub mod skew;
pub mod url;

pub use client::{Client, ClientConfig, ErrorBody, IDEMPOTENCY_HEADER, REPLAYED_HEADER, Repeat, Sent};
pub use date::DateProbe;
pub use error::HttpError;
pub use idempotency::IdempotencyKey;
pub use outbound::{PROXY_VARS, client_builder, parse_proxy};
pub use retry::RetryPolicy;
pub use skew::ClockOffset;
pub use url::{check_url, is_loopback, shown, shown_text};
