//! The sandbox's books: agents, escrows and a closed transaction ledger, moved exactly as the contract says.
//! Pure state, no HTTP: the routes call these methods under one lock, and the tests call them directly.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use serde_json::Value;

use super::cursor::Cursor;
pub use super::refusal::{ContractError, MAX_ID_LEN};
use crate::money::Usd;
use crate::provider::seed::wire::*;
use crate::rng::SplitMix64;

/// The id of the seeded buyer that funds escrows in the demo and the seed's bounty flow.
pub const ORCHESTRATOR_AGENT: &str = "databricks-pipeline-orchestrator";
/// Longest free-text field the sandbox accepts (reason, description); documented in `api/openapi.yaml`.
pub const MAX_TEXT_LEN: usize = 4096;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 100;

/// How the sandbox seeds its world.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    pub agents: usize,
    pub seed: u64,
    /// Credited once per agent by the faucet.
    pub faucet_amount: Usd,
    /// Opening balance of the orchestrator agent (funded through an opening payout, as the closed ledger
    /// requires).
    pub orchestrator_balance: Usd,
    /// Escrows the orchestrator opens with seeded agents at start: a third stay funded, a third are
    /// released, a third refunded. `None`: one per ten agents.
    pub escrows: Option<usize>,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            agents: 100,
            seed: 42,
            faucet_amount: Usd::from_cents(10_00).unwrap_or(Usd::ZERO),
            orchestrator_balance: Usd::from_cents(100_000_000).unwrap_or(Usd::ZERO),
            escrows: None,
        }
    }
}

/// A transaction about to be appended.
struct TxDraft<'a> {
    kind: TxKind,
    agent_id: &'a str,
    counterparty: Option<&'a str>,
    amount: Usd,
    key: Option<&'a str>,
    reference: &'a str,
}

struct AgentState {
    wallet: Wallet,
    faucet_claimed: bool,
}

/// A stored transaction with its ordering key.
struct TxRow {
    at: i64,
    tx: Transaction,
}

pub struct Ledger {
    last_tick: i64,
    agents: HashMap<String, AgentState>,
    /// `(updated_at µs, agent_id)`: the wallets page order.
    wallet_order: BTreeSet<(i64, String)>,
    escrows: HashMap<String, Escrow>,
    escrow_order: BTreeSet<(i64, String)>,
    /// Append-only, ordered by `(created_at, tx_id)` because both grow with every append.
    txs: Vec<TxRow>,
    txs_by_key: HashMap<String, Vec<usize>>,
    next_tx: u64,
    next_escrow: u64,
    faucet_amount: Usd,
}

fn micros_to_time(m: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(m).single().unwrap_or_default()
}

