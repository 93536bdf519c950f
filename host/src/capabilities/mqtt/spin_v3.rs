//! `spin:mqtt/mqtt@3.0.0`, the WASI 0.3 interface spin-sdk 7 imports: its
//! types in front of the shared backend.

use rumqttc::QoS;
use wasmtime::component::{Accessor, HasData, Linker, Resource};

use super::{Connection, InstanceState, MqttError, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk",
        world: "spin:sdk/spin-sdk-mqtt",
        imports: { default: trappable | tracing },
        with: { "spin:mqtt/mqtt.connection": crate::capabilities::mqtt::Connection },
    });
}

use bindings::spin::mqtt::mqtt::{self as wit, Error, Qos};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, SpinMqtt>(linker, super::view)
}

struct SpinMqtt;

impl HasData for SpinMqtt {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl<T> wit::HostConnectionWithStore<T> for SpinMqtt {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let state = accessor.with(|mut access| access.get().state.clone());
        let _span = tracing::debug_span!("mqtt.open").entered();
        match state.open(&address, username, password, keep_alive_interval_in_secs) {
            Ok(connection) => {
                accessor.with(|mut access| Ok(Ok(access.get().table.push(connection)?)))
            }
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<Connection>,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = accessor.with(|mut access| access.get().resource(&this))?;
        let published = tracing::Instrument::instrument(
            connection.publish(topic, payload, to_qos(qos)),
            tracing::debug_span!("mqtt.publish"),
        )
        .await;
        Ok(published.map_err(to_guest_error))
    }
}

fn to_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The interface's variant for each failure, as Spin answers them.
fn to_guest_error(error: MqttError) -> Error {
    match error {
        MqttError::InvalidAddress => Error::InvalidAddress,
        MqttError::AccessDenied | MqttError::ConnectionFailed(_) => {
            Error::ConnectionFailed(error.to_string())
        }
        MqttError::PayloadTooLarge | MqttError::Timeout => Error::Other(error.to_string()),
    }
}
