//! Apps built with the Rust spin-sdk 3.x and 5.x (Spin 2 and 3's WASI 0.2
//! worlds) using key-value, SQLite and variables through
//! `fermyon:spin/*@2.0.0` and `spin:sqlite/sqlite@3.0.0`, on the real
//! `spindle up`. The spin-sdk 3 guests are built for `wasm32-wasip1`, as
//! Spin's templates of that time built them, and made components at load;
//! the spin-sdk 5 guests are `wasm32-wasip2` components.

mod support;

use std::path::PathBuf;

use support::{App, Spindle, core_module_wasm, guest_wasm, services::redis_url};

/// The guest crate `name` as the SDK of its name builds it.
fn wasm(name: &str) -> PathBuf {
    if name.starts_with("sdk3-") {
        core_module_wasm(name, "wasm32-wasip1")
    } else {
        guest_wasm(name)
    }
}

/// A spin.toml running `guest` as component `app` on `/...`, with `grants`
/// (manifest lines for the component) and `extra` (app-level sections).
fn manifest(guest: &str, grants: &str, extra: &str) -> String {
    format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"spin-sdk-app\"\n{extra}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"app\"\n\
         [component.app]\nsource = \"{}\"\n{grants}\n",
        wasm(guest).display()
    )
}

async fn expect(spindle: &Spindle, path: &str, status: u16, body: &str) {
    let reply = spindle.get(path).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (status, body),
        "GET {path}: {reply:?}"
    );
}

#[tokio::test]
async fn key_value_v2_on_the_default_store_from_both_sdks() {
    for guest in ["sdk3-key-value", "sdk5-key-value"] {
        let app = App::new(&manifest(guest, "key_value_stores = [\"default\"]", ""));
        let spindle = app.start();
        expect(&spindle, "/?store=default", 200, "ok").await;
        expect(&spindle, "/?store=other", 403, "access-denied").await;
    }
}

#[tokio::test]
async fn key_value_v2_on_a_redis_store() {
    let app = App::new(&manifest(
        "sdk5-key-value",
        "key_value_stores = [\"cache\"]",
        "",
    ));
    let runtime_config = app.dir().join("runtime-config.toml");
    std::fs::write(
        &runtime_config,
        format!(
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis_url()
        ),
    )
    .expect("write the runtime config");
    let runtime_config = runtime_config.to_str().expect("a UTF-8 temp path");
    let spindle = app.start_with(&["--runtime-config-file", runtime_config]);
    expect(&spindle, "/?store=cache", 200, "ok").await;
}

#[tokio::test]
async fn sqlite_v2_and_v3_write_and_read_every_value_type() {
    let app = App::new(&manifest(
        "sdk5-sqlite",
        "sqlite_databases = [\"default\"]",
        "",
    ));
    let spindle = app.start();
    expect(&spindle, "/?api=v2", 200, "ok").await;
    expect(&spindle, "/?api=v3", 200, "ok").await;
    expect(&spindle, "/?api=v2&db=other", 403, "access-denied").await;
    expect(&spindle, "/?api=v3&db=other", 403, "access-denied").await;

    let app = App::new(&manifest(
        "sdk3-sqlite",
        "sqlite_databases = [\"default\"]",
        "",
    ));
    let spindle = app.start();
    expect(&spindle, "/", 200, "ok").await;
    expect(&spindle, "/?db=other", 403, "access-denied").await;
}

#[tokio::test]
async fn variables_v2_read_component_variables_from_both_sdks() {
    for guest in ["sdk3-variables", "sdk5-variables"] {
        let app = App::new(&manifest(
            guest,
            "[component.app.variables]\ngreeting = \"hello {{ who }}\"",
            "[variables]\nwho = { default = \"world\" }",
        ));
        let spindle = app.start();
        expect(&spindle, "/?name=greeting", 200, "hello world").await;
        let reply = spindle.get("/?name=nothing").await;
        assert_eq!(reply.status, 404, "{reply:?}");
        assert!(reply.body.starts_with("undefined"), "{reply:?}");
        let reply = spindle.get("/?name=Bad-Name").await;
        assert_eq!(reply.status, 400, "{reply:?}");
    }
}