impl Ledger {
    /// A world of `agents` seeded agents (`agent-000001`...) plus the orchestrator, each with an opening
    /// balance paid in through the ledger. Same seed, same agents, addresses, codes and balances.
    pub fn seeded(cfg: &SeedConfig) -> Ledger {
        let mut ledger = Ledger {
            last_tick: 0,
            agents: HashMap::with_capacity(cfg.agents + 1),
            wallet_order: BTreeSet::new(),
            escrows: HashMap::new(),
            escrow_order: BTreeSet::new(),
            txs: Vec::with_capacity(cfg.agents + 1),
            txs_by_key: HashMap::new(),
            next_tx: 1,
            next_escrow: 1,
            faucet_amount: cfg.faucet_amount,
        };
        let mut rng = SplitMix64::new(cfg.seed);
        let epoch = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let enrol = |ledger: &mut Ledger, id: String, opening: Usd, rng: &mut SplitMix64| {
            let registered_at = epoch + ChronoDuration::seconds(rng.range(0, 300 * 86_400) as i64);
            let wallet_address =
                format!("0x{:016x}{:016x}{:08x}", rng.next_u64(), rng.next_u64(), rng.next_u64() as u32);
            let referral_code = format!("PF{:08X}", rng.next_u64() as u32);
            let now = ledger.tick();
            let wallet = Wallet {
                agent_id: id.clone(),
                wallet_address: Some(wallet_address),
                balance_usd: Usd::ZERO,
                active_escrow_count: 0,
                total_earned_usd: Usd::ZERO,
                referral_code: Some(referral_code),
                registered_at,
                updated_at: micros_to_time(now),
            };
            ledger.wallet_order.insert((now, id.clone()));
            ledger.agents.insert(id.clone(), AgentState { wallet, faucet_claimed: false });
            if opening > Usd::ZERO {
                // Opening balances enter through the ledger (a payout), never by setting a number.
                let _ = ledger.payout(&id, opening, "opening balance", None);
            }
        };
        enrol(&mut ledger, ORCHESTRATOR_AGENT.to_string(), cfg.orchestrator_balance, &mut rng);
        for i in 1..=cfg.agents {
            let opening = Usd::from_cents(rng.range(0, 50_000) as i64).unwrap_or(Usd::ZERO);
            enrol(&mut ledger, format!("agent-{i:06}"), opening, &mut rng);
        }
        let escrows = if cfg.agents == 0 { 0 } else { cfg.escrows.unwrap_or(cfg.agents / 10) };
        for n in 0..escrows {
            let seller = format!("agent-{:06}", rng.range(1, cfg.agents as u64));
            let req = EscrowCreateRequest {
                buyer_agent_id: ORCHESTRATOR_AGENT.to_string(),
                seller_agent_id: seller,
                amount_usd: Usd::from_cents(rng.range(100, 20_000) as i64).unwrap_or(Usd::ZERO),
                description: format!("Data labeling task seed-{n}"),
                metadata: Some(serde_json::json!({"task_id": format!("seed-{n}"), "source": "sandbox-seed"})),
            };
            if let Ok(e) = ledger.escrow_create(&req, None) {
                match n % 3 {
                    1 => drop(ledger.escrow_settle(&e.escrow_id, "Quality rate 92.0% passed threshold", true, None)),
                    2 => {
                        drop(ledger.escrow_settle(&e.escrow_id, "Quality rate 61.0% below 80% threshold", false, None))
                    }
                    _ => {}
                }
            }
        }
        ledger
    }

    /// Strictly increasing microsecond clock: two changes never share an `updated_at`, so the page order
    /// is total and a changed row always moves behind every cursor already handed out.
    fn tick(&mut self) -> i64 {
        let now = Utc::now().timestamp_micros();
        self.last_tick = now.max(self.last_tick + 1);
        self.last_tick
    }

    fn agent_mut(&mut self, id: &str) -> Result<&mut AgentState, ContractError> {
        self.agents.get_mut(id).ok_or_else(|| ContractError::agent_not_found(id))
    }

    /// Apply a balance change to one wallet and move it in the page order.
    fn touch_wallet(&mut self, id: &str, now: i64, f: impl FnOnce(&mut Wallet)) {
        if let Some(a) = self.agents.get_mut(id) {
            let old = a.wallet.updated_at.timestamp_micros();
            f(&mut a.wallet);
            a.wallet.updated_at = micros_to_time(now);
            self.wallet_order.remove(&(old, id.to_string()));
            self.wallet_order.insert((now, id.to_string()));
        }
    }

    fn record_tx(&mut self, now: i64, draft: TxDraft<'_>) -> Transaction {
        let TxDraft { kind, agent_id, counterparty, amount, key, reference } = draft;
        let tx = Transaction {
            tx_id: format!("tx_{:012}", self.next_tx),
            kind,
            agent_id: agent_id.to_string(),
            counterparty_agent_id: counterparty.map(str::to_string),
            amount_usd: amount,
            idempotency_key: key.map(str::to_string),
            reference: Some(reference.to_string()),
            created_at: micros_to_time(now),
        };
        self.next_tx += 1;
        if let Some(k) = key {
            self.txs_by_key.entry(k.to_string()).or_default().push(self.txs.len());
        }
        self.txs.push(TxRow { at: now, tx: tx.clone() });
        tx
    }

    // ---- operations ----

