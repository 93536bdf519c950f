//! Property tests: the subject grammar and matcher against a reference model
//! of NATS wildcards written here from the NATS rules (`*` is exactly one
//! token, a final `>` is one or more tokens), on arbitrary and near-valid
//! subjects.

use proptest::prelude::*;

use super::{is_literal_subject, is_subject_pattern, subject_matches};

/// Whether the token list `pattern` describes the token list `subject`,
/// one token at a time.
fn model_matches(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern, subject) {
        ([], []) => true,
        ([">"], [_, ..]) => true,
        (["*", pattern @ ..], [_, subject @ ..]) => model_matches(pattern, subject),
        ([expected, pattern @ ..], [actual, subject @ ..]) => {
            expected == actual && model_matches(pattern, subject)
        }
        _ => false,
    }
}

/// NATS' rules for a subscription subject, token by token: no token is
/// empty or holds whitespace, and `>` stands only at the end.
fn model_is_pattern(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(index, token)| {
        let well_formed = !token.is_empty() && !token.chars().any(char::is_whitespace);
        well_formed && (*token != ">" || index == last)
    })
}

/// Few distinct tokens, so patterns and subjects often share them; `a*` and
/// `b>` are literals that merely contain wildcard characters.
fn literal_token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "orders", "a*", "b>"])
}

fn literal_tokens() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(literal_token(), 1..6)
}

/// A valid pattern: literal tokens and `*`, maybe ending in `>`.
fn pattern_tokens() -> impl Strategy<Value = Vec<&'static str>> {
    let token = prop_oneof![3 => literal_token(), 1 => Just("*")];
    (prop::collection::vec(token, 0..5), any::<bool>()).prop_map(|(mut tokens, tail)| {
        if tail || tokens.is_empty() {
            tokens.push(">");
        }
        tokens
    })
}

/// A pattern made from `subject` by turning some tokens into `*` and maybe
/// cutting it short with `>`: mostly patterns that match it, or nearly do.
fn pattern_for(subject: Vec<&'static str>) -> impl Strategy<Value = Vec<&'static str>> {
    let len = subject.len();
    (
        prop::collection::vec(any::<bool>(), len),
        0..=len,
        prop::option::of(literal_token()),
    )
        .prop_map(move |(stars, cut, extra)| {
            let mut pattern: Vec<&str> = subject
                .iter()
                .zip(stars)
                .map(|(token, star)| if star { "*" } else { *token })
                .collect();
            if cut < len {
                pattern.truncate(cut);
                pattern.push(">");
            } else if let Some(extra) = extra {
                pattern.push(extra);
            }
            pattern
        })
}

/// Strings near the grammar's edges: tokens with spaces, empty tokens,
/// `>` in the middle.
fn near_subject() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec!["a", "*", ">", "", " ", "a b", "\t", "é", ">>", "**"]);
    prop::collection::vec(token, 1..5).prop_map(|tokens| tokens.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matcher_agrees_with_the_nats_model(
        (pattern, subject) in literal_tokens().prop_flat_map(|subject| {
            (prop_oneof![pattern_for(subject.clone()), pattern_tokens()], Just(subject))
        })
    ) {
        let (pattern_text, subject_text) = (pattern.join("."), subject.join("."));
        prop_assert!(is_subject_pattern(&pattern_text), "{pattern_text}");
        prop_assert!(is_literal_subject(&subject_text), "{subject_text}");
        prop_assert_eq!(
            subject_matches(&pattern_text, &subject_text),
            model_matches(&pattern, &subject),
            "pattern {} subject {}", pattern_text, subject_text
        );
    }

    #[test]
    fn grammar_agrees_with_the_nats_model(subject in prop_oneof![near_subject(), any::<String>()]) {
        prop_assert_eq!(is_subject_pattern(&subject), model_is_pattern(&subject));
        let literal = model_is_pattern(&subject)
            && subject.split('.').all(|token| token != "*" && token != ">");
        prop_assert_eq!(is_literal_subject(&subject), literal);
    }

    #[test]
    fn a_literal_subject_matches_itself_and_its_wildcards(subject in literal_tokens()) {
        let text = subject.join(".");
        prop_assert!(subject_matches(&text, &text));
        prop_assert!(subject_matches(">", &text));
        let stars = vec!["*"; subject.len()].join(".");
        prop_assert!(subject_matches(&stars, &text));
        let (longer, one_more) = (format!("{text}.>"), format!("{text}.*"));
        prop_assert!(!subject_matches(&longer, &text));
        prop_assert!(!subject_matches(&one_more, &text));
    }

    #[test]
    fn matching_arbitrary_strings_never_panics(pattern in any::<String>(), subject in any::<String>()) {
        let _ = subject_matches(&pattern, &subject);
    }
}
