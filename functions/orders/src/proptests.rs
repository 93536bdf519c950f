//! Property tests of `POST /orders` bodies: any bytes are decoded or refused
//! without a panic, and a body is accepted exactly when the documented
//! `NewOrder` schema (openapi.yaml) accepts it, by a model written here.

use demo_kit::events::Item;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{NewOrder, check_items};

/// The documented `NewOrderItem`: exactly `sku` (`^[A-Z0-9-]{1,32}$`) and
/// an integer `quantity` from 1 to 100.
fn model_item(value: &Value) -> Result<(), String> {
    let Some(object) = value.as_object() else {
        return Err("not an object".into());
    };
    if object.keys().any(|key| key != "sku" && key != "quantity") {
        return Err("unknown field".into());
    }
    let sku = object.get("sku").and_then(Value::as_str).ok_or("no sku")?;
    let sku_ok = (1..=32).contains(&sku.chars().count())
        && sku
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    let quantity = object
        .get("quantity")
        .and_then(Value::as_i64)
        .ok_or("no quantity")?;
    if !sku_ok || !(1..=100).contains(&quantity) {
        return Err("out of range".into());
    }
    Ok(())
}

/// The documented `NewOrder`: exactly `items`, 1 to 20 of them, each SKU
/// at most once.
fn model_order(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let Some(items) = object.get("items").and_then(Value::as_array) else {
        return false;
    };
    let skus: Vec<&Value> = items.iter().filter_map(|item| item.get("sku")).collect();
    let unique = skus
        .iter()
        .enumerate()
        .all(|(i, sku)| !skus[..i].contains(sku));
    object.len() == 1
        && (1..=20).contains(&items.len())
        && items.iter().all(|item| model_item(item).is_ok())
        && unique
}

/// What the service does with the body: decode, then check.
fn accepts(body: &[u8]) -> bool {
    match serde_json::from_slice::<NewOrder>(body) {
        Ok(order) => check_items(&order.items).is_ok(),
        Err(_) => false,
    }
}

fn sku() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::sample::select(vec!["A", "SKU-1", "KEYB-001", "AB-12", "0"]).prop_map(Value::from),
        1 => prop::sample::select(vec!["", "sku", "A B", "É", "A_1"]).prop_map(Value::from),
        1 => prop::sample::select(vec![32usize, 33]).prop_map(|n| Value::from("A".repeat(n))),
        1 => Just(json!(7)),
    ]
}

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (1i64..=100).prop_map(Value::from),
        1 => prop::sample::select(vec![0i64, -1, 101, i64::MAX, i64::MIN]).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(1.0), json!(1.5), json!("1"), json!(null), json!(u64::MAX), json!(1e300)]),
    ]
}

fn item() -> impl Strategy<Value = Value> {
    (
        sku(),
        quantity(),
        prop::option::weighted(0.05, Just(json!(true))),
    )
        .prop_map(|(sku, quantity, extra)| {
            let mut item = Map::new();
            item.insert("sku".into(), sku);
            item.insert("quantity".into(), quantity);
            if let Some(extra) = extra {
                item.insert("price".into(), extra);
            }
            Value::Object(item)
        })
}

fn order() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(item(), 0..23),
        prop::option::weighted(0.05, Just(json!("x"))),
    )
        .prop_map(|(items, extra)| {
            let mut order = Map::new();
            order.insert("items".into(), Value::Array(items));
            if let Some(extra) = extra {
                order.insert("coupon".into(), extra);
            }
            Value::Object(order)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_body_is_decoded_or_refused_without_panicking(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = accepts(&body);
    }

    #[test]
    fn a_body_is_accepted_as_the_documented_schema_says(order in order()) {
        let body = serde_json::to_vec(&order).unwrap_or_default();
        prop_assert_eq!(accepts(&body), model_order(&order), "{}", order);
    }

    #[test]
    fn a_refusal_names_the_first_bad_line(order in order()) {
        let Ok(decoded) = serde_json::from_value::<NewOrder>(order.clone()) else {
            return Ok(());
        };
        let Err(error) = check_items(&decoded.items) else {
            return Ok(());
        };
        prop_assert_eq!(error.status.as_u16(), 400);
        let items = decoded.items;
        let first_bad = (0..items.len()).find(|&i| {
            let as_value = serde_json::to_value(&items[i]).unwrap_or_default();
            model_item(&as_value).is_err() || items[..i].iter().any(|earlier: &Item| earlier.sku == items[i].sku)
        });
        match first_bad {
            _ if items.is_empty() || items.len() > 20 => prop_assert!(error.message.contains("1 to 20 items"), "{}", error.message),
            Some(index) => prop_assert!(error.message.starts_with(&format!("items[{index}]")), "{}", error.message),
            None => prop_assert!(false, "refused for nothing: {}", error.message),
        }
    }
}

/// Found by the properties above: a field the schema does not have was
/// ignored on a line, though openapi.yaml says `additionalProperties: false`.
#[test]
fn a_line_with_an_unknown_field_is_refused() {
    let body = r#"{"items":[{"price":true,"quantity":1,"sku":"A"}]}"#;
    assert!(serde_json::from_str::<NewOrder>(body).is_err());
    let body = r#"{"items":[{"quantity":1,"sku":"A"}]}"#;
    assert!(serde_json::from_str::<NewOrder>(body).is_ok());
}