    /// Treasury-funded: raises the agent's balance and lifetime earnings.
    pub fn payout(
        &mut self,
        agent_id: &str,
        amount: Usd,
        reason: &str,
        key: Option<&str>,
    ) -> Result<PayoutResponse, ContractError> {
        check_text("reason", reason)?;
        let amount = positive(amount)?;
        let a = self.agent_mut(agent_id)?;
        let balance = add(a.wallet.balance_usd, amount)?;
        let earned = add(a.wallet.total_earned_usd, amount)?;
        let now = self.tick();
        self.touch_wallet(agent_id, now, |w| {
            w.balance_usd = balance;
            w.total_earned_usd = earned;
        });
        let tx = self.record_tx(
            now,
            TxDraft { kind: TxKind::Payout, agent_id, counterparty: None, amount, key, reference: reason },
        );
        Ok(PayoutResponse {
            tx_id: tx.tx_id,
            agent_id: agent_id.to_string(),
            amount_usd: amount,
            status: "completed".to_string(),
            created_at: tx.created_at,
        })
    }

    /// Locks the amount from the buyer's balance into a funded escrow.
    pub fn escrow_create(&mut self, req: &EscrowCreateRequest, key: Option<&str>) -> Result<Escrow, ContractError> {
        check_text("description", &req.description)?;
        let amount = positive(req.amount_usd)?;
        if req.buyer_agent_id == req.seller_agent_id {
            return Err(ContractError::invalid("buyer_agent_id and seller_agent_id must differ"));
        }
        if let Some(m) = &req.metadata {
            if !(m.is_object() || m.is_null()) {
                return Err(ContractError::invalid("metadata must be a JSON object"));
            }
            if m.to_string().len() > 4 * MAX_TEXT_LEN {
                return Err(ContractError::invalid("metadata is larger than 16384 bytes"));
            }
        }
        self.agent_mut(&req.seller_agent_id)?;
        let buyer = self.agent_mut(&req.buyer_agent_id)?;
        if buyer.wallet.balance_usd < amount {
            return Err(ContractError::new(
                402,
                "insufficient_funds",
                format!("balance {} is less than {}", buyer.wallet.balance_usd, amount),
            ));
        }
        let balance = buyer.wallet.balance_usd.checked_sub(amount).ok_or_else(|| ContractError::invalid("amount"))?;
        let now = self.tick();
        let escrow_id = format!("esc_{:012}", self.next_escrow);
        self.next_escrow += 1;
        self.touch_wallet(&req.buyer_agent_id, now, |w| {
            w.balance_usd = balance;
            w.active_escrow_count += 1;
        });
        self.touch_wallet(&req.seller_agent_id, now, |w| w.active_escrow_count += 1);
        let draft = TxDraft {
            kind: TxKind::EscrowLock,
            agent_id: &req.buyer_agent_id,
            counterparty: Some(&req.seller_agent_id),
            amount,
            key,
            reference: &escrow_id,
        };
        self.record_tx(now, draft);
        let escrow = Escrow {
            escrow_id: escrow_id.clone(),
            buyer_agent_id: req.buyer_agent_id.clone(),
            seller_agent_id: req.seller_agent_id.clone(),
            amount_usd: amount,
            description: req.description.clone(),
            metadata: req.metadata.clone().filter(|m| !m.is_null()),
            status: EscrowStatus::Funded,
            created_at: micros_to_time(now),
            updated_at: micros_to_time(now),
            tx_id: None,
        };
        self.escrow_order.insert((now, escrow_id.clone()));
        self.escrows.insert(escrow_id, escrow.clone());
        Ok(escrow)
    }

