//! Outbound MQTT: `spin:mqtt/mqtt@3.0.0` (spin-sdk 7, [`spin_v3`]) and
//! `fermyon:spin/mqtt@2.0.0` (spin-sdk 2–6, [`fermyon_v2`]) over one backend.
//!
//! Granted by `allowed_outbound_hosts` (`mqtt://broker:1883`); there is no
//! runtime-config key, since the guest names the broker. Addresses are
//! Spin's, `mqtt://host[:port]?client_id=...`, over plain TCP. One broker
//! connection per (address, username, password, keep-alive), shared by every
//! instance: a broker lets one connection per client id live, so instances
//! sharing an id must share the connection too. `publish` returns once the
//! broker has taken the message as its QoS asks (at-most-once: once sent).
//! As in Spin, a denied address is `connection-failed` and a malformed one
//! `invalid-address`.

pub mod fermyon_v2;
pub mod spin_v3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;
use wasmtime::component::Linker;

use super::View;
use super::allowed_hosts::{AllowedHosts, ByComponent};
use crate::engine;

/// Distinct broker connections the host keeps at most; past that the least
/// recently used is closed, so a guest cycling through client ids cannot
/// make the host hold more.
const MAX_CONNECTIONS: usize = 64;

/// How long `publish` waits for the broker to take a message (connecting
/// included).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest payload one publish may carry. rumqttc's default is 10 KiB;
/// brokers commonly take far more (Mosquitto: 256 MiB).
const MAX_PAYLOAD: usize = 16 << 20;

/// Per app: each component's allow-list and the shared broker connections.
pub struct AppState {
    allowed_hosts: ByComponent,
    brokers: Arc<Brokers>,
}

impl AppState {
    /// Takes every component's allow-list; connections open when a guest
    /// first publishes.
    pub fn configure(allowed_hosts: &ByComponent) -> Self {
        Self {
            allowed_hosts: allowed_hosts.clone(),
            brokers: Arc::default(),
        }
    }

    /// What one instance of `component` may reach.
    pub fn instance_state(&self, component: &str) -> InstanceState {
        InstanceState {
            allowed_hosts: self
                .allowed_hosts
                .get(component)
                .cloned()
                .unwrap_or_default(),
            brokers: self.brokers.clone(),
        }
    }
}

/// One instance's view: its allow-list and the app's broker connections.
#[derive(Clone)]
pub struct InstanceState {
    allowed_hosts: Arc<AllowedHosts>,
    brokers: Arc<Brokers>,
}

impl InstanceState {
    /// Checks `address` and makes the guest's handle on the shared
    /// connection; the broker is reached on the first publish, as in Spin.
    fn open(
        &self,
        address: &str,
        username: String,
        password: String,
        keep_alive_secs: u64,
    ) -> Result<Connection, MqttError> {
        let url = parse_address(address)?;
        let host = url.host_str().unwrap_or_default();
        if !self.allowed_hosts.allows(url.scheme(), host, url.port()) {
            tracing::warn!(
                host,
                port = url.port(),
                "mqtt connection denied: not in allowed_outbound_hosts"
            );
            return Err(MqttError::AccessDenied);
        }
        let key = Key {
            address: address.to_owned(),
            username,
            password,
            keep_alive_secs,
        };
        // Start connecting now: the first publish then rarely waits for it.
        self.brokers.client(&key)?;
        Ok(Connection {
            key: Arc::new(key),
            brokers: self.brokers.clone(),
        })
    }
}

/// Links both interface versions.
pub fn add_to_linker(linker: &mut Linker<engine::InstanceState>) -> wasmtime::Result<()> {
    spin_v3::add_to_linker(linker)?;
    fermyon_v2::add_to_linker(linker)
}

fn view(state: &mut engine::InstanceState) -> View<'_, InstanceState> {
    View {
        table: &mut state.table,
        state: &mut state.mqtt,
    }
}

