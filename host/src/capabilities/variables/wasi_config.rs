//! `wasi:config/store@0.2.0-draft-2024-09-27` in front of the same
//! variables: a key is a component variable's name, and `get-all` lists
//! the component's variables, as Spin serves it.

use wasmtime::component::{HasData, Linker};

use super::InstanceState;
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "wasi:config/imports@0.2.0-draft-2024-09-27",
        imports: { default: trappable | tracing },
    });
}

use bindings::wasi::config::store::{Error, Host};

/// Links the interface over the instance's variables.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    bindings::wasi::config::store::add_to_linker::<_, Config>(linker, |state| &mut state.variables)
}

struct Config;

impl HasData for Config {
    type Data<'a> = &'a mut InstanceState;
}

impl Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.values.get(&key).cloned()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        let mut pairs: Vec<_> = self
            .values
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        pairs.sort();
        Ok(Ok(pairs))
    }
}
