//! Text cut to a byte budget. Messages, error quotes and log columns carry text from outside the process,
//! which may be megabytes long, and cutting it with `&s[..n]` or `String::truncate` inside a multi-byte
//! character panics.

/// The longest start of `s` that is at most `max_bytes` long and ends on a character boundary.
pub fn clip(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` within `max` bytes: as it is when it fits, else its start, `...` and a digest of the whole
/// (`(sha256:` and 16 hex digits`)`).
pub fn clip_marked(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(s.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mark = format!("...(sha256:{hex})");
    format!("{}{mark}", clip(s, max.saturating_sub(mark.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_across_the_limit_is_left_out_whole() {
        // "€" is 3 bytes, at 3..6: limits 3, 4 and 5 all end before it.
        let s = "abc€d";
        let cases = [(0, ""), (3, "abc"), (4, "abc"), (5, "abc"), (6, "abc€"), (7, "abc€d"), (99, "abc€d")];
        for (max, want) in cases {
            assert_eq!(clip(s, max), want, "{max}");
        }
    }

    #[test]
    fn a_clipped_text_keeps_a_digest_of_what_was_cut() {
        assert_eq!(clip_marked("short", 64), "short");
        let (a, b) = ("x".repeat(100) + "a", "x".repeat(100) + "b");
        let (ca, cb) = (clip_marked(&a, 64), clip_marked(&b, 64));
        assert!(ca.len() <= 64 && cb.len() <= 64, "{ca}");
        assert_ne!(ca, cb, "two rows that differ only past the clip are two versions");
        assert!(ca.starts_with("xxx") && ca.contains("...(sha256:"), "{ca}");
        // Never cut inside a character.
        assert!(clip_marked(&"é".repeat(100), 64).len() <= 64);
    }
}
