//! Keys per agent. At Purple Flea's live services one key is one agent: every call acts as the key's
//! owner. pfsync holds the payer's key (the pipeline's orchestrator agent, which pays and creates escrows)
//! and the keys of any agents the team owns (to complete escrows as their counterparty, to sync their
//! wallets and ledgers). Which agent a key belongs to is asked of the provider (`GET /auth/balance`), never
//! configured, so a key cannot be filed under the wrong agent.

use std::collections::BTreeMap;

use url::Url;

use super::error::LiveError;
use super::wire::Balance;
use crate::http::{Client, ClientConfig, Repeat};
use crate::secret::ApiKey;

/// One held key: the agent it acts as, and a client per service.
pub struct Agent {
    pub agent_id: String,
    pub casino: Client,
    pub escrow: Client,
}

pub struct KeyRing {
    payer: String,
    agents: BTreeMap<String, Agent>,
}

impl KeyRing {
    /// Ask the casino whose each key is. A key it refuses stops the run (401, naming where the key came
    /// from), before anything moves. `repeat` is the live services' rule (no POST is ever repeated after
    /// an ambiguous failure: none of them reads an idempotency key).
    pub async fn connect(
        template: &ClientConfig,
        casino: &Url,
        escrow: &Url,
        payer: ApiKey,
        others: Vec<(ApiKey, String)>,
        repeat: Repeat,
    ) -> Result<KeyRing, LiveError> {
        let mut agents = BTreeMap::new();
        let mut payer_id = None;
        let payer = (payer, template.key_origin.clone());
        for (i, (key, origin)) in std::iter::once(payer).chain(others).enumerate() {
            let client = |base: &Url| {
                let mut c = template.at(base.clone());
                c.api_key = Some(key.clone());
                c.key_origin = origin.clone();
                Client::new(c, repeat)
            };
            let casino_client = client(casino)?;
            let balance: Balance = casino_client.get_json(&["auth", "balance"]).await.map_err(LiveError::from_http)?;
            let id = balance.agent_id;
            if agents.contains_key(&id) {
                return Err(LiveError::Setting(format!(
                    "two of the configured keys belong to agent {id}; give each agent's key once"
                )));
            }
            if i == 0 {
                payer_id = Some(id.clone());
            }
            agents.insert(id.clone(), Agent { agent_id: id, casino: casino_client, escrow: client(escrow)? });
        }
        let payer = payer_id.ok_or_else(|| LiveError::Setting("no payer key".into()))?;
        Ok(KeyRing { payer, agents })
    }

    pub fn payer(&self) -> &Agent {
        &self.agents[&self.payer]
    }

    pub fn get(&self, agent_id: &str) -> Option<&Agent> {
        self.agents.get(agent_id)
    }

    pub fn holds(&self, agent_id: &str) -> bool {
        self.agents.contains_key(agent_id)
    }

    /// Every held agent, the payer first.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        std::iter::once(self.payer()).chain(self.agents.values().filter(|a| a.agent_id != self.payer))
    }
}
