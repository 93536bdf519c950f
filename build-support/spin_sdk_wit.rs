//! Shared by build scripts (`#[path]`-included): copies the WIT that the
//! spin-sdk crates ship into a crate's `wit-deps/`, so bindings are generated
//! from exactly the interfaces spin-sdk guests import (the versions pinned in
//! Cargo.lock), never from a retyped copy. spin-sdk 7 carries the WASI 0.3
//! interfaces; spin-sdk 5 carries Spin 2 and 3's WASI 0.2 worlds
//! (`fermyon:spin@2.0.0`, `spin:postgres@3.0.0`/`@4.0.0`, `spin:sqlite@3.0.0`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// Brings `<manifest_dir>/wit-deps/spin-sdk` in line with spin-sdk 7's `wit/`.
pub fn copy_spin_sdk_wit(manifest_dir: &Path) {
    copy_wit_of(manifest_dir, 7, "spin-sdk");
}

/// Brings `<manifest_dir>/wit-deps/<into>` in line with the `wit/` of the
/// spin-sdk whose major version is `major`.
pub fn copy_wit_of(manifest_dir: &Path, major: u64, into: &str) {
    let (spin_sdk, workspace_root) = spin_sdk_dir(manifest_dir, major);
    println!(
        "cargo:rerun-if-changed={}",
        workspace_root.join("Cargo.lock").display()
    );
    let source = spin_sdk.join("wit");
    let target = manifest_dir.join("wit-deps").join(into);
    if !same_tree(&source, &target) {
        let _ = fs::remove_dir_all(&target);
        copy_tree(&source, &target).unwrap_or_else(|e| {
            panic!("copying {} to {}: {e}", source.display(), target.display())
        });
    }
}

/// Where cargo unpacked the spin-sdk `major`.x the workspace's guests use,
/// and the workspace's root.
fn spin_sdk_dir(manifest_dir: &Path, major: u64) -> (PathBuf, PathBuf) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(manifest_dir)
        .output()
        .expect("running `cargo metadata` to find spin-sdk's WIT");
    assert!(
        output.status.success(),
        "`cargo metadata` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("`cargo metadata` prints JSON");
    let packages = metadata["packages"]
        .as_array()
        .expect("metadata lists packages");
    let prefix = format!("{major}.");
    let spin_sdk = packages
        .iter()
        .find(|package| {
            package["name"] == "spin-sdk"
                && package["version"]
                    .as_str()
                    .is_some_and(|version| version.starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("spin-sdk {major}.x is a dependency of the workspace's guests"));
    let manifest_path = spin_sdk["manifest_path"].as_str().expect("a manifest path");
    let spin_sdk = Path::new(manifest_path)
        .parent()
        .expect("a manifest lives in a directory")
        .to_path_buf();
    let workspace_root = metadata["workspace_root"]
        .as_str()
        .expect("metadata names the workspace root");
    (spin_sdk, PathBuf::from(workspace_root))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let destination = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &destination)?;
        } else {
            fs::copy(entry.path(), destination)?;
        }
    }
    Ok(())
}

/// Rewriting identical files would make every build regenerate the bindings.
fn same_tree(a: &Path, b: &Path) -> bool {
    let Ok(entries) = fs::read_dir(a) else {
        return false;
    };
    entries.flatten().all(|entry| {
        let other = b.join(entry.file_name());
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => same_tree(&entry.path(), &other),
            _ => fs::read(entry.path()).ok() == fs::read(&other).ok(),
        }
    }) && fs::read_dir(b).map(|e| e.count()).ok() == fs::read_dir(a).map(|e| e.count()).ok()
}
