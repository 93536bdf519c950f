//! `spin:key-value`, end to end: the `key-value-ops` guest performs one
//! spin-sdk key-value operation per request against the real `spindle up`,
//! on the default SQLite store and on a Redis-backed label.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use support::{App, Spindle, guest_wasm, services::redis_url};

/// A spin.toml with one component, `kv`, on `/kv`, granted `stores`.
fn manifest(stores: &[&str]) -> String {
    let stores: Vec<String> = stores.iter().map(|label| format!("\"{label}\"")).collect();
    format!(
        "spin_manifest_version = 2\n\
         [application]\nname = \"key-value-test\"\n\
         [[trigger.http]]\nroute = \"/kv\"\ncomponent = \"kv\"\n\
         [component.kv]\nsource = \"{}\"\nkey_value_stores = [{}]\n",
        guest_wasm("key-value-ops").display(),
        stores.join(", ")
    )
}

/// Runs one operation (`op=set&key=k&value=v`, ...) and expects a 200.
async fn ok(spindle: &Spindle, query: &str) -> String {
    let reply = spindle.get(&format!("/kv?{query}")).await;
    assert_eq!(reply.status, 200, "{query}: {reply:?}");
    reply.body
}

/// A key prefix no other test run uses, for stores shared between runs.
fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_nanos();
    format!("spindle-test-{}-{nanos}-", std::process::id())
}

#[tokio::test]
async fn default_store_sets_gets_lists_and_deletes() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();

    assert_eq!(ok(&spindle, "op=get&key=a").await, "<none>");
    assert_eq!(ok(&spindle, "op=exists&key=a").await, "false");
    assert_eq!(ok(&spindle, "op=set&key=a&value=one").await, "ok");
    assert_eq!(ok(&spindle, "op=set&key=b&value=two").await, "ok");
    assert_eq!(ok(&spindle, "op=set&key=a&value=uno").await, "ok");
    assert_eq!(ok(&spindle, "op=get&key=a").await, "uno");
    assert_eq!(ok(&spindle, "op=exists&key=a").await, "true");
    assert_eq!(ok(&spindle, "op=keys").await, "a,b");

    assert_eq!(ok(&spindle, "op=delete&key=a").await, "ok");
    assert_eq!(
        ok(&spindle, "op=delete&key=a").await,
        "ok",
        "deleting twice"
    );
    assert_eq!(ok(&spindle, "op=get&key=a").await, "<none>");
    assert_eq!(ok(&spindle, "op=keys").await, "b");
}

#[tokio::test]
async fn many_keys_stream_to_the_guest() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();

    // More keys than the host reads ahead, so the stream has to refill.
    let mut expected = Vec::new();
    for i in 0..300 {
        let key = format!("k{i:03}");
        ok(&spindle, &format!("op=set&key={key}&value=v")).await;
        expected.push(key);
    }
    assert_eq!(ok(&spindle, "op=keys").await, expected.join(","));
}

#[tokio::test]
async fn store_not_granted_is_access_denied() {
    let app = App::new(&manifest(&["default"]));
    let spindle = app.start();

    let reply = spindle.get("/kv?store=other&op=open").await;

    assert_eq!(reply.status, 500, "{reply:?}");
    assert_eq!(reply.body, "Error::AccessDenied");
}

#[tokio::test]
async fn default_store_survives_a_restart() {
    let app = App::new(&manifest(&["default"]));
    {
        let spindle = app.start();
        ok(&spindle, "op=set&key=kept&value=across-restarts").await;
    }
    let spindle = app.start();
    assert_eq!(ok(&spindle, "op=get&key=kept").await, "across-restarts");
}

#[tokio::test]
async fn redis_backed_label_round_trips() {
    let app = App::new(&manifest(&["default", "cache"]));
    let runtime_config = app.manifest_path().with_file_name("runtime-config.toml");
    std::fs::write(
        &runtime_config,
        format!(
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis_url()
        ),
    )
    .expect("writing the runtime config");
    let spindle = app.start_with(&[
        "--runtime-config-file",
        runtime_config.to_str().expect("a UTF-8 path"),
    ]);
    let prefix = unique_prefix();
    let cache = |query: String| format!("store=cache&{query}");

    ok(&spindle, &cache(format!("op=set&key={prefix}x&value=1"))).await;
    ok(&spindle, &cache(format!("op=set&key={prefix}y&value=2"))).await;
    assert_eq!(
        ok(&spindle, &cache(format!("op=get&key={prefix}x"))).await,
        "1"
    );
    assert_eq!(
        ok(&spindle, &cache(format!("op=exists&key={prefix}y"))).await,
        "true"
    );
    assert_eq!(
        ok(&spindle, &cache(format!("op=keys&prefix={prefix}"))).await,
        format!("{prefix}x,{prefix}y")
    );
    // The label is Redis, not the default SQLite file.
    assert_eq!(
        ok(&spindle, &format!("op=get&key={prefix}x")).await,
        "<none>"
    );

    ok(&spindle, &cache(format!("op=delete&key={prefix}x"))).await;
    ok(&spindle, &cache(format!("op=delete&key={prefix}y"))).await;
    assert_eq!(
        ok(&spindle, &cache(format!("op=exists&key={prefix}x"))).await,
        "false"
    );
    assert_eq!(
        ok(&spindle, &cache(format!("op=keys&prefix={prefix}"))).await,
        ""
    );
}

