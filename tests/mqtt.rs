//! Outbound MQTT end to end: a spin-sdk 5 guest (built for `wasm32-wasip1`,
//! as Spin's templates build it) publishes through `fermyon:spin/mqtt@2.0.0`
//! on the local Mosquitto, and a spin-sdk 7 guest through
//! `spin:mqtt/mqtt@3.0.0`; the test, subscribed on the broker with its own
//! client, checks what arrives. Brokers outside the component's
//! `allowed_outbound_hosts` are refused as in Spin.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{App, Spindle, core_module_wasm, guest_wasm, services::mqtt_address};
use tokio::sync::mpsc;

/// How long a published message may take to reach the subscriber.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// A unique topic prefix, so runs and tests never see each other's messages.
fn unique_topic() -> String {
    format!(
        "spindle-test/{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
    )
}

/// The app: one route to the sdk5-mqtt guest, allowed to reach `allowed`.
fn start(allowed: &[String]) -> (App, Spindle) {
    start_guest(&core_module_wasm("sdk5-mqtt", "wasm32-wasip1"), allowed)
}

/// The app: every path to the guest `wasm`, allowed to reach `allowed`.
fn start_guest(wasm: &std::path::Path, allowed: &[String]) -> (App, Spindle) {
    let hosts = allowed
        .iter()
        .map(|host| format!("\"{host}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"mqtt\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"publisher\"\n\
         [component.publisher]\nsource = \"{}\"\nallowed_outbound_hosts = [{hosts}]\n",
        wasm.display()
    );
    let app = App::new(&manifest);
    let spindle = app.start();
    (app, spindle)
}

/// Asks the guest to publish `payload` on `topic`; returns status and body.
async fn publish(
    spindle: &Spindle,
    address: &str,
    topic: &str,
    qos: u8,
    credentials: Option<(&str, &str)>,
    payload: &str,
) -> (u16, String) {
    let qos = qos.to_string();
    let (username, password) = credentials.unwrap_or_default();
    let reply = spindle
        .send_with_headers(
            reqwest::Method::POST,
            "/",
            &[
                ("x-mqtt-address", address),
                ("x-mqtt-topic", topic),
                ("x-mqtt-qos", &qos),
                ("x-mqtt-username", username),
                ("x-mqtt-password", password),
            ],
            Some(payload.to_owned()),
        )
        .await;
    (reply.status, reply.body)
}

/// The test's own subscriber: the messages published under `filter`, as
/// (topic, payload), once the broker has confirmed the subscription.
async fn subscribe(
    host: &str,
    port: u16,
    credentials: Option<(&str, &str)>,
    filter: &str,
) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let mut options = MqttOptions::new(format!("sub-{}", unique_topic()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((username, password)) = credentials {
        options.set_credentials(username, password);
    }
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .subscribe(filter, QoS::ExactlyOnce)
        .await
        .expect("queueing the subscription");
    let (sender, receiver) = mpsc::unbounded_channel();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline.into(), events.poll())
            .await
            .expect("the broker did not confirm the subscription in time")
            .expect("the test's subscriber lost its connection");
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }
    tokio::spawn(async move {
        // The client lives as long as the task: dropping it would end the loop.
        let _client = client;
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(message)) = event
                && sender
                    .send((message.topic.clone(), message.payload.to_vec()))
                    .is_err()
            {
                return;
            }
        }
    });
    receiver
}

async fn next_message(
    messages: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> (String, Vec<u8>) {
    tokio::time::timeout(DELIVERY_DEADLINE, messages.recv())
        .await
        .expect("no message reached the subscriber in time")
        .expect("the subscriber stopped")
}

fn host_and_port(address: &str) -> (String, u16) {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("a port number"))
}

#[tokio::test]
async fn a_message_published_at_each_qos_reaches_a_subscriber() {
    let broker = mqtt_address();
    let (host, port) = host_and_port(&broker);
    let (_app, spindle) = start(&[format!("mqtt://{broker}")]);
    let topic = unique_topic();
    let mut messages = subscribe(&host, port, None, &format!("{topic}/#")).await;
    let address = format!("mqtt://{broker}?client_id=spindle-{}", std::process::id());

    for qos in [0, 1, 2] {
        let payload = format!("hello at QoS {qos}");
        let (status, body) = publish(
            &spindle,
            &address,
            &format!("{topic}/q{qos}"),
            qos,
            None,
            &payload,
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "ok"), "QoS {qos}");
        let (got_topic, got_payload) = next_message(&mut messages).await;
        assert_eq!(got_topic, format!("{topic}/q{qos}"));
        assert_eq!(String::from_utf8_lossy(&got_payload), payload);
    }

    // Another request with the same client id reuses the host's connection
    // rather than making the broker drop one of two.
    let (status, body) = publish(
        &spindle,
        &address,
        &format!("{topic}/again"),
        1,
        None,
        "again",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(next_message(&mut messages).await.1, b"again");
}

#[tokio::test]
async fn a_broker_outside_allowed_outbound_hosts_is_connection_failed() {
    let broker = mqtt_address();
    let (_app, spindle) = start(&["mqtt://mqtt.internal:1883".to_owned()]);
    let (status, body) = publish(
        &spindle,
        &format!("mqtt://{broker}?client_id=denied"),
        "spindle-test/denied",
        1,
        None,
        "x",
    )
    .await;
    assert_eq!((status, body.as_str()), (403, "connection-failed"));
}

