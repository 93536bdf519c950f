//! Copies the WIT that spin-sdk 7 and 5 ship into `wit-deps/spin-sdk` and
//! `wit-deps/spin-sdk-5`, where the host's `bindgen!` calls read it (see
//! `build-support/spin_sdk_wit.rs`).

use std::env;
use std::path::PathBuf;

#[path = "../build-support/spin_sdk_wit.rs"]
mod spin_sdk_wit;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build-support/spin_sdk_wit.rs");
    // `spindle new` embeds these (include_dir! does not tell cargo).
    println!("cargo:rerun-if-changed=../templates");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    spin_sdk_wit::copy_spin_sdk_wit(&manifest_dir);
    spin_sdk_wit::copy_wit_of(&manifest_dir, 5, "spin-sdk-5");
}
