//! Which provider the settings choose, connected: the seed's API through one client, or Purple Flea's
//! live services through one client per held key. Steps take a [`Backend`] and branch on it only to pick
//! the provider; what they do with it follows from the provider's declared capabilities.

use super::AppError;
use crate::api::{Client, ClientConfig};
use crate::config::{LiveSettings, ProviderKind, Settings};
use crate::provider::LiveProvider;
use crate::provider::live::keys::KeyRing;

pub enum Backend {
    Seed(Client),
    Live(Box<LiveProvider>, Box<LiveSettings>),
}

impl Backend {
    /// Connect: for `live`, every held key is checked with the casino (whose agent it is) before any step
    /// runs, so a wrong or missing key stops the run before anything is touched.
    pub async fn connect(settings: &Settings) -> Result<Backend, AppError> {
        let template = settings.client_config()?;
        match settings.provider_kind() {
            ProviderKind::Seed => Ok(Backend::Seed(Client::new(template)?)),
            ProviderKind::Live => {
                let live = settings.live()?;
                let payer = template.api_key.clone();
                let ring =
                    KeyRing::connect(&template, &live.casino_url, &live.escrow_url, payer, live.agent_keys.clone())
                        .await?;
                tracing::info!(
                    payer = %ring.payer().agent_id,
                    agents = ring.agents().count(),
                    "live provider: keys checked with the casino"
                );
                let provider =
                    LiveProvider::new(ring, live.options.clone()).with_faucet(faucet_client(&template, &live)?);
                Ok(Backend::Live(Box::new(provider), Box::new(live)))
            }
        }
    }

    /// The client settings the sends run with (their timeout and retry budget bound the in-flight check).
    pub fn client_config(settings: &Settings) -> Result<ClientConfig, AppError> {
        Ok(settings.client_config()?)
    }
}

/// The live faucet's client. The faucet takes no key, so it is never sent one of pfsync's; and it is tried
/// once: its refusals (409 already claimed, 429 once per IP and day) do not pass by waiting a few seconds.
fn faucet_client(template: &ClientConfig, live: &LiveSettings) -> Result<Client, AppError> {
    let mut c = template.clone();
    c.base_url = live.faucet_url.clone();
    c.faucet_url = live.faucet_url.clone();
    c.api_key = crate::secret::ApiKey::new("no-key", "the faucet's placeholder")
        .map_err(|e| AppError::Internal(e.to_string()))?;
    c.keys_honoured = false;
    c.retry.max_attempts = 1;
    Ok(Client::new(c)?)
}
