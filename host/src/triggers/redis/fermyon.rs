//! `fermyon:spin/inbound-redis`, the WASI 0.2 export of Spin 2 and 3 apps
//! (spin-sdk 2-6's `#[redis_component]`, the JS, Python and Go SDKs); the
//! package is unversioned in Spin's WIT.

use crate::engine::InstanceState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-redis-trigger;
            world subscriber {
                export fermyon:spin/inbound-redis;
            }
        ",
        world: "spindle:fermyon-redis-trigger/subscriber",
        exports: { default: async },
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
    let handled = instance
        .fermyon_spin_inbound_redis()
        .call_handle_message(store, &payload)
        .await?;
    // The interface's error has one failure case, `error`; `success` is
    // not a failure whatever the variant it came in.
    Ok(match handled {
        Ok(()) | Err(bindings::fermyon::spin::redis_types::Error::Success) => Ok(()),
        Err(bindings::fermyon::spin::redis_types::Error::Error) => {
            Err("the handler returned `error`".to_owned())
        }
    })
}
