//! The seed contract's endpoints, typed: its POSTs (each answer says whether the provider replayed it), its
//! reads and its cursor-paged lists. Two bases, as the contract has them: the API and the faucet, one key,
//! one rate limit each.

use futures::Stream;
use url::Url;

use super::cursor::CursorTrail;
use super::error::SeedError;
use super::wire::*;
use crate::http::{Client, ClientConfig, IdempotencyKey, Repeat, Sent};
use crate::provider::records::{Escrow, ListQuery, Page, Wallet};

pub const DEFAULT_API_URL: &str = "https://purpleflea.com/api";
pub const DEFAULT_FAUCET_URL: &str = "https://faucet.purpleflea.com/api";

/// A client of the seed's API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SeedClient {
    api: Client,
    faucet: Client,
}

impl SeedClient {
    /// `cfg` against the API base, the faucet at `faucet_url` with the same key and limits. `repeat` comes
    /// from what the deployment declares (`Capabilities::repeat`).
    pub fn new(cfg: ClientConfig, faucet_url: Url, repeat: Repeat) -> Result<SeedClient, SeedError> {
        let faucet = Client::new(cfg.at(faucet_url), repeat)?;
        Ok(SeedClient { api: Client::new(cfg, repeat)?, faucet })
    }

    pub fn config(&self) -> &ClientConfig {
        self.api.config()
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        client: &Client,
        segments: &[&str],
        body: &B,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<T>, SeedError> {
        client.post(segments, body, key).await.map_err(SeedError::from_http)
    }

    pub async fn payout(
        &self,
        req: &PayoutRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<PayoutResponse>, SeedError> {
        Self::post(&self.api, &["wallet", "payout"], req, key).await
    }

    pub async fn escrow_create(
        &self,
        req: &EscrowCreateRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<Escrow>, SeedError> {
        Self::post(&self.api, &["escrow", "create"], req, key).await
    }

    pub async fn escrow_release(
        &self,
        escrow_id: &str,
        req: &EscrowActionRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<EscrowActionResponse>, SeedError> {
        Self::post(&self.api, &["escrow", escrow_id, "release"], req, key).await
    }

    pub async fn escrow_dispute(
        &self,
        escrow_id: &str,
        req: &EscrowActionRequest,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<EscrowActionResponse>, SeedError> {
        Self::post(&self.api, &["escrow", escrow_id, "dispute"], req, key).await
    }

    pub async fn faucet_claim(
        &self,
        agent_id: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Sent<FaucetClaimResponse>, SeedError> {
        Self::post(&self.faucet, &["claim"], &FaucetClaimRequest { agent_id: agent_id.to_string() }, key).await
    }

    pub async fn wallet(&self, agent_id: &str) -> Result<Wallet, SeedError> {
        self.api.get_json(&["wallet", agent_id]).await.map_err(SeedError::from_http)
    }

    pub async fn escrow(&self, escrow_id: &str) -> Result<Escrow, SeedError> {
        self.api.get_json(&["escrow", escrow_id]).await.map_err(SeedError::from_http)
    }

    /// One page of a list endpoint; each row decoded on its own (see [`decode_rows`]).
    pub async fn list<T: Listed>(&self, query: &ListQuery) -> Result<Page<T>, SeedError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(l) = query.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(c) = &query.cursor {
            params.push(("cursor", c.clone()));
        }
        if let Some(s) = &query.since {
            params.push((T::SINCE_PARAM, s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        }
        if let Some(k) = &query.idempotency_key {
            params.push(("idempotency_key", k.clone()));
        }
        let raw: RawPage = self.api.get(&[T::PATH], &params).await.map_err(SeedError::from_http)?;
        Ok(decode_rows(raw))
    }

    /// Every page of a list endpoint, following `next_cursor` until it is null. A cursor this listing
    /// followed before, or one too long to be a cursor, ends it with [`SeedError::Paging`] instead of the
    /// page that carried it (see [`CursorTrail`]).
    pub fn pages<T: Listed>(&self, query: ListQuery) -> impl Stream<Item = Result<Page<T>, SeedError>> + Send + '_ {
        let start = (Some(query), CursorTrail::default());
        futures::stream::try_unfold(start, move |(state, mut trail)| async move {
            let Some(query) = state else { return Ok(None) };
            let page = self.list::<T>(&query).await?;
            let next = match &page.next_cursor {
                None => None,
                Some(c) => {
                    trail
                        .follow(c)
                        .map_err(|detail| SeedError::Paging { endpoint: format!("GET /{}", T::PATH), detail })?;
                    Some(ListQuery { cursor: Some(c.clone()), ..query.clone() })
                }
            };
            Ok(Some((page, (next, trail))))
        })
    }
}
