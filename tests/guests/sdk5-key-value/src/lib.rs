//! Checks `fermyon:spin/key-value@2.0.0` as an app built with spin-sdk 3.x or 5.x
//! uses it: `GET /?store=<label>` runs set, get, exists, get-keys and delete
//! on the store and answers 200 `ok`, or 500 with what went wrong; a store
//! the host refuses answers 403 with the interface's error.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error, Store};

#[http_component]
fn handle(request: Request) -> Response {
    let label = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("store="))
        .unwrap_or("default")
        .to_owned();
    match exercise(&label) {
        Ok(()) => Response::new(200, "ok"),
        Err(Error::AccessDenied) => Response::new(403, "access-denied"),
        Err(Error::NoSuchStore) => Response::new(404, "no-such-store"),
        Err(error) => Response::new(500, format!("{error:?}")),
    }
    .into_response()
}

fn exercise(label: &str) -> Result<(), Error> {
    let store = Store::open(label)?;
    store.set("greeting", b"hello")?;
    check(
        store.get("greeting")? == Some(b"hello".to_vec()),
        "get after set",
    )?;
    check(store.exists("greeting")?, "exists after set")?;
    check(
        store.get_keys()?.contains(&"greeting".to_owned()),
        "get-keys lists the key",
    )?;
    store.delete("greeting")?;
    check(!store.exists("greeting")?, "exists after delete")?;
    check(store.get("greeting")?.is_none(), "get after delete")
}

fn check(holds: bool, what: &str) -> Result<(), Error> {
    if holds {
        Ok(())
    } else {
        Err(Error::Other(format!("check failed: {what}")))
    }
}