/// Why an MQTT call failed, before it becomes an interface's error.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// Not an `mqtt://host[:port]?client_id=...` address rumqttc takes.
    #[error("invalid address")]
    InvalidAddress,
    /// `allowed_outbound_hosts` does not include the broker.
    #[error("access denied: the component's allowed_outbound_hosts does not include this address")]
    AccessDenied,
    /// The broker could not be reached, refused the connection, or dropped
    /// it; the reason never quotes the address.
    #[error("{0}")]
    ConnectionFailed(String),
    /// The payload is larger than this host sends.
    #[error("the payload exceeds {} MiB, the most one message may carry", MAX_PAYLOAD >> 20)]
    PayloadTooLarge,
    /// The broker did not take the message within [`PUBLISH_TIMEOUT`].
    #[error("the broker did not acknowledge the message in time")]
    Timeout,
}

/// The guest's `connection`: which shared broker connection it publishes on.
/// The connection itself is looked up at each publish, so one the broker
/// dropped is made anew rather than failing the guest's handle for good.
#[derive(Clone)]
pub struct Connection {
    key: Arc<Key>,
    brokers: Arc<Brokers>,
}

impl Connection {
    /// Publishes `payload` on `topic` and waits for the broker to take it as
    /// `qos` asks.
    async fn publish(&self, topic: String, payload: Vec<u8>, qos: QoS) -> Result<(), MqttError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(MqttError::PayloadTooLarge);
        }
        let client = self.brokers.client(&self.key)?;
        client.publish(topic, payload, qos).await
    }
}

/// What a shared connection is keyed by: everything the guest chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    username: String,
    password: String,
    keep_alive_secs: u64,
}

/// The app's broker connections.
#[derive(Default)]
struct Brokers {
    clients: Mutex<HashMap<Key, Entry>>,
}

struct Entry {
    client: Arc<Client>,
    last_used: Instant,
}

impl Brokers {
    /// The live connection for `key`, made (and started) if there is none
    /// or the last one failed.
    fn client(&self, key: &Key) -> Result<Arc<Client>, MqttError> {
        // Held only for the lookup; nothing awaits under it.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(entry) = clients.get_mut(key)
            && entry.client.is_alive()
        {
            entry.last_used = now;
            return Ok(entry.client.clone());
        }
        clients.remove(key);
        if clients.len() >= MAX_CONNECTIONS {
            clients.retain(|_, entry| entry.client.is_alive());
        }
        if clients.len() >= MAX_CONNECTIONS {
            let oldest = clients
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                // A publish in flight keeps its own handle and finishes.
                clients.remove(&oldest);
            }
        }
        let client = Arc::new(Client::start(key)?);
        clients.insert(
            key.clone(),
            Entry {
                client: client.clone(),
                last_used: now,
            },
        );
        Ok(client)
    }
}

/// `address` as a URL this host can connect to: `mqtt://` (or rumqttc's
/// `tcp://`) with a host. rumqttc panics on a few option values, so those
/// are refused here first.
fn parse_address(address: &str) -> Result<url::Url, MqttError> {
    let url = url::Url::parse(address).map_err(|_| MqttError::InvalidAddress)?;
    if !matches!(url.scheme(), "mqtt" | "tcp") || url.host_str().is_none_or(str::is_empty) {
        return Err(MqttError::InvalidAddress);
    }
    let query: HashMap<_, _> = url.query_pairs().collect();
    let client_id = query.get("client_id").map(|id| id.as_ref());
    let inflight_zero = query
        .get("inflight_num")
        .is_some_and(|value| value.parse::<u16>() == Ok(0));
    let unclean_without_id = client_id == Some("")
        && query
            .get("clean_session")
            .is_some_and(|value| value == "false");
    if client_id.is_none() || inflight_zero || unclean_without_id {
        return Err(MqttError::InvalidAddress);
    }
    Ok(url)
}

/// One broker connection: rumqttc's client, and a task driving its event
/// loop that reports to the publish waiting on it. Dropping it ends the
/// task and so the connection.
struct Client {
    requests: AsyncClient,
    progress: Arc<Progress>,
    /// One publish at a time: its acknowledgement is then the next one for
    /// its packet id, and the broker's flow control is never in the way.
    turn: tokio::sync::Mutex<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the event-loop task tells the waiting publish.
#[derive(Default)]
struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    waiter: Option<Waiter>,
    /// Set once the connection failed; the task has then ended.
    failure: Option<String>,
}

/// The publish in flight: what completes it, and where to say so.
struct Waiter {
    qos: QoS,
    /// Known once the event loop has sent the message.
    packet_id: Option<u16>,
    done: oneshot::Sender<Result<(), MqttError>>,
}

