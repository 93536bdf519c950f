//! `fermyon:spin/key-value@2.0.0`, the WASI 0.2 interface of Spin 2 and 3
//! apps (Rust spin-sdk 2-6, the JS, Python and Go SDKs), in front of the same
//! stores, grants and errors as `spin:key-value@3.0.0`.

use wasmtime::component::{HasData, Linker, Resource};

use super::{InstanceState, OpenStore, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-key-value;
            world imports {
                import fermyon:spin/key-value@2.0.0;
            }
        ",
        world: "spindle:fermyon-key-value/imports",
        // Synchronous in the WIT, but every call waits on a backend.
        imports: { default: async | trappable | tracing },
        with: { "fermyon:spin/key-value@2.0.0.store": crate::capabilities::key_value::OpenStore },
    });
}

use bindings::fermyon::spin2_0_0::key_value::{self as wit, Error};

/// Links the interface over the instance's granted stores.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, FermyonKeyValue>(linker, |state| View {
        table: &mut state.table,
        state: &mut state.key_value,
    })
}

struct FermyonKeyValue;

impl HasData for FermyonKeyValue {
    type Data<'a> = View<'a, InstanceState>;
}

/// This version's error for what `spin:key-value@3.0.0` reports; the two
/// have the same cases.
fn from_v3(error: super::Error) -> Error {
    match error {
        super::Error::StoreTableFull => Error::StoreTableFull,
        super::Error::NoSuchStore => Error::NoSuchStore,
        super::Error::AccessDenied => Error::AccessDenied,
        super::Error::Other(message) => Error::Other(message),
    }
}

fn backend_error(error: super::BackendError) -> Error {
    from_v3(super::to_guest_error(error))
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostStore for View<'_, InstanceState> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        match self.state.open(label) {
            Ok(store) => Ok(Ok(self.table.push(store)?)),
            Err(error) => Ok(Err(from_v3(error))),
        }
    }

    async fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let store = self.resource(&store)?;
        Ok(store.backend.get(&key).await.map_err(backend_error))
    }

    async fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.resource(&store)?;
        Ok(store.backend.set(&key, &value).await.map_err(backend_error))
    }

    async fn delete(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let store = self.resource(&store)?;
        Ok(store.backend.delete(&key).await.map_err(backend_error))
    }

    async fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let store = self.resource(&store)?;
        Ok(store.backend.exists(&key).await.map_err(backend_error))
    }

    async fn get_keys(
        &mut self,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let store = self.resource(&store)?;
        Ok(super::list_all_keys(&store).await?.map_err(from_v3))
    }

    async fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
