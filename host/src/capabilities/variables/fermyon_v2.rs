//! `fermyon:spin/variables@2.0.0` (Spin 2 and 3 apps) in front of the same
//! variables and errors as `spin:variables/variables@3.0.0`.

use wasmtime::component::{HasData, Linker};

use super::InstanceState;
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-variables;
            world imports {
                import fermyon:spin/variables@2.0.0;
            }
        ",
        world: "spindle:fermyon-variables/imports",
        imports: { default: trappable | tracing },
    });
}

use bindings::fermyon::spin2_0_0::variables::{self as wit, Error};

/// Links the interface over the instance's variables.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, FermyonVariables>(linker, |state| &mut state.variables)
}

struct FermyonVariables;

impl HasData for FermyonVariables {
    type Data<'a> = &'a mut InstanceState;
}

impl wit::Host for InstanceState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        let _span = tracing::debug_span!("variables.get", variable = %name).entered();
        Ok(self.lookup(&name).map_err(|error| match error {
            super::Error::InvalidName(message) => Error::InvalidName(message),
            super::Error::Undefined(message) => Error::Undefined(message),
            super::Error::Provider(message) => Error::Provider(message),
            super::Error::Other(message) => Error::Other(message),
        }))
    }
}
