//! Request and response bodies of the seed's contract (`shared/api/purpleflea-api.md`), shared by the
//! client and the sandbox so the two cannot disagree on a field name. The records it lists are
//! `provider::records` (the synced tables' shapes).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::Usd;
pub use crate::provider::records::{
    Escrow, EscrowStatus, ListQuery, Page, RowError, Transaction, TxKind, Wallet, shown_id,
};

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

/// A list page as it comes off the wire: rows stay raw so that one bad row fails alone, not the page.
#[derive(Debug, Deserialize)]
pub struct RawPage {
    pub data: Vec<Box<serde_json::value::RawValue>>,
    pub next_cursor: Option<String>,
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
    fn field_lists_match_the_models() {
        // Every declared field deserialises: a row with exactly these fields (and nulls) is accepted.
        fn covers<T: Listed>(sample: &str) {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(sample).unwrap();
            let mut keys: Vec<&str> = v.keys().map(String::as_str).collect();
            keys.sort();
            let mut fields = <T as Listed>::FIELDS.to_vec();
            fields.sort();
            assert_eq!(keys, fields);
            serde_json::from_str::<T>(sample).unwrap();
        }
        covers::<Wallet>(
            r#"{"agent_id":"a","wallet_address":null,"balance_usd":1,"active_escrow_count":0,"total_earned_usd":1,
            "referral_code":null,"registered_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#,
        );
        covers::<Transaction>(
            r#"{"tx_id":"t","kind":"payout","agent_id":"a","counterparty_agent_id":null,"amount_usd":1,
            "idempotency_key":null,"reference":null,"created_at":"2026-01-01T00:00:00Z"}"#,
        );
        covers::<Escrow>(
            r#"{"escrow_id":"e","buyer_agent_id":"a","seller_agent_id":"b","amount_usd":1,"description":"d",
            "metadata":null,"status":"funded","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","tx_id":null}"#,
        );
    }

    #[test]
    fn escrow_action_keeps_extra_fields() {
        let r: EscrowActionRequest = serde_json::from_str(r#"{"reason":"hit","mlflow_run_id":"r1","step":3}"#).unwrap();
        assert_eq!(r.extra.len(), 2);
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["step"], 3);
    }
}
