//! `wasi:keyvalue/{store, atomics, batch}@0.2.0-draft2` in front of the same
//! stores, grants and errors as `spin:key-value`: a bucket's identifier is
//! a store label the component is granted.

use wasmtime::component::{HasData, Linker, Resource};

use super::{InstanceState, OpenStore, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "wasi:keyvalue/imports@0.2.0-draft2",
        // Synchronous in the WIT, but every call waits on a backend.
        imports: { default: async | trappable | tracing },
        with: {
            "wasi:keyvalue/store.bucket": crate::capabilities::key_value::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::capabilities::key_value::wasi_keyvalue::Cas,
        },
    });
}

use bindings::wasi::keyvalue::atomics::{self, CasError};
use bindings::wasi::keyvalue::batch;
use bindings::wasi::keyvalue::store::{self, Error, KeyResponse};

/// Links the three interfaces over the instance's granted stores.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    store::add_to_linker::<_, WasiKeyValue>(linker, view)?;
    atomics::add_to_linker::<_, WasiKeyValue>(linker, view)?;
    batch::add_to_linker::<_, WasiKeyValue>(linker, view)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.key_value,
    }
}

struct WasiKeyValue;

impl HasData for WasiKeyValue {
    type Data<'a> = View<'a, InstanceState>;
}

/// A compare-and-swap in progress: the value `key` held when it began.
pub struct Cas {
    store: OpenStore,
    key: String,
    current: Option<Vec<u8>>,
}

/// The interface's error for what `spin:key-value` reports.
fn to_wasi(error: super::Error) -> Error {
    match error {
        super::Error::AccessDenied => Error::AccessDenied,
        super::Error::NoSuchStore => Error::NoSuchStore,
        super::Error::StoreTableFull => Error::Other("too many stores open".into()),
        super::Error::Other(message) => Error::Other(message),
    }
}

fn backend_error(error: super::BackendError) -> Error {
    to_wasi(super::to_guest_error(error))
}

impl store::Host for View<'_, InstanceState> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        match self.state.open(identifier) {
            Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
            Err(error) => Ok(Err(to_wasi(error))),
        }
    }
}

impl store::HostBucket for View<'_, InstanceState> {
    async fn get(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(bucket.backend.get(&key).await.map_err(backend_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(bucket
            .backend
            .set(&key, &value)
            .await
            .map_err(backend_error))
    }

    async fn delete(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(bucket.backend.delete(&key).await.map_err(backend_error))
    }

    async fn exists(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(bucket.backend.exists(&key).await.map_err(backend_error))
    }

    /// Every key in one response, as Spin answers (no cursor).
    async fn list_keys(
        &mut self,
        bucket: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(super::list_all_keys(&bucket)
            .await?
            .map(|keys| KeyResponse { keys, cursor: None })
            .map_err(to_wasi))
    }

    async fn drop(&mut self, bucket: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for View<'_, InstanceState> {
    async fn increment(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let bucket = self.resource(&bucket)?;
        Ok(bucket
            .backend
            .increment(&key, delta)
            .await
            .map_err(backend_error))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), CasError>> {
        let cas = self.table.delete(cas)?;
        let swapped = cas
            .store
            .backend
            .swap(&cas.key, cas.current.as_deref(), &value)
            .await;
        match swapped {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Someone else wrote first: hand back a fresh look.
                let current = cas.store.backend.get(&cas.key).await;
                let current = match current {
                    Ok(current) => current,
                    Err(error) => return Ok(Err(CasError::StoreError(backend_error(error)))),
                };
                let retry = self.table.push(Cas { current, ..cas })?;
                Ok(Err(CasError::CasFailed(retry)))
            }
            Err(error) => Ok(Err(CasError::StoreError(backend_error(error)))),
        }
    }
}

impl atomics::HostCas for View<'_, InstanceState> {
    async fn new(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        let store = self.resource(&bucket)?;
        let current = match store.backend.get(&key).await {
            Ok(current) => current,
            Err(error) => return Ok(Err(backend_error(error))),
        };
        Ok(Ok(self.table.push(Cas {
            store,
            key,
            current,
        })?))
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for View<'_, InstanceState> {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, Error>> {
        let bucket = self.resource(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match bucket.backend.get(&key).await {
                Ok(value) => found.push((key, value)),
                Err(error) => return Ok(Err(backend_error(error))),
            }
        }
        Ok(Ok(found))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.resource(&bucket)?;
        for (key, value) in key_values {
            if let Err(error) = bucket.backend.set(&key, &value).await {
                return Ok(Err(backend_error(error)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let bucket = self.resource(&bucket)?;
        for key in keys {
            if let Err(error) = bucket.backend.delete(&key).await {
                return Ok(Err(backend_error(error)));
            }
        }
        Ok(Ok(()))
    }
}
