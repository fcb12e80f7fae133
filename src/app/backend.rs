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
                Ok(Backend::Live(Box::new(LiveProvider::new(ring, live.options.clone())), Box::new(live)))
            }
        }
    }

    /// The client settings the sends run with (their timeout and retry budget bound the in-flight check).
    pub fn client_config(settings: &Settings) -> Result<ClientConfig, AppError> {
        Ok(settings.client_config()?)
    }
}
