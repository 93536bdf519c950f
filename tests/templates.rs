//! `spindle new` and `spindle add`: each template becomes an app with
//! `spindle new`, builds with `spindle build`, starts with `spindle up` and
//! answers its smoke request; `spindle add` puts a second component beside
//! the first; bad names and taken folders are refused with nothing written.
//!
//! The Rust templates compile spin-sdk for wasm in `target/templates-build`
//! (each generated app's `target` links there), so repeated runs are quick.
//! The TypeScript and Python ones use the toolchains `scripts/js-guests` and
//! `scripts/python-guests` install (pinned, from the registries), linked in
//! as the app's `node_modules` and `.venv`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::services::nats_url;
use support::{App, Spindle, workspace_root};

/// The `spindle` binary run with `args` in `dir`.
fn spindle(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running spindle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A name no other run uses (NATS subjects are shared by every test).
fn unique(prefix: &str) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &run[..8])
}

/// Links the toolchain a component made from `template` builds with into
/// its folder `dir`, as a developer's first build would install it.
fn link_toolchain(template: &str, dir: &Path) {
    let (link, target): (&str, PathBuf) = if template.ends_with("-rust") {
        let shared = workspace_root().join("target/templates-build");
        std::fs::create_dir_all(&shared).expect("create target/templates-build");
        ("target", shared)
    } else if template.ends_with("-ts") {
        support::js::js_guest_wasm("http-app");
        (
            "node_modules",
            workspace_root().join("tests/guests-js/http-app/node_modules"),
        )
    } else {
        support::python::python_guest_wasm("http-app");
        (".venv", workspace_root().join("target/guest-tools/python"))
    };
    std::os::unix::fs::symlink(&target, dir.join(link)).expect("link the toolchain");
}

