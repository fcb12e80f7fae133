//! Following a list endpoint's cursors without trusting them. The contract says a cursor is opaque and
//! `next_cursor` is null on the last page; it does not stop a broken or hostile provider from answering a
//! cursor it handed out before, which would have a client page forever. A cursor seen again is refused,
//! and so is one too long to be a cursor (every cursor seen is kept, and each goes into a URL).

use std::collections::HashSet;

/// Longest cursor followed: it travels in a query string, where 8 KiB is the usual limit of a whole URL.
pub const MAX_CURSOR_BYTES: usize = 4096;

/// The cursors one listing has followed so far.
#[derive(Debug, Default)]
pub struct CursorTrail {
    seen: HashSet<String>,
}

impl CursorTrail {
    /// Accept `next` as the cursor of the next page, or say why it cannot be followed.
    pub fn follow(&mut self, next: &str) -> Result<(), String> {
        if next.len() > MAX_CURSOR_BYTES {
            return Err(format!("next_cursor is {} bytes long, more than {MAX_CURSOR_BYTES}", next.len()));
        }
        if !self.seen.insert(next.to_string()) {
            return Err(format!(
                "next_cursor {} was already followed in this listing: its pages would repeat forever",
                shown(next)
            ));
        }
        Ok(())
    }
}

/// A cursor as it may appear in a message: escaped (no control characters reach a log line) and clipped.
fn shown(cursor: &str) -> String {
    let mut s: String = cursor.chars().take(64).flat_map(char::escape_debug).collect();
    if cursor.chars().count() > 64 {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_seen_before_is_refused() {
        let mut t = CursorTrail::default();
        assert!(t.follow("a").is_ok());
        assert!(t.follow("b").is_ok());
        let e = t.follow("a").unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("already followed"), "{e}");
        assert!(t.follow("c").is_ok());
    }

    #[test]
    fn a_long_or_hostile_cursor_is_refused_or_shown_escaped() {
        let mut t = CursorTrail::default();
        assert!(t.follow(&"x".repeat(MAX_CURSOR_BYTES + 1)).unwrap_err().contains("more than"));
        assert!(t.follow("c\n\u{0}").is_ok());
        let e = t.follow("c\n\u{0}").unwrap_err();
        assert!(e.contains(r"c\n\0") && !e.contains('\n') && !e.contains('\u{0}'), "{e}");
    }
}
