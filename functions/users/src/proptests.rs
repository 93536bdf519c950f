//! Property tests of `PUT /users/{id}` bodies: any bytes are decoded or
//! refused without a panic, and a change is accepted exactly when the
//! documented `ProfileChange` schema (openapi.yaml) accepts it, by a model
//! written here.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{ProfileChange, checked};

/// The documented change: only `name` (1 to 100 characters after
/// trimming) and `bio` (at most 500), each a string or null or left out.
fn model_change(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let field_ok = |key: &str, ok: &dyn Fn(&str) -> bool| match object.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => ok(text),
        Some(_) => false,
    };
    object.keys().all(|key| key == "name" || key == "bio")
        && field_ok("name", &|name| {
            (1..=100).contains(&name.trim().chars().count())
        })
        && field_ok("bio", &|bio| bio.chars().count() <= 500)
}

fn accepts(body: &[u8]) -> Option<ProfileChange> {
    serde_json::from_slice::<ProfileChange>(body)
        .ok()
        .and_then(|change| checked(change).ok())
}

fn text(lengths: Vec<usize>) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(lengths),
        prop::sample::select(vec!["a", "é", " ", "日"]),
        any::<bool>(),
    )
        .prop_map(|(n, unit, padded)| {
            let text = unit.repeat(n);
            Value::from(if padded { format!(" {text}\n") } else { text })
        })
}

fn change() -> impl Strategy<Value = Value> {
    let odd = || prop::sample::select(vec![json!(null), json!(7), json!(["x"])]);
    (
        prop::option::weighted(
            0.7,
            prop_oneof![9 => text(vec![0, 1, 100, 101]), 1 => odd()],
        ),
        prop::option::weighted(
            0.7,
            prop_oneof![9 => text(vec![0, 1, 500, 501]), 1 => odd()],
        ),
        prop::option::weighted(0.05, Just(json!("x"))),
    )
        .prop_map(|(name, bio, extra)| {
            let mut body = Map::new();
            for (key, value) in [("name", name), ("bio", bio), ("email", extra)] {
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
    }

    #[test]
    fn a_change_is_accepted_as_the_documented_schema_says(body in change()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let accepted = accepts(&bytes);
        prop_assert_eq!(accepted.is_some(), model_change(&body), "{}", body);
        if let Some(change) = accepted {
            // The name is stored trimmed; the bio as given.
            let name = body.get("name").and_then(Value::as_str).map(|name| name.trim().to_string());
            prop_assert_eq!(change.name, name);
            prop_assert_eq!(change.bio.as_deref(), body.get("bio").and_then(Value::as_str));
        }
    }
}