impl Client {
    /// Makes the connection's options and starts the task that connects
    /// and keeps the connection alive.
    fn start(key: &Key) -> Result<Self, MqttError> {
        let url = parse_address(&key.address)?;
        let mut options = MqttOptions::try_from(url).map_err(|error| {
            tracing::debug!(%error, "mqtt address refused by the client library");
            MqttError::InvalidAddress
        })?;
        if !key.username.is_empty() {
            options.set_credentials(key.username.clone(), key.password.clone());
        }
        // MQTT carries the keep-alive in 16 bits of seconds.
        let keep_alive = key.keep_alive_secs.min(u64::from(u16::MAX));
        options.set_keep_alive(Duration::from_secs(keep_alive));
        options.set_max_packet_size(options.max_packet_size(), MAX_PAYLOAD + 64 * 1024);
        let (requests, events) = AsyncClient::new(options, 8);
        let progress = Arc::new(Progress::default());
        let task = tokio::spawn(drive(events, progress.clone()));
        Ok(Self {
            requests,
            progress,
            turn: tokio::sync::Mutex::new(()),
            task,
        })
    }

    fn is_alive(&self) -> bool {
        self.progress.lock().failure.is_none()
    }

    async fn publish(&self, topic: String, payload: Vec<u8>, qos: QoS) -> Result<(), MqttError> {
        let _turn = self.turn.lock().await;
        let (done, outcome) = oneshot::channel();
        {
            let mut state = self.progress.lock();
            if let Some(failure) = &state.failure {
                return Err(MqttError::ConnectionFailed(failure.clone()));
            }
            state.waiter = Some(Waiter {
                qos,
                packet_id: None,
                done,
            });
        }
        // Should this publish end before the broker answered (a timeout, or
        // the guest dropping the call), its late acknowledgement could be
        // taken for the next one's: the connection is retired instead.
        let abandoned = Abandoned(Some(&self.progress));
        let waited = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.requests
                .publish(topic, qos, false, payload)
                .await
                .map_err(|_| MqttError::ConnectionFailed("the connection closed".into()))?;
            outcome.await.unwrap_or_else(|_| {
                Err(MqttError::ConnectionFailed("the connection closed".into()))
            })
        })
        .await;
        let outcome = waited.unwrap_or(Err(MqttError::Timeout));
        if !matches!(outcome, Err(MqttError::Timeout)) {
            abandoned.disarm();
        }
        outcome
    }
}

/// Retires the connection when a publish ends without the broker's answer.
struct Abandoned<'a>(Option<&'a Progress>);

impl Abandoned<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(progress) = self.0 {
            progress.failed("a publish was abandoned before the broker answered".into());
        }
    }
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        // Plain data: a poisoned lock still holds a usable state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The event loop wrote a publish with `packet_id` to the broker.
    fn sent(&self, packet_id: u16) {
        let mut state = self.lock();
        let Some(waiter) = state.waiter.as_mut() else {
            return;
        };
        if waiter.packet_id.is_some() {
            return;
        }
        waiter.packet_id = Some(packet_id);
        if waiter.qos == QoS::AtMostOnce {
            state.finish(Ok(()));
        }
    }

    /// The broker acknowledged `packet_id` to the end of the `qos` exchange.
    fn acknowledged(&self, qos: QoS, packet_id: u16) {
        let mut state = self.lock();
        let waiting = state
            .waiter
            .as_ref()
            .is_some_and(|waiter| waiter.qos == qos && waiter.packet_id == Some(packet_id));
        if waiting {
            state.finish(Ok(()));
        }
    }

    /// The connection failed: the publish in flight fails with it, and the
    /// next one makes a new connection.
    fn failed(&self, reason: String) {
        let mut state = self.lock();
        state.failure = Some(reason.clone());
        state.finish(Err(MqttError::ConnectionFailed(reason)));
    }
}

impl ProgressState {
    fn finish(&mut self, outcome: Result<(), MqttError>) {
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.done.send(outcome);
        }
    }
}

