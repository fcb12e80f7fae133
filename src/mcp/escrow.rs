//! What pfsync knows of the escrow a release, dispute or complete names: the operation that created it (whose
//! escrow it is), its amount (what the call counts toward the limits) and its buyer and seller (for the agent
//! allowlist). From the payout log and the queued create (an escrow made through pfsync), else from the
//! synced escrows tables (the seed's, or the live provider's terms).

use super::dispatch::Engine;
use super::error::{McpError, Nothing};
use super::request::EscrowRef;
use crate::micros::Micros;
use crate::money::Usd;
use crate::payouts::log::LogEvent;
use crate::payouts::requested::EscrowActionRow;
use crate::sync::rows::{EscrowRow, EscrowTermsRow};

/// An escrow as far as this server knows it; each field `None` where nothing says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscrowFacts {
    /// The operation id of its create, where pfsync made it.
    pub created_by: Option<String>,
    pub amount: Option<Usd>,
    /// Buyer and seller.
    pub parties: Option<Vec<String>>,
}

impl EscrowFacts {
    fn learn(&mut self, amount: Option<Usd>, parties: Vec<String>) {
        self.amount = self.amount.or(amount);
        if self.parties.is_none() && !parties.is_empty() {
            self.parties = Some(parties);
        }
    }
}

impl Engine {
    pub(super) async fn escrow_facts(&self, escrow: &EscrowRef) -> Result<EscrowFacts, McpError> {
        let mut facts = EscrowFacts { created_by: escrow.create_action_id.clone(), ..EscrowFacts::default() };
        if let Some(c) = &escrow.create_action_id {
            let sql = format!("SELECT * FROM purpleflea.escrow.actions WHERE action_id = '{c}' AND action = 'create'");
            if let Some(r) = self.typed_rows::<EscrowActionRow>(&sql).await?.into_iter().next() {
                facts.learn(r.amount_usd, r.buyer_agent_id.into_iter().chain(r.seller_agent_id).collect());
            }
        }
        let Some(e) = &escrow.escrow_id else { return Ok(facts) };
        // Every event of an operation carries its agents and amount; the one with the escrow id is its outcome.
        let sql = format!(
            "SELECT * FROM purpleflea.payouts.log WHERE kind = 'escrow_create' AND escrow_id = '{e}' \
             ORDER BY recorded_at LIMIT 1"
        );
        if let Some(r) = self.typed_rows::<LogEvent>(&sql).await?.into_iter().next() {
            facts.created_by = Some(r.operation_id);
            facts.learn(r.amount_usd, r.agent_id.into_iter().chain(r.counterparty_agent_id).collect());
        }
        let sql = format!("SELECT * FROM purpleflea.agents.escrows WHERE escrow_id = '{e}'");
        if let Some(r) = self.typed_rows::<EscrowRow>(&sql).await?.into_iter().next() {
            facts.learn(Some(r.amount_usd), vec![r.buyer_agent_id, r.seller_agent_id]);
        }
        let sql = format!("SELECT * FROM purpleflea.agents.escrow_terms WHERE escrow_id = '{e}'");
        if let Some(r) = self.typed_rows::<EscrowTermsRow>(&sql).await?.into_iter().next() {
            facts.learn(at_least(r.amount_usd), vec![r.creator_agent_id, r.counterparty_agent_id]);
        }
        Ok(facts)
    }
}

impl Engine {
    /// May this client act on the escrow (its own, or one `other_escrows` names)? Then its parties for the
    /// agent allowlist: none without an allowlist, refused with one when they are not known.
    pub(super) fn escrow_admission(
        &self,
        escrow: &EscrowRef,
        facts: &EscrowFacts,
        nothing: Nothing,
    ) -> Result<Vec<String>, McpError> {
        self.policy
            .may_act_on(&self.client, escrow.escrow_id.as_deref(), facts.created_by.as_deref())
            .map_err(|refusal| McpError::NotAdmitted { refusal, nothing })?;
        match (&self.policy.allowed_agents, &facts.parties) {
            (None, _) => Ok(vec![]),
            (Some(_), Some(parties)) => Ok(parties.clone()),
            (Some(_), None) => Err(McpError::PartiesUnknown),
        }
    }
}

/// An amount in micros as the cents a limit counts: rounded up, so a limit is never passed by a fraction.
fn at_least(m: Micros) -> Option<Usd> {
    m.to_usd_exact().or_else(|| Usd::from_cents(m.raw() / 10_000 + 1).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_count_as_the_cents_at_or_above_them() {
        let usd = |t: &str| Usd::parse(t).unwrap();
        assert_eq!(at_least(Micros::parse("10").unwrap()), Some(usd("10.00")));
        assert_eq!(at_least(Micros::parse("10.000001").unwrap()), Some(usd("10.01")));
        assert_eq!(at_least(Micros::parse("0.019999").unwrap()), Some(usd("0.02")));
    }
}
