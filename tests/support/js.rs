//! JavaScript guests: apps under `tests/guests-js/<app>/` built with the Spin
//! JS SDK and its build tools (`j2w`, ComponentizeJS) from the npm registry by
//! `scripts/js-guests`, which installs each app's pinned packages on first use.
//!
//! A JavaScript component carries a whole JS engine, so compiling it takes
//! longer than `spindle up`'s start-up deadline allows when every test process
//! compiles it at once on a busy machine; [`warm_shared_compile_cache`]
//! compiles it once, up front, into the cache the tests share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{App, workspace_root};

/// How long compiling one large component may take on a loaded machine.
const COMPILE_DEADLINE: Duration = Duration::from_secs(600);

/// Runs `scripts/js-guests` once per test process; panics with its output if
/// it fails.
fn build_js_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = workspace_root().join("scripts/js-guests");
        let output = Command::new(&script)
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
        assert!(
            output.status.success(),
            "scripts/js-guests failed ({}):\n--- stdout ---\n{}--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The component built from `tests/guests-js/<app>/`, e.g. `http-app` →
/// `<root>/target/guests-js/http-app.wasm`. Builds the JavaScript guests
/// first.
pub fn js_guest_wasm(app: &str) -> PathBuf {
    build_js_guests();
    // The script writes under the workspace's own target/, whatever
    // CARGO_TARGET_DIR says: its node_modules and outputs are not cargo's.
    let path = workspace_root()
        .join("target/guests-js")
        .join(format!("{app}.wasm"));
    assert!(
        path.is_file(),
        "scripts/js-guests ran but {} is missing (is there a tests/guests-js/{app}/?)",
        path.display()
    );
    path
}

/// Compiles `wasm` into the compile cache of
/// [`App::with_shared_compile_cache`], once per test process and one process
/// at a time (a file lock), so that the apps the tests then start load it from
/// the cache. It runs `spindle up` on a one-component app until it serves or
/// exits: the host compiles and caches a component before it links it, so
/// the cache is warmed even when linking fails, and that failure is left for
/// the test's own start-up to report.
pub fn warm_shared_compile_cache(wasm: &Path) {
    static WARMED: OnceLock<()> = OnceLock::new();
    WARMED.get_or_init(|| {
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"warm-up\"\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"warm\"\n\
             [component.warm]\nsource = \"{}\"\n",
            wasm.display()
        );
        let app = App::new(&manifest).with_shared_compile_cache();
        let cache = app.cache_dir();
        std::fs::create_dir_all(&cache)
            .unwrap_or_else(|err| panic!("creating {}: {err}", cache.display()));
        let lock_path = cache.join(".warm-up.lock");
        let lock = std::fs::File::create(&lock_path)
            .unwrap_or_else(|err| panic!("creating {}: {err}", lock_path.display()));
        // Released when `lock` is dropped at the end of this closure.
        lock.lock()
            .unwrap_or_else(|err| panic!("locking {}: {err}", lock_path.display()));

        let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("up")
            .arg("-f")
            .arg(app.manifest_path())
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(app.dir().join(".spin"))
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting spindle to warm the compile cache");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (serving, serving_seen) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Serving http://") {
                    let _ = serving.send(());
                }
            }
        });

        let deadline = Instant::now() + COMPILE_DEADLINE;
        loop {
            let exited = child
                .try_wait()
                .expect("polling the warm-up spindle")
                .is_some();
            if exited || serving_seen.try_recv().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "spindle did not compile {} within {COMPILE_DEADLINE:?}",
                    wasm.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    });
}