/// `spindle new TEMPLATE NAME -o <fresh app dir>`, toolchain linked.
fn new_app(template: &str, name: &str) -> App {
    let app = App::without_manifest().with_shared_compile_cache();
    let out = spindle(
        app.dir(),
        &[
            "new",
            template,
            name,
            "-o",
            app.dir().to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "spindle new {template} {name} failed:\n{}",
        text(&out.stderr)
    );
    assert!(app.manifest_path().is_file(), "no spin.toml written");
    link_toolchain(template, app.dir());
    app
}

/// `spindle build` for the app; panics with its output if it fails.
fn build(app: &App) {
    let out = spindle(
        app.dir(),
        &["build", "-f", app.manifest_path().to_str().expect("utf-8")],
    );
    assert!(
        out.status.success(),
        "spindle build failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Starts the app with its messaging on the local NATS server.
fn start_on_nats(app: &App) -> Spindle {
    let config = app.dir().join("runtime-config.toml");
    std::fs::write(&config, format!("[messaging]\nurl = \"{}\"\n", nats_url()))
        .expect("write the runtime config");
    app.start_with(&["--runtime-config-file", config.to_str().expect("utf-8")])
}

async fn assert_greets(spindle: &Spindle, path: &str, name: &str) {
    let reply = spindle.get(path).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    assert_eq!(
        reply.body,
        format!("Hello from {name}! You asked for {path}\n"),
        "GET {path}"
    );
}

/// Makes `name` from an HTTP `template`, builds it, warms the compile cache
/// with its `wasm` when the build leaves it outside cargo's target, and
/// checks it greets on `path`.
async fn greets_once_built(template: &str, name: &str, wasm: Option<&str>, path: &str) {
    let app = new_app(template, name);
    build(&app);
    if let Some(wasm) = wasm {
        support::js::warm_shared_compile_cache(&app.dir().join(wasm));
    }
    let spindle = app.start();
    assert_greets(&spindle, path, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_rust_answers_with_a_greeting() {
    greets_once_built("http-rust", "hello-rust", None, "/anything").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_ts_answers_with_a_greeting() {
    greets_once_built(
        "http-ts",
        "hello-ts",
        Some("dist/hello-ts.wasm"),
        "/from/ts",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_py_answers_with_a_greeting() {
    greets_once_built("http-py", "hello-py", Some("hello_py.wasm"), "/from/py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_rust_answers_a_request_on_its_subject() {
    let name = unique("greeter-");
    let app = new_app("nats-rust", &name);
    build(&app);
    let _spindle = start_on_nats(&app);
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    let subject = format!("{name}.greet");
    // The host subscribes as it starts; until it has, a request finds no
    // responder, so it is asked again until the deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let request = client.request(subject.clone(), "world".into());
        match tokio::time::timeout(Duration::from_secs(2), request).await {
            Ok(Ok(reply)) => break reply,
            outcome if Instant::now() > deadline => {
                panic!("no reply on {subject} within 30 s: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(
        text(&reply.payload),
        format!("Hello, world! ({name} on {subject})")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_rust_stores_an_item_and_publishes_its_event() {
    let name = unique("items-");
    let app = new_app("service-rust", &name);
    build(&app);
    assert!(
        app.dir()
            .join("migrations")
            .read_dir()
            .expect("migrations")
            .count()
            > 0,
        "the service comes with a migration"
    );
    let spindle = start_on_nats(&app);
    let client = async_nats::connect(nats_url())
        .await
        .expect("connect to NATS");
    let mut events = client
        .subscribe(format!("{name}.created"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush the subscription");

    let created = spindle.post("/items", "buy milk").await;
    assert_eq!(created.status, 201, "POST /items: {}", created.body);
    let item: serde_json::Value = serde_json::from_str(&created.body).expect("JSON item");
    assert_eq!(item["text"], "buy milk");

    let listed = spindle.get("/items").await;
    assert_eq!(listed.status, 200, "GET /items: {}", listed.body);
    let items: serde_json::Value = serde_json::from_str(&listed.body).expect("JSON list");
    assert_eq!(items, serde_json::json!([item.clone()]));

    let event = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the outbox publishes the event within 30 s")
        .expect("the subscription stays open");
    let event: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON event");
    assert_eq!(event, item, "the event carries the stored item");
}

#[tokio::test(flavor = "multi_thread")]
async fn add_puts_a_second_component_beside_the_first_and_both_answer() {
    let app = new_app("http-rust", "front");
    let manifest = app.manifest_path();
    let out = spindle(
        app.dir(),
        &[
            "add",
            "http-rust",
            "api",
            "-f",
            manifest.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "spindle add failed:\n{}",
        text(&out.stderr)
    );
    assert!(app.dir().join("api/Cargo.toml").is_file());
    link_toolchain("http-rust", &app.dir().join("api"));
    build(&app);
    let spindle = app.start();
    assert_greets(&spindle, "/", "front").await;
    assert_greets(&spindle, "/api/users", "api").await;

    // A second `api`, or any folder already there, is refused as it is.
    let before = std::fs::read_to_string(&manifest).expect("read spin.toml");
    let again = spindle_add(app.dir(), "http-ts", "api");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already has a component `api`"),
        "{}",
        text(&again.stderr)
    );
    std::fs::create_dir(app.dir().join("taken")).expect("mkdir");
    let taken = spindle_add(app.dir(), "http-rust", "taken");
    assert!(
        text(&taken.stderr).contains("already exists"),
        "{}",
        text(&taken.stderr)
    );
    assert_eq!(std::fs::read_to_string(&manifest).expect("read"), before);
}

fn spindle_add(dir: &Path, template: &str, name: &str) -> Output {
    spindle(dir, &["add", template, name])
}

#[test]
fn bad_names_taken_folders_and_unknown_templates_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };

    for bad in ["Hello", "hello_world", "9lives", "x-", "a--b"] {
        let out = spindle(dir.path(), &["new", "http-rust", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            text(&out.stderr).contains("kebab-case"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        listing(dir.path()).is_empty(),
        "a refused name wrote something"
    );

    std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
    std::fs::write(dir.path().join("taken/notes.txt"), "mine").expect("write");
    let out = spindle(dir.path(), &["new", "http-rust", "taken"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(listing(&dir.path().join("taken")), ["notes.txt"]);

    let out = spindle(dir.path(), &["new", "cobol-http", "app"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no template `cobol-http`"), "{stderr}");
    for template in [
        "http-rust",
        "nats-rust",
        "service-rust",
        "http-ts",
        "http-py",
    ] {
        assert!(stderr.contains(template), "{template} not listed: {stderr}");
    }
    assert_eq!(listing(dir.path()), ["taken"]);

    let listed = spindle(dir.path(), &["new", "--list"]);
    assert!(listed.status.success());
    assert!(
        text(&listed.stdout).contains("service-rust"),
        "{}",
        text(&listed.stdout)
    );
}