    /// Release to the seller (`to_seller`) or refund to the buyer (dispute). Only a funded escrow moves.
    pub fn escrow_settle(
        &mut self,
        escrow_id: &str,
        reason: &str,
        to_seller: bool,
        key: Option<&str>,
    ) -> Result<EscrowActionResponse, ContractError> {
        check_text("reason", reason)?;
        let e = self.escrows.get(escrow_id).ok_or_else(|| ContractError::escrow_not_found(escrow_id))?;
        if e.status != EscrowStatus::Funded {
            return Err(ContractError::new(
                409,
                "invalid_state",
                format!("escrow {} is {}, not funded", escrow_id, e.status.as_str()),
            ));
        }
        let (buyer, seller, amount) = (e.buyer_agent_id.clone(), e.seller_agent_id.clone(), e.amount_usd);
        let (payee, other, kind, status) = if to_seller {
            (&seller, &buyer, TxKind::EscrowRelease, EscrowStatus::Released)
        } else {
            (&buyer, &seller, TxKind::EscrowRefund, EscrowStatus::Refunded)
        };
        let payee_wallet = &self.agent_mut(payee)?.wallet;
        let balance = add(payee_wallet.balance_usd, amount)?;
        let earned =
            if to_seller { add(payee_wallet.total_earned_usd, amount)? } else { payee_wallet.total_earned_usd };
        let now = self.tick();
        self.touch_wallet(payee, now, |w| {
            w.balance_usd = balance;
            w.total_earned_usd = earned;
            w.active_escrow_count -= 1;
        });
        self.touch_wallet(other, now, |w| w.active_escrow_count -= 1);
        let tx = self.record_tx(
            now,
            TxDraft { kind, agent_id: payee, counterparty: Some(other), amount, key, reference: escrow_id },
        );
        if let Some(e) = self.escrows.get_mut(escrow_id) {
            let old = e.updated_at.timestamp_micros();
            e.status = status;
            e.tx_id = Some(tx.tx_id.clone());
            e.updated_at = micros_to_time(now);
            self.escrow_order.remove(&(old, escrow_id.to_string()));
            self.escrow_order.insert((now, escrow_id.to_string()));
        }
        Ok(EscrowActionResponse { tx_id: tx.tx_id, escrow_id: escrow_id.to_string(), status })
    }

    /// Once per agent.
    pub fn faucet_claim(&mut self, agent_id: &str, key: Option<&str>) -> Result<FaucetClaimResponse, ContractError> {
        let amount = self.faucet_amount;
        let a = self.agent_mut(agent_id)?;
        if a.faucet_claimed {
            return Err(ContractError::new(
                409,
                "invalid_state",
                format!("agent {agent_id:?} already claimed the faucet"),
            ));
        }
        a.faucet_claimed = true;
        let balance = add(a.wallet.balance_usd, amount)?;
        let now = self.tick();
        self.touch_wallet(agent_id, now, |w| w.balance_usd = balance);
        let tx = self.record_tx(
            now,
            TxDraft { kind: TxKind::Faucet, agent_id, counterparty: None, amount, key, reference: "faucet" },
        );
        Ok(FaucetClaimResponse { tx_id: tx.tx_id, agent_id: agent_id.to_string(), amount_usd: amount })
    }

    // ---- reads ----

    pub fn wallet(&self, agent_id: &str) -> Result<Wallet, ContractError> {
        self.agents.get(agent_id).map(|a| a.wallet.clone()).ok_or_else(|| ContractError::agent_not_found(agent_id))
    }

    pub fn escrow(&self, escrow_id: &str) -> Result<Escrow, ContractError> {
        self.escrows.get(escrow_id).cloned().ok_or_else(|| ContractError::escrow_not_found(escrow_id))
    }

    pub fn list_wallets(&self, q: &ListQuery) -> Result<(Vec<Wallet>, Option<String>), ContractError> {
        let (keys, next) = page_of(&self.wallet_order, q)?;
        let rows = keys.iter().filter_map(|(_, id)| self.agents.get(id).map(|a| a.wallet.clone())).collect();
        Ok((rows, next))
    }

    pub fn list_escrows(&self, q: &ListQuery) -> Result<(Vec<Escrow>, Option<String>), ContractError> {
        let (keys, next) = page_of(&self.escrow_order, q)?;
        let rows = keys.iter().filter_map(|(_, id)| self.escrows.get(id).cloned()).collect();
        Ok((rows, next))
    }

