//! Property tests of `POST /auth/signup` and `/auth/login` bodies: any bytes
//! are decoded or refused without a panic, and a sign-up is accepted exactly
//! when the documented `SignupRequest` schema (openapi.yaml) and its
//! descriptions accept it, by a model written here.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{Login, Signup, check_password, checked_name, normalize_email};

/// "An address with a non-empty local part, one `@` and a domain with a dot
/// inside it, no whitespace", at most 254 bytes once trimmed and lowercased.
fn model_email(email: &str) -> Option<String> {
    let stored = email.trim().to_lowercase();
    let parts: Vec<&str> = stored.split('@').collect();
    let [local, domain] = parts.as_slice() else {
        return None;
    };
    let dot_inside = domain
        .char_indices()
        .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len());
    let ok = !local.is_empty()
        && dot_inside
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !stored.chars().any(char::is_whitespace)
        && stored.len() <= 254;
    ok.then_some(stored)
}

/// The documented request: exactly `email`, `password` (8 to 128
/// characters) and `name` (1 to 100 characters after trimming), strings.
fn model_signup(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let field = |key: &str| object.get(key).and_then(Value::as_str);
    let (Some(email), Some(password), Some(name)) =
        (field("email"), field("password"), field("name"))
    else {
        return false;
    };
    object.len() == 3
        && model_email(email).is_some()
        && (8..=128).contains(&password.chars().count())
        && (1..=100).contains(&name.trim().chars().count())
}

/// What the service does with a sign-up body before it stores anything.
fn accepts(body: &[u8]) -> bool {
    let Ok(form) = serde_json::from_slice::<Signup>(body) else {
        return false;
    };
    normalize_email(&form.email).is_ok()
        && check_password(&form.password).is_ok()
        && checked_name(&form.name).is_ok()
}

fn email() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "ada", "A", "@", ".", "example", "com", " ", "\t", "é", "İ", "+", "-", "@@",
    ]);
    prop_oneof![
        3 => (prop::sample::select(vec!["ada", "Ada.L", "x"]), prop::sample::select(vec!["example.com", "EXAMPLE.org", "a.b.c"]), prop::sample::select(vec!["", " ", "\n"]))
            .prop_map(|(local, domain, space)| format!("{space}{local}@{domain}{space}")),
        3 => prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat()),
        1 => (240usize..260).prop_map(|n| format!("{}@example.com", "a".repeat(n - 12))),
    ]
}

fn text_of_length(lengths: Vec<usize>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(lengths),
        prop::sample::select(vec!["a", "é", " ", "日"]),
        any::<bool>(),
    )
        .prop_map(|(n, unit, padded)| {
            let text = unit.repeat(n);
            if padded { format!("  {text}  ") } else { text }
        })
}

fn signup() -> impl Strategy<Value = Value> {
    let password = text_of_length(vec![0, 7, 8, 9, 64, 128, 129]);
    let name = text_of_length(vec![0, 1, 2, 99, 100, 101]);
    (
        prop::option::weighted(0.95, email().prop_map(Value::from)),
        prop::option::weighted(
            0.95,
            prop_oneof![9 => password.prop_map(Value::from), 1 => Just(json!(12345678))],
        ),
        prop::option::weighted(
            0.95,
            prop_oneof![9 => name.prop_map(Value::from), 1 => Just(json!(null))],
        ),
        prop::option::weighted(0.05, Just(json!(true))),
    )
        .prop_map(|(email, password, name, extra)| {
            let mut body = Map::new();
            for (key, value) in [
                ("email", email),
                ("password", password),
                ("name", name),
                ("admin", extra),
            ] {
                if let Some(value) = value {
                    body.insert(key.into(), value);
                }
            }
            Value::Object(body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_body_is_decoded_or_refused_without_panicking(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = accepts(&body);
        let _ = serde_json::from_slice::<Login>(&body);
    }

    #[test]
    fn a_signup_is_accepted_as_the_documented_schema_says(body in signup()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        prop_assert_eq!(accepts(&bytes), model_signup(&body), "{}", body);
    }

    #[test]
    fn an_email_is_stored_as_the_model_says_and_stays_so(email in prop_oneof![email(), any::<String>()]) {
        let stored = normalize_email(&email).ok();
        prop_assert_eq!(&stored, &model_email(&email), "{:?}", email);
        if let Some(stored) = stored {
            // Signing up with the stored form, or logging in with what was
            // typed (trimmed and lowercased), finds the same account.
            let again = normalize_email(&stored).ok();
            prop_assert_eq!(again.as_ref(), Some(&stored));
            prop_assert_eq!(email.trim().to_lowercase(), stored);
        }
    }

    #[test]
    fn a_login_needs_exactly_email_and_password(extra: bool, email in email(), password in "[a-z]{0,10}") {
        let mut body = json!({ "email": email, "password": password });
        if extra {
            body["remember"] = json!(true);
        }
        let decoded = serde_json::from_value::<Login>(body);
        prop_assert_eq!(decoded.is_ok(), !extra);
    }
}

/// Found by the properties above: a field the schema does not have was
/// ignored, though openapi.yaml says `additionalProperties: false`.
#[test]
fn a_signup_or_login_with_an_unknown_field_is_refused() {
    let signup = r#"{"admin":true,"email":"ada@example.com","name":"a","password":"  aaaaaaa  "}"#;
    assert!(serde_json::from_str::<Signup>(signup).is_err());
    let login = r#"{"email":"ada@example.com","password":"","remember":true}"#;
    assert!(serde_json::from_str::<Login>(login).is_err());
}
