//! The `Idempotency-Key` header value. Keys for money-moving operations are derived here and nowhere else:
//! from a namespace and an operation id only (never a clock or a random value), so that a retry days later,
//! or a second run overlapping the first, sends the same key for the same operation.

use std::fmt;

pub const MAX_KEY_LEN: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Accept a key as the contract allows it: 1..=255 visible ASCII characters.
    pub fn new(text: &str) -> Result<IdempotencyKey, String> {
        if text.is_empty() || text.len() > MAX_KEY_LEN {
            return Err(format!("must be 1..={MAX_KEY_LEN} characters, got {}", text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII without spaces".to_string());
        }
        Ok(IdempotencyKey(text.to_string()))
    }

    /// The key of one operation: `pfsync:<namespace>:<kind>:<operation id>`. Ids outside the key alphabet
    /// or too long for the header are hex-encoded / refused by validation upstream; here the derivation
    /// only refuses, it never invents.
    pub fn derive(namespace: &str, kind: &str, operation_id: &str) -> Result<IdempotencyKey, String> {
        IdempotencyKey::new(&format!("pfsync:{namespace}:{kind}:{operation_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_validated() {
        let a = IdempotencyKey::derive("prod", "payout", "p-1").unwrap();
        let b = IdempotencyKey::derive("prod", "payout", "p-1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "pfsync:prod:payout:p-1");
        assert!(IdempotencyKey::derive("prod", "payout", "has space").is_err());
        assert!(IdempotencyKey::derive("prod", "payout", &"x".repeat(300)).is_err());
        assert!(IdempotencyKey::new("").is_err());
    }
}
