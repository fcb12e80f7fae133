//! Request and response bodies of the contract (`shared/api/purpleflea-api.md`), shared by the client and
//! the sandbox so the two cannot disagree on a field name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::Usd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub agent_id: String,
    pub wallet_address: Option<String>,
    pub balance_usd: Usd,
    pub active_escrow_count: i32,
    pub total_earned_usd: Usd,
    pub referral_code: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowStatus {
    Funded,
    Released,
    Refunded,
}

impl EscrowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowStatus::Funded => "funded",
            EscrowStatus::Released => "released",
            EscrowStatus::Refunded => "refunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escrow {
    pub escrow_id: String,
    pub buyer_agent_id: String,
    pub seller_agent_id: String,
    pub amount_usd: Usd,
    pub description: String,
    #[serde(default)]
    pub metadata: Option<Value>,
    pub status: EscrowStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub tx_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Payout,
    EscrowLock,
    EscrowRelease,
    EscrowRefund,
    Faucet,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Payout => "payout",
            TxKind::EscrowLock => "escrow_lock",
            TxKind::EscrowRelease => "escrow_release",
            TxKind::EscrowRefund => "escrow_refund",
            TxKind::Faucet => "faucet",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub tx_id: String,
    pub kind: TxKind,
    pub agent_id: String,
    pub counterparty_agent_id: Option<String>,
    pub amount_usd: Usd,
    pub idempotency_key: Option<String>,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    pub agent_id: String,
    pub amount_usd: Usd,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutResponse {
    pub tx_id: String,
    pub agent_id: String,
    pub amount_usd: Usd,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscrowCreateRequest {
    pub buyer_agent_id: String,
    pub seller_agent_id: String,
    pub amount_usd: Usd,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Body of `release` and `dispute`: a reason, and for `release` any extra fields (the seed's MLflow
/// callback sends `mlflow_run_id` and `step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscrowActionRequest {
    pub reason: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowActionResponse {
    pub tx_id: String,
    pub escrow_id: String,
    pub status: EscrowStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaucetClaimRequest {
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaucetClaimResponse {
    pub tx_id: String,
    pub agent_id: String,
    pub amount_usd: Usd,
}

/// Every non-2xx body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub message: String,
}

/// A list page as it comes off the wire: rows stay raw so that one bad row fails alone, not the page.
#[derive(Debug, Deserialize)]
pub struct RawPage {
    pub data: Vec<Box<serde_json::value::RawValue>>,
    pub next_cursor: Option<String>,
}

/// A page whose rows were decoded one by one.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<Result<T, RowError>>,
    pub next_cursor: Option<String>,
    /// Fields the first row carried that the contract does not define (ignored, reported for logging).
    pub unknown_fields: Vec<String>,
}

/// A row the API sent that does not fit the contract: which row (when its id could be read) and why,
/// naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} {id}: {reason}")]
pub struct RowError {
    pub entity: &'static str,
    pub id: String,
    pub reason: String,
}

/// Query of the three list endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `updated_since` for wallets and escrows, `since` for transactions.
    pub since: Option<DateTime<Utc>>,
    /// Transactions only.
    pub idempotency_key: Option<String>,
}

/// What a list endpoint lists; fixes the path, the entity's id field, its `since` parameter name and the
/// fields the contract defines.
pub trait Listed: serde::de::DeserializeOwned + Send + 'static {
    const PATH: &'static str;
    const ENTITY: &'static str;
    const ID_FIELD: &'static str;
    const SINCE_PARAM: &'static str;
    const FIELDS: &'static [&'static str];
}

impl Listed for Wallet {
    const PATH: &'static str = "wallets";
    const ENTITY: &'static str = "wallet";
    const ID_FIELD: &'static str = "agent_id";
    const SINCE_PARAM: &'static str = "updated_since";
    const FIELDS: &'static [&'static str] = &[
        "agent_id",
        "wallet_address",
        "balance_usd",
        "active_escrow_count",
        "total_earned_usd",
        "referral_code",
        "registered_at",
        "updated_at",
    ];
}

impl Listed for Escrow {
    const PATH: &'static str = "escrows";
    const ENTITY: &'static str = "escrow";
    const ID_FIELD: &'static str = "escrow_id";
    const SINCE_PARAM: &'static str = "updated_since";
    const FIELDS: &'static [&'static str] = &[
        "escrow_id",
        "buyer_agent_id",
        "seller_agent_id",
        "amount_usd",
        "description",
        "metadata",
        "status",
        "created_at",
        "updated_at",
        "tx_id",
    ];
}