/// Polls the event loop (connecting, sending, acknowledging, pinging) until
/// the connection fails. It is not reconnected here: the event loop would
/// resend unacknowledged messages whose publish already failed, so a fresh
/// connection is made on the next publish instead.
async fn drive(mut events: EventLoop, progress: Arc<Progress>) {
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(packet_id))) => progress.sent(packet_id),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                progress.acknowledged(QoS::AtLeastOnce, ack.pkid);
            }
            Ok(Event::Incoming(Packet::PubComp(complete))) => {
                progress.acknowledged(QoS::ExactlyOnce, complete.pkid);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "mqtt connection ended");
                progress.failed(describe(&error));
                return;
            }
        }
    }
}

/// What went wrong with the connection, in words that never quote the
/// address.
fn describe(error: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError;
    match error {
        ConnectionError::Io(io) => format!("could not reach the broker: {io}"),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            "the broker did not answer in time".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(allowed: &[&str]) -> InstanceState {
        let hosts = AllowedHosts::parse(allowed).expect("valid allow-list");
        let by_component = ByComponent::from([("c".to_owned(), Arc::new(hosts))]);
        AppState::configure(&by_component).instance_state("c")
    }

    fn open(state: &InstanceState, address: &str) -> Result<Connection, MqttError> {
        state.open(address, String::new(), String::new(), 30)
    }

    #[tokio::test]
    async fn address_outside_the_allow_list_is_denied() {
        let state = instance(&["mqtt://broker.internal:1883"]);
        assert!(matches!(
            open(&state, "mqtt://127.0.0.1:1883?client_id=a"),
            Err(MqttError::AccessDenied)
        ));
        assert!(matches!(
            open(&state, "mqtt://broker.internal:1884?client_id=a"),
            Err(MqttError::AccessDenied)
        ));
    }

    #[tokio::test]
    async fn default_port_is_1883() {
        let state = instance(&["mqtt://127.0.0.1:1883"]);
        assert!(open(&state, "mqtt://127.0.0.1?client_id=a").is_ok());
    }

    #[test]
    fn malformed_addresses_are_invalid_not_panics() {
        for address in [
            "not a url",
            "http://127.0.0.1:1883?client_id=a",
            "mqtts://127.0.0.1:8883?client_id=a",
            "mqtt://127.0.0.1:1883",
            "mqtt://127.0.0.1:1883?client_id=a&inflight_num=0",
            "mqtt://127.0.0.1:1883?client_id=a&inflight_num=%30",
            "mqtt://127.0.0.1:1883?client_id=&clean_session=false",
        ] {
            assert!(
                matches!(parse_address(address), Err(MqttError::InvalidAddress)),
                "{address}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_option_is_invalid_address() {
        let state = instance(&["mqtt://127.0.0.1:1883"]);
        assert!(matches!(
            open(&state, "mqtt://127.0.0.1:1883?client_id=a&colour=blue"),
            Err(MqttError::InvalidAddress)
        ));
    }

    #[tokio::test]
    async fn instances_share_one_connection_per_key() {
        let state = instance(&["mqtt://127.0.0.1:1"]);
        let first = open(&state, "mqtt://127.0.0.1:1?client_id=a").expect("opens");
        let second = open(&state, "mqtt://127.0.0.1:1?client_id=a").expect("opens");
        let third = state
            .open("mqtt://127.0.0.1:1?client_id=a", "u".into(), "p".into(), 30)
            .expect("opens");
        assert_eq!(first.key, second.key);
        assert_ne!(first.key, third.key);
        assert_eq!(state.brokers.clients.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn unreachable_broker_fails_the_publish_as_connection_failed() {
        // Port 1 on loopback: nothing listens there.
        let state = instance(&["mqtt://127.0.0.1:1"]);
        let connection = open(&state, "mqtt://127.0.0.1:1?client_id=a").expect("opens");
        let outcome = connection
            .publish("t".into(), b"x".to_vec(), QoS::AtLeastOnce)
            .await;
        assert!(
            matches!(&outcome, Err(MqttError::ConnectionFailed(reason)) if !reason.contains("127.0.0.1")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_evict_the_least_recently_used() {
        let state = instance(&["mqtt://127.0.0.1:1"]);
        for id in 0..MAX_CONNECTIONS + 5 {
            open(&state, &format!("mqtt://127.0.0.1:1?client_id={id}")).expect("opens");
        }
        assert!(state.brokers.clients.lock().expect("lock").len() <= MAX_CONNECTIONS);
    }
}
