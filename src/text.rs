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
}
