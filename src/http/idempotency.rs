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

    /// The namespace of a derived key (`pfsync:<namespace>:...`); namespaces hold no `:`.
    pub fn namespace(&self) -> Option<&str> {
        self.0.strip_prefix("pfsync:")?.split_once(':').map(|(ns, _)| ns)
    }

    /// The tag the escrow an operation creates carries at the end of its description, where a provider
    /// finds the escrow by it (one without key memory): `[pfsync:<namespace>:<operation id>]`, from the
    /// create's key, so the send, the evidence and the log cannot disagree. With the namespace, the same
    /// action id in two namespaces names two escrows.
    pub fn escrow_tag(&self, operation_id: &str) -> Option<String> {
        Some(format!("[pfsync:{}:{operation_id}]", self.namespace()?))
    }
}

/// The tag of the form pfsync wrote before tags named the namespace: `[pfsync:<operation id>]`. It could be
/// any namespace's, so evidence accepts it only for a create whose intent was logged before the change (see
/// `payouts::plan::Step::legacy_escrow_tag`).
pub fn legacy_escrow_tag(operation_id: &str) -> String {
    format!("[pfsync:{operation_id}]")
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

    #[test]
    fn an_escrow_tag_names_the_namespace_of_the_key() {
        let a = IdempotencyKey::derive("prod", "escrow_create", "task-1").unwrap();
        let b = IdempotencyKey::derive("staging", "escrow_create", "task-1").unwrap();
        assert_eq!(a.escrow_tag("task-1").as_deref(), Some("[pfsync:prod:task-1]"));
        assert_eq!(b.escrow_tag("task-1").as_deref(), Some("[pfsync:staging:task-1]"));
        assert_eq!(legacy_escrow_tag("task-1"), "[pfsync:task-1]");
        assert_eq!(IdempotencyKey::new("someone-else").unwrap().escrow_tag("task-1"), None);
    }
}
