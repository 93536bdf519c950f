//! Core wasm modules made into components at load, as Spin does, so that
//! apps built for `wasm32-wasip1` (or `wasm32-unknown-unknown`) run
//! unchanged.
//!
//! Such a module carries its component type in a custom section (what
//! wit-bindgen embeds); `wit-component` wraps it into a component of that
//! type. A module that imports WASI preview 1 (`wasi_snapshot_preview1`, the
//! std of `wasm32-wasip1`) gets wasmtime's preview 1 adapter, which
//! implements those imports over WASI 0.2. The compile cache keys a module
//! by its bytes and the adapter's, so a new adapter recompiles it.

use std::borrow::Cow;

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
use wasmparser::{Parser, Payload};

/// The module name of WASI preview 1 imports.
const PREVIEW1: &str = "wasi_snapshot_preview1";

/// `wasm` as a component: itself when it is one, else the module made into
/// one.
pub fn to_component(wasm: &[u8]) -> anyhow::Result<Cow<'_, [u8]>> {
    if !Parser::is_core_wasm(wasm) {
        return Ok(Cow::Borrowed(wasm));
    }
    let mut encoder = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(wasm)
        .context("reading the core module and the component type it embeds")?;
    if imports_preview1(wasm)? {
        encoder = encoder
            .adapter(PREVIEW1, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
            .context("adding the WASI preview 1 adapter")?;
    }
    let component = encoder
        .encode()
        .context("making the core module into a component")?;
    Ok(Cow::Owned(component))
}

/// What besides the wasm's bytes decides what [`to_component`] makes of
/// it: the adapter, for core modules; nothing for components.
pub fn cache_salt(wasm: &[u8]) -> Option<[u8; 32]> {
    Parser::is_core_wasm(wasm)
        .then(|| Sha256::digest(WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER).into())
}

/// Whether the module imports anything from WASI preview 1.
fn imports_preview1(module: &[u8]) -> anyhow::Result<bool> {
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ImportSection(imports) = payload.context("reading the module")? {
            for import in imports.into_imports() {
                if import.context("reading the module's imports")?.module == PREVIEW1 {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_left_as_it_is() {
        let component = wat_component();
        assert!(matches!(to_component(&component), Ok(Cow::Borrowed(_))));
        assert_eq!(cache_salt(&component), None);
    }

    #[test]
    fn a_core_module_becomes_a_component_keyed_by_the_adapter_too() {
        // `(module)`: the smallest core module; with no component type it
        // makes a component that exports nothing.
        let module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        let component = to_component(&module).expect("componentized");
        assert!(!Parser::is_core_wasm(&component));
        assert!(cache_salt(&module).is_some());
    }

    /// `(component)`: the smallest component.
    fn wat_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
