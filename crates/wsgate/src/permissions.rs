//! Channel permissions: which channels an identity may subscribe to or publish on.
//!
//! Patterns come from the credential (`channels` and `publish` claims, a static token's
//! settings, an API key, a backend's answer). Two rules only, so that an operator can read a
//! pattern and know what it grants: a trailing `*` matches any suffix (`chat:*` matches
//! `chat:lobby` and `chat:` itself), and `{sub}` stands for the identity's own subject
//! (`user:{sub}` lets alice read `user:alice` and nothing else).

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Whether `channel` is a name clients may use: non-empty, bounded, printable, no spaces.
pub fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && channel
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace())
}

/// Whether any of `patterns` grants `channel` to `sub`.
pub fn allowed(patterns: &[String], sub: &str, channel: &str) -> bool {
    patterns.iter().any(|p| matches(p, sub, channel))
}

fn matches(pattern: &str, sub: &str, channel: &str) -> bool {
    let (body, wildcard) = match pattern.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (pattern, false),
    };
    // Expand `{sub}` while comparing, without allocating.
    let mut rest = channel;
    let mut parts = body.split("{sub}").peekable();
    while let Some(literal) = parts.next() {
        let Some(after) = rest.strip_prefix(literal) else {
            return false;
        };
        rest = after;
        if parts.peek().is_some() {
            let Some(after) = rest.strip_prefix(sub) else {
                return false;
            };
            rest = after;
        }
    }
    wildcard || rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_wildcard_and_sub() {
        let pats = p(&["news", "chat:*", "user:{sub}", "dm:{sub}:*"]);
        for (ch, ok) in [
            ("news", true),
            ("news2", false),
            ("chat:lobby", true),
            ("chat:", true),
            ("chat", false),
            ("user:alice", true),
            ("user:bob", false),
            ("user:alice2", false),
            ("dm:alice:bob", true),
            ("dm:bob:alice", false),
        ] {
            assert_eq!(allowed(&pats, "alice", ch), ok, "{ch}");
        }
        assert!(allowed(&p(&["*"]), "x", "anything"));
        assert!(!allowed(&[], "x", "anything"));
    }

    #[test]
    fn a_subject_cannot_smuggle_patterns() {
        // `{sub}` is compared literally: a subject containing `*` grants nothing extra.
        assert!(!allowed(&p(&["user:{sub}"]), "*", "user:alice"));
        assert!(allowed(&p(&["user:{sub}"]), "*", "user:*"));
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("chat:lobby"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("a b"));
        assert!(!valid_channel("a\nb"));
        assert!(!valid_channel(&"x".repeat(MAX_CHANNEL_LEN + 1)));
    }
}