impl Listed for Transaction {
    const PATH: &'static str = "transactions";
    const ENTITY: &'static str = "transaction";
    const ID_FIELD: &'static str = "tx_id";
    const SINCE_PARAM: &'static str = "since";
    const FIELDS: &'static [&'static str] = &[
        "tx_id",
        "kind",
        "agent_id",
        "counterparty_agent_id",
        "amount_usd",
        "idempotency_key",
        "reference",
        "created_at",
    ];
}

/// Decode one row; on failure, say which field (serde's own message does not always).
fn decode_row<T: Listed>(raw: &str) -> Result<T, RowError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let id = serde_json::from_str::<Map<String, Value>>(raw)
            .ok()
            .and_then(|m| m.get(T::ID_FIELD).and_then(|v| v.as_str().map(shown_id)))
            .unwrap_or_else(|| "<unknown id>".to_string());
        let inner = e.into_inner().to_string();
        let reason = if field == "." { inner } else { format!("field `{field}`: {inner}") };
        RowError { entity: T::ENTITY, id, reason }
    })
}

/// Keys of a JSON object that the contract does not define (read without building values).
fn unknown_fields<T: Listed>(raw: &str) -> Vec<String> {
    match serde_json::from_str::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(raw) {
        Ok(m) => m.into_keys().filter(|k| !T::FIELDS.contains(&k.as_str())).collect(),
        Err(_) => Vec::new(),
    }
}

/// Decode each raw row of a page on its own. Drift is checked on the first row only: a schema change is
/// API-wide, and checking every row would parse the page twice.
pub fn decode_rows<T: Listed>(page: RawPage) -> Page<T> {
    let unknown = page.data.first().map(|r| unknown_fields::<T>(r.get())).unwrap_or_default();
    let rows = page.data.iter().map(|raw| decode_row::<T>(raw.get())).collect();
    Page { rows, next_cursor: page.next_cursor, unknown_fields: unknown }
}

/// A row's id as it may appear in a message or a log line: clipped to 128 characters and escaped, so an
/// id from the API cannot break a line or hide a NUL (`agent-2\0\n../../x` is shown as typed here).
pub fn shown_id(id: &str) -> String {
    let mut s: String = id.chars().take(128).flat_map(char::escape_debug).collect();
    if id.chars().nth(128).is_some() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_row_fails_alone_and_names_its_id() {
        let body = r#"{"data":[
            {"agent_id":"a1","wallet_address":null,"balance_usd":1.5,"active_escrow_count":0,
             "total_earned_usd":2,"referral_code":null,"registered_at":"2026-01-01T00:00:00Z",
             "updated_at":"2026-01-01T00:00:00Z","surprise":"ignored"},
            {"agent_id":"a2","balance_usd":"lots"}
        ],"next_cursor":null}"#;
        let page: Page<Wallet> = decode_rows(serde_json::from_str(body).unwrap());
        assert!(page.rows[0].is_ok());
        let err = page.rows[1].as_ref().unwrap_err();
        assert_eq!(err.id, "a2");
        assert!(err.reason.contains("balance_usd"), "names the field: {}", err.reason);
        assert_eq!(page.unknown_fields, vec!["surprise".to_string()]);
    }

    /// Any JSON value in any field of a page: decoding gives rows or row errors, never a panic.
    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_page_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(raw) = serde_json::from_slice::<RawPage>(&bytes) {
                let _ = decode_rows::<Wallet>(raw);
            }
        }

        #[test]
        fn any_field_values_fail_their_row_only(values in proptest::collection::vec(arb_json(), 8)) {
            let mut row = Map::new();
            for (name, v) in <Wallet as Listed>::FIELDS.iter().zip(values) {
                row.insert(name.to_string(), v);
            }
            let body = serde_json::json!({"data": [Value::Object(row)], "next_cursor": null}).to_string();
            let raw: RawPage = serde_json::from_str(&body).unwrap();
            let page = decode_rows::<Wallet>(raw);
            proptest::prop_assert_eq!(page.rows.len(), 1);
        }
    }

    #[test]
    fn escrow_action_keeps_extra_fields() {
        let r: EscrowActionRequest = serde_json::from_str(r#"{"reason":"hit","mlflow_run_id":"r1","step":3}"#).unwrap();
        assert_eq!(r.extra.len(), 2);
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["step"], 3);
    }
}
