//! NATS subject syntax: dot-separated tokens, where a pattern may use `*`
//! for exactly one token and a final `>` for one or more.

/// Non-empty tokens without whitespace; `>` only as the last token.
pub fn is_subject_pattern(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(index, token)| {
        !token.is_empty()
            && !token.contains(char::is_whitespace)
            && (*token != ">" || index + 1 == tokens.len())
    })
}

/// A subject one can publish to: a pattern without wildcards.
pub fn is_literal_subject(subject: &str) -> bool {
    is_subject_pattern(subject) && subject.split('.').all(|token| token != "*" && token != ">")
}

/// Whether the literal `subject` is one `pattern` describes.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(actual)) if expected == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("order.created", "order.created"));
        assert!(subject_matches("order.*", "order.created"));
        assert!(!subject_matches("order.*", "order.created.eu"));
        assert!(subject_matches("order.>", "order.created.eu"));
        assert!(!subject_matches("order.>", "order"));
        assert!(subject_matches("*.created", "user.created"));
        assert!(!subject_matches("order.created", "order"));
        assert!(!subject_matches("order", "order.created"));
        assert!(subject_matches(">", "anything.at.all"));
    }

    #[test]
    fn publish_subjects_have_no_wildcards() {
        assert!(is_literal_subject("order.created"));
        assert!(!is_literal_subject("order.*"));
        assert!(!is_literal_subject("order.>"));
        assert!(!is_literal_subject("order..created"));
        assert!(!is_literal_subject("order created"));
        assert!(is_subject_pattern("order.>"));
        assert!(!is_subject_pattern("order.>.x"));
    }
}

#[cfg(test)]
mod proptests;
