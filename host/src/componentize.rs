//! What apps bring, made into what the host runs, at load, as Spin does:
//!
//! - Core wasm modules become components, so that apps built for
//!   `wasm32-wasip1` (or `wasm32-unknown-unknown`) run unchanged. Such a
//!   module carries its component type in a custom section (what wit-bindgen
//!   embeds); `wit-component` wraps it into a component of that type. A
//!   module that imports WASI preview 1 (`wasi_snapshot_preview1`, the std of
//!   `wasm32-wasip1`) gets wasmtime's preview 1 adapter, which implements
//!   those imports over WASI 0.2. The compile cache keys a module by its
//!   bytes and the adapter's, so a new adapter recompiles it.
//! - Components built for Spin 4.0 (spin-sdk 6, the Python SDK 5) use the
//!   WASI 0.3 release candidate `0.3.0-rc-2026-03-15`, whose WIT is 0.3.0's
//!   but for the version (an unstable `exit-with-code` became stable). Their
//!   top-level import and export names are renamed to `@0.3.0`, so the one
//!   WASI 0.3 implementation serves both; wasmtime still checks every type
//!   against it when the component is linked. A component that names an
//!   interface both ways (the Python SDK 5 imports `wasi:cli`, `wasi:clocks`,
//!   `wasi:http` and the rest as `0.3.0` and as the release candidate) may
//!   not have two imports of one name: there the release candidate's becomes
//!   `@0.3.0+rc-2026-03-15`, which wasmtime's linker resolves to the same
//!   0.3.0 implementation (semver build metadata leaves the version as it
//!   is).

use std::borrow::Cow;
use std::collections::HashSet;

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
use wasm_encoder::reencode::{Error as ReencodeError, Reencode, ReencodeComponent};
use wasm_encoder::{ComponentSectionId, RawSection};
use wasmparser::{Parser, Payload};

/// The module name of WASI preview 1 imports.
const PREVIEW1: &str = "wasi_snapshot_preview1";

/// The version of the WASI 0.3 release candidate Spin 4.0 builds against,
/// and the release the host implements.
const WASI_P3_RC: &str = "@0.3.0-rc-2026-03-15";
const WASI_P3: &str = "@0.3.0";
/// The release-candidate name of an interface the component also names as
/// the release: the release's version with the candidate as build metadata.
const WASI_P3_RC_TWIN: &str = "@0.3.0+rc-2026-03-15";

/// `wasm` as a component the host runs: a component as it is (or with its
/// WASI 0.3 release-candidate names renamed), a core module made into one.
pub fn to_component(wasm: &[u8]) -> anyhow::Result<Cow<'_, [u8]>> {
    if !Parser::is_core_wasm(wasm) {
        return wasi_p3_rc_renamed(wasm);
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
/// it: the adapter, for core modules; the renaming, for components that
/// name the WASI 0.3 release candidate (a host before it cached them as
/// they were); nothing for other components.
pub fn cache_salt(wasm: &[u8]) -> Option<[u8; 32]> {
    if Parser::is_core_wasm(wasm) {
        Some(Sha256::digest(WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER).into())
    } else if names_wasi_p3_rc(wasm) {
        // A component naming an interface both ways did not load before
        // the build-metadata name, so nothing cached has the other naming.
        Some(Sha256::digest(format!("{WASI_P3_RC} as {WASI_P3}")).into())
    } else {
        None
    }
}

/// Whether the wasm names the WASI 0.3 release candidate anywhere: a byte
/// search, cheap next to parsing, and most components never do.
fn names_wasi_p3_rc(wasm: &[u8]) -> bool {
    memchr::memmem::find(wasm, WASI_P3_RC.as_bytes()).is_some()
}

/// The component with its top-level `wasi:*@0.3.0-rc-2026-03-15` imports
/// and exports named `@0.3.0`; itself when it has none.
fn wasi_p3_rc_renamed(component: &[u8]) -> anyhow::Result<Cow<'_, [u8]>> {
    if !names_wasi_p3_rc(component) {
        return Ok(Cow::Borrowed(component));
    }
    let mut renamed = wasm_encoder::Component::new();
    RenameWasiP3Rc::new(component)?
        .parse_component(&mut renamed, Parser::new(0), component)
        .context("renaming the component's WASI 0.3 release-candidate imports")?;
    Ok(Cow::Owned(renamed.finish()))
}