#[tokio::test]
async fn an_address_without_client_id_is_invalid_address() {
    let broker = mqtt_address();
    let (_app, spindle) = start(&[format!("mqtt://{broker}")]);
    for address in [format!("mqtt://{broker}"), "not a url".to_owned()] {
        let (status, body) =
            publish(&spindle, &address, "spindle-test/invalid", 1, None, "x").await;
        assert_eq!(
            (status, body.as_str()),
            (403, "invalid-address"),
            "{address}"
        );
    }
}

#[tokio::test]
async fn an_allowed_broker_that_is_down_fails_the_publish_as_connection_failed() {
    let port = free_port();
    let (_app, spindle) = start(&[format!("mqtt://127.0.0.1:{port}")]);
    let (status, body) = publish(
        &spindle,
        &format!("mqtt://127.0.0.1:{port}?client_id=nobody-home"),
        "spindle-test/down",
        1,
        None,
        "x",
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("publish: connection-failed"), "{body}");
    assert!(
        !body.contains(&port.to_string()),
        "the error quotes the address: {body}"
    );
}

#[tokio::test]
async fn a_broker_that_wants_a_password_gets_the_guests_credentials() {
    let broker = PrivateMosquitto::start("publisher", "s3cret");
    let (_app, spindle) = start(&[format!("mqtt://127.0.0.1:{}", broker.port)]);
    let topic = unique_topic();
    let mut messages = subscribe(
        "127.0.0.1",
        broker.port,
        Some(("publisher", "s3cret")),
        &format!("{topic}/#"),
    )
    .await;
    let address = format!("mqtt://127.0.0.1:{}?client_id=with-password", broker.port);

    let (status, body) = publish(
        &spindle,
        &address,
        &format!("{topic}/secret"),
        1,
        Some(("publisher", "s3cret")),
        "authenticated",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(next_message(&mut messages).await.1, b"authenticated");

    let (status, body) = publish(
        &spindle,
        &address,
        &format!("{topic}/secret"),
        1,
        Some(("publisher", "wrong")),
        "refused",
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("publish: connection-failed") && !body.contains("wrong"),
        "{body}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A Mosquitto of the test's own on a free port, which only lets in one
/// user with a password; stopped when dropped.
struct PrivateMosquitto {
    port: u16,
    process: Child,
    _dir: tempfile::TempDir,
}

impl PrivateMosquitto {
    fn start(username: &str, password: &str) -> Self {
        // The shared broker being up means Mosquitto is installed.
        mqtt_address();
        let dir = tempfile::tempdir().expect("a temp dir for the broker");
        let passwords = dir.path().join("passwords");
        let status = Command::new(binary("mosquitto_passwd"))
            .args(["-b", "-c"])
            .arg(&passwords)
            .args([username, password])
            .status()
            .expect("running mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                passwords.display()
            ),
        )
        .expect("writing the broker's config");
        let process = Command::new(binary("mosquitto"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        let broker = Self {
            port,
            process,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private Mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Mosquitto's programs live in /usr/sbin and /usr/bin on Debian.
fn binary(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The spin-sdk 7 guest asks the host to publish through `spin:mqtt@3`.
async fn publish_v3(
    spindle: &Spindle,
    address: &str,
    topic: &str,
    qos: u8,
    payload: &str,
) -> (u16, String) {
    let qos = qos.to_string();
    let reply = spindle
        .send_with_headers(
            reqwest::Method::GET,
            "/mqtt",
            &[
                ("x-mqtt-address", address),
                ("x-mqtt-topic", topic),
                ("x-mqtt-qos", &qos),
                ("x-mqtt-payload", payload),
            ],
            None,
        )
        .await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn a_spin_sdk_7_guest_publishes_through_spin_mqtt_3() {
    let broker = mqtt_address();
    let (host, port) = host_and_port(&broker);
    let (_app, spindle) = start_guest(
        &guest_wasm("mqtt-mysql-client"),
        &[format!("mqtt://{broker}")],
    );
    let topic = unique_topic();
    let mut messages = subscribe(&host, port, None, &format!("{topic}/#")).await;
    let address = format!(
        "mqtt://{broker}?client_id=spindle-v3-{}",
        std::process::id()
    );

    for qos in [0, 1, 2] {
        let payload = format!("v3 at QoS {qos}");
        let (status, body) = publish_v3(
            &spindle,
            &address,
            &format!("{topic}/q{qos}"),
            qos,
            &payload,
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "ok"), "QoS {qos}");
        let (got_topic, got_payload) = next_message(&mut messages).await;
        assert_eq!(got_topic, format!("{topic}/q{qos}"));
        assert_eq!(String::from_utf8_lossy(&got_payload), payload);
    }

    let (status, body) = publish_v3(
        &spindle,
        "mqtt://127.0.0.1:1884?client_id=denied",
        "spindle-test/denied",
        1,
        "x",
    )
    .await;
    assert_eq!((status, body.as_str()), (403, "connection-failed"));
}
