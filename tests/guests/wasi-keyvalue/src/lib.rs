//! Test guest: `GET /<store>?<prefix>` runs every `wasi:keyvalue` function
//! against the store labelled `<store>`, on keys that start with `<prefix>`,
//! and answers 200 `ok`, or 500 naming the first step whose result was not
//! what it should be (an error from `open` is answered as `open: <error>`).

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

wit_bindgen::generate!({
    path: "wit-deps/spin-sdk",
    world: "wasi:keyvalue/imports@0.2.0-draft2",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};

#[http_service]
async fn run(req: Request) -> Result<impl IntoResponse, http::Error> {
    let label = req.uri().path().trim_start_matches('/').to_owned();
    let prefix = req.uri().query().unwrap_or_default().to_owned();
    let (status, body) = match exercise(&label, &prefix) {
        Ok(()) => (200, "ok".to_string()),
        Err(failure) => (500, failure),
    };
    http::Response::builder().status(status).body(body)
}

/// Fails with the step's name and what came back instead.
fn check<T: std::fmt::Debug + PartialEq>(step: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{step}: got {got:?}, want {want:?}"))
    }
}

/// Turns a store error into the failure of `step`.
fn fail(step: &'static str) -> impl Fn(store::Error) -> String {
    move |error| format!("{step}: {error:?}")
}

fn exercise(label: &str, prefix: &str) -> Result<(), String> {
    let bucket = store::open(label).map_err(|error| format!("open: {error:?}"))?;
    let key = |name: &str| format!("{prefix}{name}");

    bucket.set(&key("plain"), b"value").map_err(fail("set"))?;
    check(
        "get",
        bucket.get(&key("plain")).map_err(fail("get"))?,
        Some(b"value".to_vec()),
    )?;
    check(
        "exists",
        bucket.exists(&key("plain")).map_err(fail("exists"))?,
        true,
    )?;
    bucket.delete(&key("plain")).map_err(fail("delete"))?;
    check(
        "get after delete",
        bucket.get(&key("plain")).map_err(fail("get"))?,
        None,
    )?;

    bucket.delete(&key("counter")).map_err(fail("delete"))?;
    atomics::increment(&bucket, &key("counter"), 5).map_err(fail("increment"))?;
    let count = atomics::increment(&bucket, &key("counter"), 5).map_err(fail("increment"))?;
    check("increment", count, 10)?;
    check(
        "counter as text",
        bucket.get(&key("counter")).map_err(fail("get"))?,
        Some(b"10".to_vec()),
    )?;

    bucket.delete(&key("swapped")).map_err(fail("delete"))?;
    let cas = atomics::Cas::new(&bucket, &key("swapped")).map_err(fail("cas"))?;
    check("cas current", cas.current().map_err(fail("current"))?, None)?;
    atomics::swap(cas, b"first").map_err(|error| format!("swap: {error:?}"))?;
    let cas = atomics::Cas::new(&bucket, &key("swapped")).map_err(fail("cas"))?;
    bucket
        .set(&key("swapped"), b"meanwhile")
        .map_err(fail("set"))?;
    match atomics::swap(cas, b"second") {
        Err(atomics::CasError::CasFailed(fresh)) => check(
            "fresh current",
            fresh.current().map_err(fail("current"))?,
            Some(b"meanwhile".to_vec()),
        )?,
        other => return Err(format!("swap over a changed value: got {other:?}")),
    }
    check(
        "after failed swap",
        bucket.get(&key("swapped")).map_err(fail("get"))?,
        Some(b"meanwhile".to_vec()),
    )?;

    let pairs = vec![(key("b1"), b"1".to_vec()), (key("b2"), b"2".to_vec())];
    batch::set_many(&bucket, &pairs).map_err(fail("set-many"))?;
    let keys = [key("b1"), key("b2"), key("b3")];
    let got = batch::get_many(&bucket, &keys).map_err(fail("get-many"))?;
    check(
        "get-many",
        got,
        vec![
            (key("b1"), Some(b"1".to_vec())),
            (key("b2"), Some(b"2".to_vec())),
            (key("b3"), None),
        ],
    )?;
    let listed = bucket.list_keys(None).map_err(fail("list-keys"))?;
    if !listed.keys.contains(&key("b1")) || listed.cursor.is_some() {
        return Err(format!("list-keys: {:?}", listed.keys));
    }
    batch::delete_many(&bucket, &keys).map_err(fail("delete-many"))?;
    check(
        "after delete-many",
        bucket.exists(&key("b2")).map_err(fail("exists"))?,
        false,
    )?;
    Ok(())
}
