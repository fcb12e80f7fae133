//! A call's arguments, read strictly: each value an agent sends is checked for its type, its length and the
//! id rule before anything is done with it (ids end up in SQL, keys and log lines). An argument the tool's
//! schema does not declare is refused, and the audit keeps its name, never its value: an agent used to
//! Purple Flea's own server may send its `casino_api_key`.

use serde_json::{Map, Value, json};

use super::policy::{self, BadRequestId};
use super::tool::Tool;
use crate::money::{MoneyError, Usd};

/// Longest free text (a reason, a description) kept with a request.
const MAX_FREE_TEXT: usize = 4096;

/// Why an argument is refused: text the agent reads.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("{name} must be {expected}")]
    Expected { name: &'static str, expected: &'static str },
    /// The id rule's refusal (`crate::check::check_id`), in its words.
    #[error("{name} {reason}")]
    BadId { name: &'static str, reason: String },
    #[error("{name} is over 4096 characters")]
    TooLong { name: &'static str },
    #[error("{name} has a control character")]
    ControlCharacter { name: &'static str },
    #[error("amount_usd is required: a number of USD with at most 2 decimals")]
    NoAmount,
    #[error("amount_usd {text}: {source}")]
    BadAmount { text: String, source: MoneyError },
    #[error(transparent)]
    RequestId(#[from] BadRequestId),
    #[error("create_request_id: {0}")]
    CreateRequestId(BadRequestId),
    #[error("unknown argument {name:?}{}", if *looks_secret { " (no key is ever passed to this server: it holds its own)" } else { "" })]
    Unknown { name: String, looks_secret: bool },
    #[error("give exactly one of {0}")]
    ExactlyOne(&'static str),
    #[error("give the agent as agent_id (or agent_casino_id), once")]
    AgentTwice,
    #[error("buyer_agent_id and counterparty_agent_id must differ")]
    SameParties,
}

/// The arguments of one call.
#[derive(Clone, Copy)]
pub struct Args<'a>(&'a Map<String, Value>);

impl<'a> Args<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Args<'a> {
        Args(map)
    }

    /// An absent or `null` argument is `None`; anything but a string is refused.
    pub fn text(&self, name: &'static str) -> Result<Option<String>, ArgError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ArgError::Expected { name, expected: "a string" }),
        }
    }

    pub fn required(&self, name: &'static str) -> Result<String, ArgError> {
        self.text(name)?.filter(|s| !s.trim().is_empty()).ok_or(ArgError::Missing { name })
    }

    /// A required id, under the id rule.
    pub fn id(&self, name: &'static str) -> Result<String, ArgError> {
        let v = self.required(name)?;
        Self::check_id(name, &v)?;
        Ok(v)
    }

    /// An optional id, under the id rule.
    pub fn optional_id(&self, name: &'static str) -> Result<Option<String>, ArgError> {
        let v = self.text(name)?;
        if let Some(id) = &v {
            Self::check_id(name, id)?;
        }
        Ok(v)
    }

    /// Free text kept with a request: at most 4096 characters, no control character but tab and newlines.
    pub fn free_text(&self, name: &'static str, needed: bool) -> Result<Option<String>, ArgError> {
        let v = if needed { Some(self.required(name)?) } else { self.text(name)? };
        if let Some(t) = &v {
            if t.chars().count() > MAX_FREE_TEXT {
                return Err(ArgError::TooLong { name });
            }
            if t.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
                return Err(ArgError::ControlCharacter { name });
            }
        }
        Ok(v)
    }

    /// `value` of the argument `name` under the id rule.
    pub fn check_id(name: &'static str, value: &str) -> Result<(), ArgError> {
        crate::payouts::validate::check_id(value).map_err(|reason| ArgError::BadId { name, reason })
    }

    /// `amount_usd`, a JSON number or a string, read exactly (never through a float).
    pub fn amount(&self) -> Result<Usd, ArgError> {
        let text = match self.0.get("amount_usd") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => return Err(ArgError::NoAmount),
        };
        Usd::parse_positive(&text).map_err(|source| ArgError::BadAmount { text, source })
    }

    /// `live`: absent means the synced copy.
    pub fn live(&self) -> Result<bool, ArgError> {
        match self.0.get("live") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ArgError::Expected { name: "live", expected: "true or false" }),
        }
    }

    /// A whole number in `range`, or `default` when absent; `expected` says what is taken.
    pub fn number(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> Result<Option<u64>, ArgError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().filter(|n| range.contains(n)).map(Some).ok_or(ArgError::Expected { name, expected }),
        }
    }

    /// The caller's `request_id`, under the request id rule.
    pub fn request_id(&self) -> Result<String, ArgError> {
        let r = self.required("request_id")?;
        policy::check_request_id(&r)?;
        Ok(r)
    }

    /// Refuse an argument `tool` does not declare, naming it (and why, when it looks like a key).
    pub fn check_declared(&self, tool: Tool) -> Result<(), ArgError> {
        let declared = tool.arguments();
        match self.0.keys().find(|k| !declared.contains(k)) {
            None => Ok(()),
            Some(k) => Err(ArgError::Unknown {
                name: k.clone(),
                looks_secret: k.contains("key") || k.contains("token") || k.contains("secret"),
            }),
        }
    }

    /// The arguments as the audit keeps them: those `tool` declares; any other is named, its value dropped.
    pub fn audited(&self, tool: Option<Tool>) -> String {
        let declared = tool.map(Tool::arguments).unwrap_or_default();
        let kept: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| if declared.contains(k) { (k.clone(), v.clone()) } else { (k.clone(), json!("<dropped>")) })
            .collect();
        Value::Object(kept).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn refusals_read_as_the_agent_is_told_them() {
        let m = args(json!({"agent_id": "a'b", "amount_usd": 1.005, "live": "yes", "casino_api_key": "k", "n": 0}));
        let a = Args::new(&m);
        assert!(a.id("agent_id").unwrap_err().to_string().starts_with("agent_id contains '\\''"));
        assert!(a.amount().unwrap_err().to_string().starts_with("amount_usd 1.005: "));
        assert_eq!(a.live().unwrap_err().to_string(), "live must be true or false");
        assert_eq!(a.required("reason").unwrap_err().to_string(), "reason is required");
        assert_eq!(
            a.number("n", 1..=200, "an integer 1..=200").unwrap_err().to_string(),
            "n must be an integer 1..=200"
        );
        assert_eq!(
            a.check_declared(Tool::RequestPayout).unwrap_err().to_string(),
            "unknown argument \"casino_api_key\" (no key is ever passed to this server: it holds its own)"
        );
        let audited: Value = serde_json::from_str(&a.audited(Some(Tool::RequestPayout))).unwrap();
        assert_eq!(audited["casino_api_key"], "<dropped>");
        assert_eq!(audited["agent_id"], "a'b");
        assert_eq!(a.request_id().unwrap_err().to_string(), "request_id is required");
    }
}
