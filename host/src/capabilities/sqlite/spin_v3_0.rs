//! `spin:sqlite/sqlite@3.0.0` (Spin 3 apps: Rust spin-sdk 4-6, the Python SDK) onto the same databases,
//! grants and errors as `spin:sqlite/sqlite@3.1.0`.

use wasmtime::component::{Linker, Resource};

use super::{Connection, InstanceState, SqliteData, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:spin-sqlite-3-0;
            world imports {
                import spin:sqlite/sqlite@3.0.0;
            }
        ",
        world: "spindle:spin-sqlite-3-0/imports",
        imports: { default: async | trappable | tracing },
        with: { "spin:sqlite/sqlite@3.0.0.connection": crate::capabilities::sqlite::Connection },
    });
}

super::convert_from_v3_1!(bindings::spin::sqlite::sqlite);

/// Links the interface over the instance's granted databases.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    version::add_to_linker::<_, SqliteData>(linker, super::view)
}

impl version::Host for View<'_, InstanceState> {}

impl version::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, version::Error>> {
        outcome(self.open_connection(database).await, |handle| handle)
    }

    async fn execute(
        &mut self,
        handle: Resource<Connection>,
        statement: String,
        parameters: Vec<version::Value>,
    ) -> wasmtime::Result<Result<version::QueryResult, version::Error>> {
        let parameters = parameters.into_iter().map(parameter).collect();
        let result = self.execute_collected(handle, statement, parameters).await;
        outcome(result, query_result)
    }

    async fn last_insert_rowid(&mut self, handle: Resource<Connection>) -> wasmtime::Result<i64> {
        self.last_insert_rowid_of(handle).await
    }

    async fn changes(&mut self, handle: Resource<Connection>) -> wasmtime::Result<u64> {
        self.changes_of(handle).await
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.close(handle)
    }
}