    pub fn list_transactions(&self, q: &ListQuery) -> Result<(Vec<Transaction>, Option<String>), ContractError> {
        let limit = page_limit(q.limit)?;
        let after = q.cursor.as_deref().map(Cursor::decode).transpose()?;
        let since = q.since.map(|s| s.timestamp_micros());
        let after_ok = |row: &TxRow| match &after {
            Some(c) => (row.at, row.tx.tx_id.as_str()) > (c.at, c.id.as_str()),
            None => true,
        };
        let since_ok = |row: &TxRow| since.is_none_or(|s| row.at >= s);
        let mut out: Vec<&TxRow> = Vec::with_capacity(limit + 1);
        match &q.idempotency_key {
            Some(k) => {
                for &i in self.txs_by_key.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                    let row = &self.txs[i];
                    if after_ok(row) && since_ok(row) {
                        out.push(row);
                        if out.len() > limit {
                            break;
                        }
                    }
                }
            }
            None => {
                // Rows are sorted by (at, tx_id): binary-search the first row past the cursor and `since`.
                let start = self.txs.partition_point(|r| !(after_ok(r) && since_ok(r)));
                out.extend(self.txs[start..].iter().take(limit + 1));
            }
        }
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|r| Cursor { at: r.at, id: r.tx.tx_id.clone() }.encode())
        } else {
            None
        };
        Ok((out.into_iter().map(|r| r.tx.clone()).collect(), next))
    }

    // ---- admin controls: plant discrepancies for reconciliation tests (`pfsync sandbox --admin`) ----

    /// Signed effect of a transaction on its agent's balance.
    fn effect(kind: TxKind, amount: Usd) -> i64 {
        match kind {
            TxKind::EscrowLock => -amount.cents(),
            _ => amount.cents(),
        }
    }

    fn adjust_balance(&mut self, agent_id: &str, delta_cents: i64) -> Result<(), ContractError> {
        let a = self.agent_mut(agent_id)?;
        let b = Usd::from_cents(a.wallet.balance_usd.cents() + delta_cents)
            .map_err(|_| ContractError::invalid("balance out of range"))?;
        let now = self.tick();
        self.touch_wallet(agent_id, now, |w| w.balance_usd = b);
        Ok(())
    }

    /// Append a transaction outside the contract's operations (the agent's balance follows, so the books
    /// stay closed): a duplicate, or one carrying a key nobody logged.
    pub fn admin_insert_tx(
        &mut self,
        kind: TxKind,
        agent_id: &str,
        counterparty: Option<&str>,
        amount: Usd,
        key: Option<&str>,
        reference: &str,
    ) -> Result<Transaction, ContractError> {
        self.adjust_balance(agent_id, Self::effect(kind, amount))?;
        let now = self.tick();
        Ok(self.record_tx(now, TxDraft { kind, agent_id, counterparty, amount, key, reference }))
    }

    /// Set a balance without a transaction: the one control that opens the books (a balance mismatch).
    pub fn admin_set_balance(&mut self, agent_id: &str, balance: Usd) -> Result<(), ContractError> {
        let current = self.wallet(agent_id)?.balance_usd;
        self.adjust_balance(agent_id, balance.cents() - current.cents())
    }

    /// The closed-ledger invariant: every balance is the sum of its transactions, and the money in the
    /// system is what came in (payouts from the treasury, faucet) less what funded escrows hold. The fault
    /// simulation checks it after every scenario.
    pub fn check_books(&self) -> Result<(), String> {
        let mut per_agent: HashMap<&str, i64> = HashMap::new();
        let (mut inflow, mut held, mut total) = (0i64, 0i64, 0i64);
        for t in self.transactions() {
            let c = t.amount_usd.cents();
            if matches!(t.kind, TxKind::Payout | TxKind::Faucet) {
                inflow += c;
            }
            *per_agent.entry(&t.agent_id).or_default() += Self::effect(t.kind, t.amount_usd);
        }
        for e in self.escrows() {
            if e.status == EscrowStatus::Funded {
                held += e.amount_usd.cents();
            }
        }
        for w in self.wallets() {
            let implied = per_agent.get(w.agent_id.as_str()).copied().unwrap_or(0);
            if w.balance_usd.cents() != implied {
                return Err(format!("{}: balance {} but transactions imply {}", w.agent_id, w.balance_usd, implied));
            }
            total += w.balance_usd.cents();
        }
        if total + held != inflow {
            return Err(format!("balances {total} + held in escrow {held} != money paid in {inflow} (cents)"));
        }
        Ok(())
    }

    // ---- views for tests and the demo ----

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn transactions(&self) -> impl Iterator<Item = &Transaction> {
        self.txs.iter().map(|r| &r.tx)
    }

    pub fn wallets(&self) -> impl Iterator<Item = &Wallet> {
        self.agents.values().map(|a| &a.wallet)
    }

    pub fn escrows(&self) -> impl Iterator<Item = &Escrow> {
        self.escrows.values()
    }
}

/// One page of an `(updated_at, id)` index.
/// Index keys of one page, and the cursor of the next page.
type PageKeys<'a> = (Vec<&'a (i64, String)>, Option<String>);

