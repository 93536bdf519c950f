//! `fermyon:spin/mqtt@2.0.0`, the WASI 0.2 interface of Spin 2 and 3 apps
//! (Rust spin-sdk 2–6, the JS, Python and Go SDKs): its types in front of
//! the shared backend.

use rumqttc::QoS;
use wasmtime::component::{HasData, Linker, Resource};

use super::{Connection, InstanceState, MqttError, View};
use crate::engine;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-deps/spin-sdk-5",
        inline: "
            package spindle:fermyon-mqtt;
            world imports {
                import fermyon:spin/mqtt@2.0.0;
            }
        ",
        world: "spindle:fermyon-mqtt/imports",
        // Synchronous in the WIT, but a publish waits on the broker.
        imports: { default: async | trappable | tracing },
        with: { "fermyon:spin/mqtt@2.0.0.connection": crate::capabilities::mqtt::Connection },
    });
}

use bindings::fermyon::spin2_0_0::mqtt::{self as wit, Error, Qos};

/// Links the interface.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, FermyonMqtt>(linker, super::view)
}

struct FermyonMqtt;

impl HasData for FermyonMqtt {
    type Data<'a> = View<'a, InstanceState>;
}

impl wit::Host for View<'_, InstanceState> {}

impl wit::HostConnection for View<'_, InstanceState> {
    async fn open(
        &mut self,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let _span = tracing::debug_span!("mqtt.open").entered();
        match self
            .state
            .open(&address, username, password, keep_alive_interval_in_secs)
        {
            Ok(connection) => Ok(Ok(self.table.push(connection)?)),
            Err(error) => Ok(Err(to_guest_error(error))),
        }
    }

    async fn publish(
        &mut self,
        this: Resource<Connection>,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
    ) -> wasmtime::Result<Result<(), Error>> {
        let connection = self.resource(&this)?;
        let published = tracing::Instrument::instrument(
            connection.publish(topic, payload, to_qos(qos)),
            tracing::debug_span!("mqtt.publish"),
        )
        .await;
        Ok(published.map_err(to_guest_error))
    }

    async fn drop(&mut self, handle: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
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
