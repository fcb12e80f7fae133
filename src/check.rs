//! What a value from outside may hold, one rule for every door: a pending payouts row, a synced row, a
//! tool's argument. An id meets one rule (ASCII letters, digits and `._:-`, 1..=128 long), text fields are
//! capped, and control characters are refused (free text keeps tab and line breaks). A synced row that
//! breaks a rule fails alone, like a row that does not decode: its id (escaped) and the reason are logged,
//! the rest are written, the position stops moving. Messages never echo the value: it can be megabytes
//! long or built to break a log line.

use serde_json::Value;

use crate::http::IdempotencyKey;

pub const MAX_ID_LEN: usize = 128;
pub const MAX_TEXT_LEN: usize = 4096;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Ids become part of an idempotency key and a URL: ASCII letters, digits and `._:-`, 1..=128 long.
/// Look-alike letters from other scripts (a Cyrillic `а` in `agent-00а`) are refused, not normalised.
pub fn check_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("is {} bytes long, more than {MAX_ID_LEN}", value.len()));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(format!("contains {c:?} (U+{:04X}); only ASCII letters, digits and . _ : - are allowed", c as u32));
    }
    Ok(())
}

/// Free text (a reason, a description) may hold tab and line breaks, no other control character. It goes
/// to the provider and comes back in its ledger and escrows, which the sync checks by this same rule
/// (`sync::check`): a row pfsync paid must never be one its sync refuses.
pub fn check_text_chars(value: &str) -> Result<(), String> {
    match value.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        Some((at, c)) => Err(format!("contains a control character (U+{:04X}) at byte {at}", c as u32)),
        None => Ok(()),
    }
}

/// Longest short field (a wallet address, a referral code). Real ones are under 100 bytes.
pub const MAX_SHORT_TEXT: usize = 256;

/// An id: the payouts id rule.
pub fn id(field: &str, value: &str) -> Result<(), String> {
    check_id(value).map_err(|e| format!("field `{field}` {e}"))
}

pub fn optional_id(field: &str, value: Option<&str>) -> Result<(), String> {
    value.map_or(Ok(()), |v| id(field, v))
}

/// A short field: at most [`MAX_SHORT_TEXT`] bytes, no control character at all.
pub fn short_text(field: &str, value: Option<&str>) -> Result<(), String> {
    let Some(v) = value else { return Ok(()) };
    if v.len() > MAX_SHORT_TEXT {
        return Err(format!("field `{field}` is {} bytes long, more than {MAX_SHORT_TEXT}", v.len()));
    }
    no_control(field, v, false)
}

/// Free text: at most [`MAX_TEXT_LEN`] characters (the payouts rule); tab and line breaks allowed, other
/// control characters not.
pub fn text(field: &str, value: Option<&str>) -> Result<(), String> {
    let Some(v) = value else { return Ok(()) };
    // Bytes first: counting the characters of a 30 MB field is not needed to refuse it.
    if v.len() > MAX_TEXT_LEN * 4 || v.chars().count() > MAX_TEXT_LEN {
        return Err(format!("field `{field}` is {} bytes long, more than {MAX_TEXT_LEN} characters", v.len()));
    }
    no_control(field, v, true)
}

/// An idempotency key: the contract's rule (1..=255 visible ASCII characters).
pub fn key(field: &str, value: Option<&str>) -> Result<(), String> {
    value.map_or(Ok(()), |v| IdempotencyKey::new(v).map(|_| ()).map_err(|e| format!("field `{field}` {e}")))
}

/// JSON metadata: at most [`MAX_METADATA_BYTES`] as text (the payouts rule). Its strings are stored as
/// JSON, so a control character in them is escaped, never written raw.
pub fn metadata(field: &str, value: Option<&Value>) -> Result<(), String> {
    let Some(v) = value else { return Ok(()) };
    let len = serde_json::to_string(v).map(|s| s.len()).unwrap_or(usize::MAX);
    if len > MAX_METADATA_BYTES {
        return Err(format!("field `{field}` is {len} bytes of JSON, more than {MAX_METADATA_BYTES}"));
    }
    Ok(())
}

fn no_control(field: &str, v: &str, line_breaks: bool) -> Result<(), String> {
    if line_breaks {
        // The payouts rule for free text, so nothing pfsync pays is refused when it comes back.
        return check_text_chars(v).map_err(|e| format!("field `{field}` {e}"));
    }
    match v.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(format!("field `{field}` contains a control character (U+{:04X}) at byte {at}", c as u32)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_payouts_rule() {
        assert!(id("agent_id", "agent-000001").is_ok());
        assert!(id("agent_id", "databricks-pipeline-orchestrator").is_ok());
        for bad in ["", "agent-2\u{0}\n../../x", "a/b", "agent 1", "agent-00\u{430}", &"a".repeat(129)] {
            let e = id("agent_id", bad).unwrap_err();
            assert!(e.starts_with("field `agent_id`") && !e.contains('\u{0}') && !e.contains('\n'), "{e}");
        }
        assert!(optional_id("tx_id", None).is_ok());
    }

    #[test]
    fn text_is_capped_and_control_characters_are_refused() {
        assert!(short_text("referral_code", Some("PF1A2B3C4D")).is_ok());
        let e = short_text("referral_code", Some(&"R".repeat(30 << 20))).unwrap_err();
        assert!(e.len() < 100 && e.contains("31457280 bytes"), "{e}");
        assert!(short_text("wallet_address", Some("0xab\ncd")).unwrap_err().contains("U+000A"));
        assert!(short_text("wallet_address", Some("0xab\u{85}")).is_err(), "C1 controls too");
        assert!(text("description", Some("line one\nline two\twith a tab")).is_ok());
        assert!(text("description", Some("bell\u{7}")).unwrap_err().contains("U+0007) at byte 4"));
        assert!(text("description", Some("nul\u{0}")).is_err());
        assert!(text("description", Some(&"é".repeat(MAX_TEXT_LEN))).is_ok());
        assert!(text("description", Some(&"é".repeat(MAX_TEXT_LEN + 1))).is_err());
        assert!(key("idempotency_key", Some("pfsync:default:payout:p-1")).is_ok());
        assert!(key("idempotency_key", Some("a b")).is_err());
        assert!(metadata("metadata", Some(&serde_json::json!({"task_id": "t-1"}))).is_ok());
        assert!(metadata("metadata", Some(&Value::String("x".repeat(MAX_METADATA_BYTES)))).is_err());
    }
}