fn page_of<'a>(index: &'a BTreeSet<(i64, String)>, q: &ListQuery) -> Result<PageKeys<'a>, ContractError> {
    let limit = page_limit(q.limit)?;
    if q.idempotency_key.is_some() {
        return Err(ContractError::invalid("idempotency_key filters transactions only"));
    }
    let since = q.since.map(|s| s.timestamp_micros());
    let lower = match q.cursor.as_deref().map(Cursor::decode).transpose()? {
        Some(c) => Bound::Excluded((c.at, c.id)),
        None => match since {
            Some(s) => Bound::Included((s, String::new())),
            None => Bound::Unbounded,
        },
    };
    let mut rows: Vec<&(i64, String)> = index
        .range((lower, Bound::Unbounded))
        .filter(|(at, _)| since.is_none_or(|s| *at >= s))
        .take(limit + 1)
        .collect();
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(at, id)| Cursor { at: *at, id: id.clone() }.encode())
    } else {
        None
    };
    Ok((rows, next))
}

fn page_limit(limit: Option<u32>) -> Result<usize, ContractError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        l @ 1..=MAX_PAGE => Ok(l as usize),
        l => Err(ContractError::invalid(format!("limit must be 1..={MAX_PAGE}, got {l}"))),
    }
}

fn positive(amount: Usd) -> Result<Usd, ContractError> {
    amount.positive().map_err(|e| ContractError::invalid(e.to_string()))
}

fn add(a: Usd, b: Usd) -> Result<Usd, ContractError> {
    a.checked_add(b).ok_or_else(|| ContractError::invalid("amount would overflow the balance"))
}

fn check_text(field: &str, text: &str) -> Result<(), ContractError> {
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(ContractError::invalid(format!("{field} is longer than {MAX_TEXT_LEN} characters")));
    }
    Ok(())
}

