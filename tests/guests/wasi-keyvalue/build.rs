//! Copies spin-sdk's WIT (which ships `wasi:keyvalue`) into `wit-deps/`, where
//! `wit_bindgen::generate!` reads it.

use std::env;
use std::path::PathBuf;

#[path = "../../../build-support/spin_sdk_wit.rs"]
mod spin_sdk_wit;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    spin_sdk_wit::copy_spin_sdk_wit(&manifest_dir);
}
