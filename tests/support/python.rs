//! Python guests: apps under `tests/guests-python/<app>/` (Spin Python SDK
//! 3.x, WASI 0.2) and `tests/guests-python-spin4/<app>/` (SDK 5, Spin 4.0)
//! built with componentize-py by `scripts/python-guests`, which installs each
//! SDK set (pinned) on first use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::workspace_root;

/// Runs `scripts/python-guests` once per test process; panics with its
/// output if it fails.
fn build_python_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = workspace_root().join("scripts/python-guests");
        let output = Command::new(&script)
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", script.display()));
        assert!(
            output.status.success(),
            "scripts/python-guests failed ({}):\n--- stdout ---\n{}--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The component built from `tests/guests-python/<app>/`, e.g. `http-app` →
/// `<root>/target/guests-python/http-app.wasm`. Builds the Python guests
/// first.
pub fn python_guest_wasm(app: &str) -> PathBuf {
    built_wasm("guests-python", app)
}

/// The component built from `tests/guests-python-spin4/<app>/` with the
/// Spin 4.0 SDK, e.g. `http-app` →
/// `<root>/target/guests-python-spin4/http-app.wasm`. Builds the Python
/// guests first.
pub fn python_spin4_guest_wasm(app: &str) -> PathBuf {
    built_wasm("guests-python-spin4", app)
}

/// `<root>/target/<set>/<app>.wasm`, built from `tests/<set>/<app>/`.
fn built_wasm(set: &str, app: &str) -> PathBuf {
    build_python_guests();
    // The script writes under the workspace's own target/, whatever
    // CARGO_TARGET_DIR says: its venv and outputs are not cargo's.
    let path = workspace_root()
        .join("target")
        .join(set)
        .join(format!("{app}.wasm"));
    assert!(
        path.is_file(),
        "scripts/python-guests ran but {} is missing (is there a tests/{set}/{app}/?)",
        path.display()
    );
    path
}