#[test]
fn granted_label_without_backend_stops_up() {
    let (code, stderr) = App::new(&manifest(&["default", "cache"])).run_up_expecting_failure();

    assert_ne!(code, 0);
    assert!(
        stderr.contains("component `kv` is granted key-value store `cache`"),
        "{stderr}"
    );
}

/// Spin 3's `wasi:keyvalue` (store, atomics, batch) over the same stores
/// and grants: on the default SQLite store and on a Redis-backed label,
/// and `access-denied` for a label the component is not granted.
#[tokio::test]
async fn wasi_keyvalue_works_on_sqlite_and_redis_with_the_same_grants() {
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"wasi-kv\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"kv\"\n\
         [component.kv]\nsource = \"{}\"\nkey_value_stores = [\"default\", \"cache\"]\n",
        guest_wasm("wasi-keyvalue").display()
    );
    let app = App::new(&manifest);
    let config = app.dir().join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.cache]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis_url()
        ),
    )
    .expect("write the runtime config");
    let spindle = app.start_with(&[
        "--runtime-config-file",
        config.to_str().expect("utf-8 path"),
    ]);
    let prefix = unique_prefix();
    for store in ["default", "cache"] {
        let reply = spindle.get(&format!("/{store}?{prefix}")).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{store}");
    }
    let denied = spindle.get(&format!("/other?{prefix}")).await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (500, "open: Error::AccessDenied")
    );
}

/// Outbound Redis (`spin:redis`): every call against the local server the
/// manifest allows; an address it does not allow is `invalid-address`, as
/// in Spin, and no connection is made.
#[tokio::test]
async fn outbound_redis_reaches_allowed_servers_only() {
    let url = redis_url();
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"redis\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"client\"\n\
         [component.client]\nsource = \"{}\"\nallowed_outbound_hosts = [\"{url}\"]\n",
        guest_wasm("redis-client").display()
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    let prefix = unique_prefix();
    let call = |address: String| {
        let (spindle, prefix) = (&spindle, prefix.clone());
        async move {
            spindle
                .send_with_headers(
                    reqwest::Method::GET,
                    &format!("/?{prefix}"),
                    &[("x-redis", address.as_str())],
                    None,
                )
                .await
        }
    };

    let reply = call(url.clone()).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{url}");
    for denied in [
        "redis://127.0.0.1:6380",
        "redis://localhost:6379",
        "not a url",
    ] {
        let reply = call(denied.to_string()).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (500, "open: Error::InvalidAddress"),
            "{denied}"
        );
    }
}

/// Spin's Redis trigger: a `#[redis_subscriber]` component gets each
/// message published on its channel (the server from
/// `[application.trigger.redis] address`); a handler that fails loses only
/// its own message, as in Spin.
#[tokio::test]
async fn a_redis_trigger_hands_each_channel_message_to_its_component() {
    redis_trigger_delivers_each_message_to(guest_wasm("redis-subscriber")).await;
}

/// The same for a Spin 3 app: spin-sdk 5's `#[redis_component]` exports
/// `fermyon:spin/inbound-redis`.
#[tokio::test]
async fn a_redis_trigger_hands_messages_to_a_spin_sdk_5_component() {
    redis_trigger_delivers_each_message_to(guest_wasm("sdk5-redis-trigger")).await;
}

/// Publishes `one`, `fail`, `two` to a component that records what it gets
/// and answers it on `GET /`, and checks `one` and `two` arrive.
async fn redis_trigger_delivers_each_message_to(guest: std::path::PathBuf) {
    let url = redis_url();
    let channel = format!("{}channel", unique_prefix());
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"redis-trigger\"\n\
         [application.trigger.redis]\naddress = \"{url}\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"subscriber\"\n\
         [[trigger.redis]]\nchannel = \"{channel}\"\ncomponent = \"subscriber\"\n\
         [component.subscriber]\nsource = \"{}\"\nkey_value_stores = [\"default\"]\n",
        guest.display()
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    assert!(
        spindle.stdout().contains(&format!("subscriber: {channel}")),
        "{}",
        spindle.stdout()
    );
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut expected = String::new();
    for message in ["one", "fail", "two"] {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(message)
            .query_async(&mut redis)
            .await
            .expect("publish");
        assert_eq!(receivers, 1, "the host is subscribed to {channel}");
        if message == "fail" {
            continue;
        }
        expected.push_str(message);
        expected.push('\n');
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let received = spindle.get("/").await.body;
            if received == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "received {received:?}, want {expected:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
