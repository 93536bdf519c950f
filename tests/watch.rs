//! `spindle watch`: an app of two Rust components made with `spindle new`
//! and `spindle add` runs under `spindle watch` while a client loops on
//! both. Editing one component's source rebuilds and redeploys just it; a
//! broken edit prints the compiler's error and leaves the last good version
//! serving; the other component is never rebuilt nor redeployed and no
//! request fails.
//!
//! The components compile spin-sdk in `target/templates-build`, shared with
//! tests/templates.rs, so only the edited crate recompiles.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use support::{App, Spindle, workspace_root};

/// How long one incremental rebuild and deploy may take on a slow machine.
const REBUILD_DEADLINE: Duration = Duration::from_secs(240);

/// `spindle ARGS` in `dir`; panics with its output if it fails.
fn spindle(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running spindle");
    assert!(
        out.status.success(),
        "spindle {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Points a Rust component's `target` at the shared build folder.
fn link_target(component_dir: &Path) {
    let shared = workspace_root().join("target/templates-build");
    std::fs::create_dir_all(&shared).expect("create target/templates-build");
    std::os::unix::fs::symlink(&shared, component_dir.join("target")).expect("link target");
}

/// Requests `path` until `done`, no faster than every 10 ms, and returns
/// every reply as `(status, body)`.
fn keep_asking(
    spindle: &Arc<Spindle>,
    path: &'static str,
    done: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    let (spindle, done) = (spindle.clone(), done.clone());
    tokio::spawn(async move {
        let mut replies = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        while !done.load(Ordering::Relaxed) {
            pace.tick().await;
            let reply = spindle.get(path).await;
            replies.push((reply.status, reply.body));
        }
        replies
    })
}

/// Waits until `path` answers with a body starting with `prefix`.
async fn wait_for_body(spindle: &Spindle, path: &str, prefix: &str) {
    let deadline = Instant::now() + REBUILD_DEADLINE;
    loop {
        let body = spindle.get(path).await.body;
        if body.starts_with(prefix) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {body:?}, not {prefix:?}, after {REBUILD_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_rebuilds_and_redeploys_only_its_component_and_a_broken_one_keeps_the_old() {
    let app = App::without_manifest().with_shared_compile_cache();
    let dir = app.dir().to_str().expect("utf-8").to_owned();
    spindle(app.dir(), &["new", "http-rust", "watched", "-o", &dir]);
    spindle(app.dir(), &["add", "http-rust", "bystander"]);
    link_target(app.dir());
    link_target(&app.dir().join("bystander"));
    // The first build (spin-sdk included) may be slow; it is not what is tested.
    spindle(app.dir(), &["build"]);
    let bystander_wasm =
        workspace_root().join("target/templates-build/wasm32-wasip2/release/bystander.wasm");
    let bystander_built = modified(&bystander_wasm);

    let spindle = Arc::new(app.watch());
    spindle.wait_for_stderr("Watching bystander", Duration::from_secs(30));
    wait_for_body(&spindle, "/", "Hello from watched!").await;
    let done = Arc::new(AtomicBool::new(false));
    let watched = keep_asking(&spindle, "/", &done);
    let bystander = keep_asking(&spindle, "/bystander/x", &done);

    let source = app.dir().join("src/lib.rs");
    let original = std::fs::read_to_string(&source).expect("read src/lib.rs");
    std::fs::write(&source, original.replace("Hello from", "Howdy from")).expect("edit");
    wait_for_body(&spindle, "/", "Howdy from watched!").await;
    spindle.wait_for_stderr("Rebuilt and deployed watched in", Duration::from_secs(10));

    std::fs::write(
        &source,
        original.replace("Hello from", "Howdy from") + "\nfn broken( {\n",
    )
    .expect("break the source");
    spindle.wait_for_stderr("watched: the build failed", REBUILD_DEADLINE);
    let log = spindle.stderr();
    assert!(
        log.contains("error: component `watched`") && log.contains("unclosed delimiter"),
        "the compiler's error is shown"
    );
    assert!(
        spindle
            .get("/")
            .await
            .body
            .starts_with("Howdy from watched!"),
        "the last good version keeps serving"
    );

    done.store(true, Ordering::Relaxed);
    let watched = watched.await.expect("the loop on watched");
    let bystander = bystander.await.expect("the loop on bystander");
    assert!(
        watched.iter().all(|(status, _)| *status == 200),
        "no request to the edited component failed"
    );
    assert!(
        watched.iter().any(|(_, body)| body.starts_with("Howdy")),
        "the loop saw the new version"
    );
    assert!(!bystander.is_empty());
    assert!(
        bystander.iter().all(|reply| *reply
            == (
                200,
                "Hello from bystander! You asked for /bystander/x\n".into()
            )),
        "the other component answered every request, unchanged"
    );
    let log = spindle.stderr();
    assert_eq!(
        log.matches("deployed a new version").count(),
        1,
        "one deploy: the edited component's good version"
    );
    assert!(
        !log.contains("Changed: bystander"),
        "the other was never rebuilt"
    );
    assert_eq!(modified(&bystander_wasm), bystander_built);
}