/// Extra fields of a release body are accepted and ignored (the seed's MLflow callback sends some).
pub fn reason_of(body: &Value) -> Result<&str, ContractError> {
    body.get("reason")
        .and_then(Value::as_str)
        .ok_or_else(|| ContractError::invalid("reason is required and must be a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        Usd::parse(s).unwrap()
    }

    fn world() -> Ledger {
        Ledger::seeded(&SeedConfig { agents: 20, ..SeedConfig::default() })
    }

    fn assert_books_balance(l: &Ledger) {
        l.check_books().unwrap();
    }

    #[test]
    fn seeding_is_deterministic_and_balanced() {
        let a = world();
        let b = world();
        let wa = a.wallet("agent-000007").unwrap();
        let wb = b.wallet("agent-000007").unwrap();
        assert_eq!(
            (wa.wallet_address, wa.balance_usd, wa.registered_at),
            (wb.wallet_address, wb.balance_usd, wb.registered_at)
        );
        assert_eq!(a.agent_count(), 21);
        assert_books_balance(&a);
    }

    #[test]
    fn money_moves_as_the_contract_says() {
        let mut l = world();
        let before = l.wallet("agent-000001").unwrap();
        l.payout("agent-000001", usd("12.50"), "task-1", Some("k1")).unwrap();
        let after = l.wallet("agent-000001").unwrap();
        assert_eq!(after.balance_usd.cents() - before.balance_usd.cents(), 1250);
        assert_eq!(after.total_earned_usd.cents() - before.total_earned_usd.cents(), 1250);
        assert!(after.updated_at > before.updated_at);

        let req = EscrowCreateRequest {
            buyer_agent_id: ORCHESTRATOR_AGENT.into(),
            seller_agent_id: "agent-000002".into(),
            amount_usd: usd("50"),
            description: "labeling".into(),
            metadata: Some(serde_json::json!({"task_id": "t1"})),
        };
        let e = l.escrow_create(&req, None).unwrap();
        assert_eq!(l.wallet("agent-000002").unwrap().active_escrow_count, 1);
        assert_books_balance(&l);
        let seller_before = l.wallet("agent-000002").unwrap().balance_usd;
        let r = l.escrow_settle(&e.escrow_id, "passed", true, None).unwrap();
        assert_eq!(r.status, EscrowStatus::Released);
        assert_eq!(l.wallet("agent-000002").unwrap().balance_usd.cents() - seller_before.cents(), 5000);
        assert_eq!(l.wallet("agent-000002").unwrap().active_escrow_count, 0);
        let again = l.escrow_settle(&e.escrow_id, "again", false, None).unwrap_err();
        assert_eq!((again.status, again.code), (409, "invalid_state"));
        assert_books_balance(&l);

        let e2 = l.escrow_create(&req, None).unwrap();
        let buyer_before = l.wallet(ORCHESTRATOR_AGENT).unwrap().balance_usd;
        l.escrow_settle(&e2.escrow_id, "failed QA", false, None).unwrap();
        assert_eq!(l.wallet(ORCHESTRATOR_AGENT).unwrap().balance_usd.cents() - buyer_before.cents(), 5000);
        assert_books_balance(&l);
    }

    #[test]
    fn refusals_carry_contract_codes() {
        let mut l = world();
        let e = l.payout("nobody", usd("1"), "r", None).unwrap_err();
        assert_eq!((e.status, e.code), (404, "agent_not_found"));
        let e = l.payout("agent-000001", Usd::ZERO, "r", None).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        let req = EscrowCreateRequest {
            buyer_agent_id: "agent-000001".into(),
            seller_agent_id: "agent-000002".into(),
            amount_usd: usd("999999"),
            description: "too much".into(),
            metadata: None,
        };
        let e = l.escrow_create(&req, None).unwrap_err();
        assert_eq!((e.status, e.code), (402, "insufficient_funds"));
        let e = l.escrow_settle("esc_nope", "r", true, None).unwrap_err();
        assert_eq!((e.status, e.code), (404, "escrow_not_found"));
        l.faucet_claim("agent-000003", None).unwrap();
        let e = l.faucet_claim("agent-000003", None).unwrap_err();
        assert_eq!((e.status, e.code), (409, "invalid_state"));
        assert_books_balance(&l);
    }

    #[test]
    fn a_wallet_changed_while_paging_is_seen_again_never_skipped() {
        let mut l = world();
        let q = ListQuery { limit: Some(5), ..ListQuery::default() };
        let (first, cursor) = l.list_wallets(&q).unwrap();
        // Change a row already seen and a row not yet seen.
        l.payout(&first[0].agent_id, usd("1"), "r", None).unwrap();
        l.payout("agent-000015", usd("1"), "r", None).unwrap();
        let mut seen: Vec<Wallet> = first;
        let mut cursor = cursor;
        while let Some(c) = cursor {
            let (rows, next) = l.list_wallets(&ListQuery { cursor: Some(c), ..q.clone() }).unwrap();
            seen.extend(rows);
            cursor = next;
        }
        let latest: HashMap<_, _> = seen.iter().map(|w| (w.agent_id.clone(), w.balance_usd)).collect();
        assert_eq!(latest.len(), 21);
        for w in l.wallets() {
            assert_eq!(latest[&w.agent_id], w.balance_usd, "{} has its latest value", w.agent_id);
        }
        assert!(seen.len() >= 22, "the changed, already-seen row reappears");
    }

    #[test]
    fn transactions_filter_by_key_and_since() {
        let mut l = world();
        l.payout("agent-000001", usd("1"), "r", Some("key-a")).unwrap();
        let (rows, next) =
            l.list_transactions(&ListQuery { idempotency_key: Some("key-a".into()), ..ListQuery::default() }).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(next.is_none());
        let since = rows[0].created_at;
        let (rows, _) = l.list_transactions(&ListQuery { since: Some(since), ..ListQuery::default() }).unwrap();
        assert_eq!(rows.len(), 1);
        let mut all = 0;
        let mut cursor = None;
        loop {
            let (rows, next) =
                l.list_transactions(&ListQuery { limit: Some(7), cursor, ..ListQuery::default() }).unwrap();
            all += rows.len();
            if next.is_none() {
                break;
            }
            cursor = next;
        }
        assert_eq!(all, l.transactions().count());
        assert!(l.list_wallets(&ListQuery { limit: Some(0), ..ListQuery::default() }).is_err());
        assert!(l.list_wallets(&ListQuery { cursor: Some("garbage".into()), ..ListQuery::default() }).is_err());
    }
}