/// Renames the outermost component's WASI 0.3 release-candidate imports
/// and exports. Nested modules and components are copied as they are:
/// their imports are satisfied by name from inside, not by the host.
struct RenameWasiP3Rc {
    /// The outermost component's import names, as it has them.
    imports: HashSet<String>,
    /// Its export names, as it has them.
    exports: HashSet<String>,
}

impl RenameWasiP3Rc {
    /// The renamer for `component`, which knows the names it imports and
    /// exports, so that none is renamed to one it has already.
    fn new(component: &[u8]) -> anyhow::Result<RenameWasiP3Rc> {
        let mut renamer = RenameWasiP3Rc {
            imports: HashSet::new(),
            exports: HashSet::new(),
        };
        // `parse_all` goes into nested modules and components too; their
        // names are their own.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(component) {
            match payload.context("reading the component")? {
                Payload::Version { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(imports) if depth == 1 => {
                    for import in imports {
                        let import = import.context("reading the component's imports")?;
                        renamer.imports.insert(import.name.name.to_owned());
                    }
                }
                Payload::ComponentExportSection(exports) if depth == 1 => {
                    for export in exports {
                        let export = export.context("reading the component's exports")?;
                        renamer.exports.insert(export.name.name.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(renamer)
    }
}

/// `name`, with the release-candidate version of a `wasi:` package made the
/// release's: `@0.3.0`, or `@0.3.0+rc-2026-03-15` where `taken` (the
/// component's other names of that kind) has the `@0.3.0` name already.
fn renamed<'a>(
    name: wasmparser::ComponentExternName<'a>,
    taken: &HashSet<String>,
) -> wasm_encoder::ComponentExternName<'a> {
    let mut name = wasm_encoder::ComponentExternName::from(name);
    if let Some(base) = name.name.strip_suffix(WASI_P3_RC)
        && base.starts_with("wasi:")
    {
        let release = format!("{base}{WASI_P3}");
        name.name = Cow::Owned(if taken.contains(&release) {
            format!("{base}{WASI_P3_RC_TWIN}")
        } else {
            release
        });
    }
    name
}

impl Reencode for RenameWasiP3Rc {
    type Error = std::convert::Infallible;
}

impl ReencodeComponent for RenameWasiP3Rc {
    fn parse_component_import_section(
        &mut self,
        imports: &mut wasm_encoder::ComponentImportSection,
        section: wasmparser::ComponentImportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        for import in section {
            let import = import?;
            let ty = self.component_type_ref(import.ty)?;
            imports.import(renamed(import.name, &self.imports), ty);
        }
        Ok(())
    }

    fn parse_component_export(
        &mut self,
        exports: &mut wasm_encoder::ComponentExportSection,
        export: wasmparser::ComponentExport<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let ty = export
            .ty
            .map(|ty| self.component_type_ref(ty))
            .transpose()?;
        let index = self.component_external_index(export.kind, export.index);
        exports.export(
            renamed(export.name, &self.exports),
            export.kind.into(),
            index,
            ty,
        );
        Ok(())
    }

    fn parse_component_submodule(
        &mut self,
        component: &mut wasm_encoder::Component,
        _parser: Parser,
        module: &[u8],
    ) -> Result<(), ReencodeError<Self::Error>> {
        component.section(&RawSection {
            id: ComponentSectionId::CoreModule.into(),
            data: module,
        });
        Ok(())
    }

    fn parse_component_subcomponent(
        &mut self,
        component: &mut wasm_encoder::Component,
        _parser: Parser,
        subcomponent: &[u8],
        _whole_component: &[u8],
    ) -> Result<(), ReencodeError<Self::Error>> {
        component.section(&RawSection {
            id: ComponentSectionId::Component.into(),
            data: subcomponent,
        });
        Ok(())
    }
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

    #[test]
    fn wasi_release_candidate_names_are_renamed_on_the_outer_component_only() {
        let rc = "wasi:http/types@0.3.0-rc-2026-03-15";
        let component = component_importing_and_exporting(&[rc, "spin:x/y@0.3.0-rc-2026-03-15"]);
        let renamed = to_component(&component).expect("renamed");
        wasmparser::Validator::new()
            .validate_all(&renamed)
            .expect("still a valid component");
        assert_eq!(
            outer_and_nested_names(&renamed),
            (
                vec![
                    "wasi:http/types@0.3.0".to_owned(),
                    "spin:x/y@0.3.0-rc-2026-03-15".to_owned(),
                    "wasi:http/types@0.3.0".to_owned(),
                ],
                vec![rc.to_owned()],
            ),
            "outer imports, then its export; the nested component's import"
        );
        assert!(
            cache_salt(&component).is_some(),
            "a host before it cached it unrenamed"
        );
        let released = component_importing_and_exporting(&["wasi:http/types@0.3.0"]);
        assert!(matches!(to_component(&released), Ok(Cow::Borrowed(_))));
        assert_eq!(cache_salt(&released), None);
    }

    #[test]
    fn a_release_candidate_import_named_as_the_release_too_keeps_the_candidate_as_build_metadata() {
        let rc = "wasi:clocks/types@0.3.0-rc-2026-03-15";
        let release = "wasi:clocks/types@0.3.0";
        let component = component_importing_and_exporting(&[rc, release]);
        let renamed = to_component(&component).expect("renamed");
        wasmparser::Validator::new()
            .validate_all(&renamed)
            .expect("still a valid component: no two imports of one name");
        assert_eq!(
            outer_and_nested_names(&renamed).0,
            vec![
                "wasi:clocks/types@0.3.0+rc-2026-03-15".to_owned(),
                release.to_owned(),
                release.to_owned(),
            ],
            "outer imports, then its export (the only export of that name)"
        );
    }

    /// A component importing an (empty) instance under each name and
    /// exporting the first; it nests a component that imports the first.
    fn component_importing_and_exporting(names: &[&str]) -> Vec<u8> {
        use wasm_encoder::{
            Component, ComponentExportKind, ComponentExportSection, ComponentImportSection,
            ComponentTypeRef, ComponentTypeSection, InstanceType, NestedComponentSection,
        };
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        let mut imports = ComponentImportSection::new();
        for name in names {
            imports.import(*name, ComponentTypeRef::Instance(0));
        }
        let mut nested_imports = ComponentImportSection::new();
        nested_imports.import(names[0], ComponentTypeRef::Instance(0));
        let mut nested = Component::new();
        nested.section(&types).section(&nested_imports);
        let mut exports = ComponentExportSection::new();
        exports.export(names[0], ComponentExportKind::Instance, 0, None);
        let mut outer = Component::new();
        outer
            .section(&types)
            .section(&imports)
            .section(&NestedComponentSection(&nested))
            .section(&exports);
        outer.finish()
    }

    /// The outer component's import and export names, and those its nested
    /// components import.
    fn outer_and_nested_names(component: &[u8]) -> (Vec<String>, Vec<String>) {
        let (mut outer, mut nested, mut depth) = (Vec::new(), Vec::new(), 0);
        for payload in Parser::new(0).parse_all(component) {
            match payload.expect("a valid component") {
                Payload::Version { .. } => depth += 1,
                Payload::End(_) => depth -= 1,
                Payload::ComponentImportSection(imports) => {
                    let names = if depth == 1 { &mut outer } else { &mut nested };
                    names.extend(
                        imports
                            .into_iter()
                            .map(|import| import.expect("an import").name.name.to_owned()),
                    );
                }
                Payload::ComponentExportSection(exports) if depth == 1 => {
                    outer.extend(
                        exports
                            .into_iter()
                            .map(|export| export.expect("an export").name.name.to_owned()),
                    );
                }
                _ => {}
            }
        }
        (outer, nested)
    }

    /// `(component)`: the smallest component.
    fn wat_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
