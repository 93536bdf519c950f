//! `spin:redis/inbound-redis@3.0.0`, the WASI 0.3 export spin-sdk 7's
//! `#[redis_subscriber]` builds.

use crate::engine::InstanceState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        inline: "
            package spindle:redis-trigger;
            world subscriber {
                export spin:redis/inbound-redis@3.0.0;
            }
        ",
        world: "spindle:redis-trigger/subscriber",
        exports: { default: async | store },
        with: { "spin:redis/redis": crate::capabilities::redis::bindings::spin::redis::redis },
    });
}

/// The component, ready to instantiate with this export checked.
pub(super) type Pre = bindings::SubscriberPre<InstanceState>;

/// Hands `payload` to the instance's handler.
pub(super) async fn deliver(
    instance: bindings::Subscriber,
    store: &mut wasmtime::Store<InstanceState>,
    payload: Vec<u8>,
) -> wasmtime::Result<Result<(), String>> {
    let handled = store
        .run_concurrent(async |accessor| {
            instance
                .spin_redis_inbound_redis()
                .call_handle_message(accessor, payload)
                .await
        })
        .await??;
    Ok(handled.map_err(|error| format!("{error:?}")))
}
