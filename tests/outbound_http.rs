//! Outbound `wasi:http`, end to end: the `outbound-http` guest fetches the URL
//! in its query string and reports what came back. The destination is a tiny
//! HTTP server in this test process, which counts the requests it sees, so a
//! denied request can be shown never to leave the host. Service chaining uses
//! the `http-echo` guest as the callee.

mod support;

use support::upstream::{Upstream, tcp_echo_server};
use support::{App, Reply, guest_wasm};

/// A component `id` of `guest`, on `route`, allowed to reach `allowed`.
fn component(id: &str, guest: &str, route: &str, allowed: &[String]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|host| format!("\"{host}\"")).collect();
    format!(
        "\n[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"{id}\"\n\
         \n[component.{id}]\nsource = \"{}\"\nallowed_outbound_hosts = [{}]\n",
        guest_wasm(guest).display(),
        allowed.join(", ")
    )
}

fn manifest(components: &[String]) -> String {
    let mut manifest =
        String::from("spin_manifest_version = 2\n\n[application]\nname = \"outbound\"\n");
    for component in components {
        manifest += component;
    }
    manifest
}

/// The `<status>\n<body>` the guest reports for a fetch that got a response.
fn fetched(reply: &Reply) -> (u16, String) {
    assert_eq!(reply.status, 200, "the fetch failed: {reply:?}");
    let (status, body) = reply
        .body
        .split_once('\n')
        .unwrap_or_else(|| panic!("not `<status>\\n<body>`: {:?}", reply.body));
    (status.parse().expect("a status code"), body.to_string())
}

/// The JSON `http-echo` answered with, through one chained fetch.
fn echoed(reply: &Reply) -> serde_json::Value {
    let (status, body) = fetched(reply);
    assert_eq!(status, 200, "http-echo answered {body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
}

#[tokio::test]
async fn allowed_host_is_reached_and_its_answer_relayed() {
    let upstream = Upstream::hello().await;
    let app = App::new(&manifest(&[component(
        "fetch",
        "outbound-http",
        "/fetch",
        &[upstream.url()],
    )]));
    let spindle = app.start();

    let reply = spindle
        .get(&format!("/fetch?url={}/greeting", upstream.url()))
        .await;

    assert_eq!(
        fetched(&reply),
        (200, "hello from upstream /greeting".to_string())
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn denied_host_gets_http_request_denied_and_nothing_is_sent() {
    let upstream = Upstream::hello().await;
    let app = App::new(&manifest(&[component(
        "fetch",
        "outbound-http",
        "/fetch",
        &["https://example.com".to_string()],
    )]));
    let spindle = app.start();

    let reply = spindle
        .get(&format!("/fetch?url={}/secret", upstream.url()))
        .await;

    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("HttpRequestDenied"), "{reply:?}");
    assert_eq!(
        upstream.requests(),
        0,
        "a denied request reached the server"
    );
    // The log is drained from the process asynchronously: wait for it.
    spindle.wait_for_stderr("denied", std::time::Duration::from_secs(10));
    let log = spindle.stderr();
    assert!(
        log.lines()
            .any(|line| line.contains("denied") && line.contains("fetch")),
        "the denial is not logged with the component: {log}"
    );
}

#[tokio::test]
async fn component_reaches_another_through_spin_internal() {
    let app = App::new(&manifest(&[
        component(
            "a",
            "outbound-http",
            "/a",
            &["http://b.spin.internal".to_string()],
        ),
        component("b", "http-echo", "/b/...", &[]),
    ]));
    let spindle = app.start();

    let reply = spindle
        .get("/a?url=http://b.spin.internal/some/path?x=1")
        .await;

    let echo = echoed(&reply);
    assert_eq!(echo["path_and_query"], "/some/path?x=1");
    // Spin's synthetic route for chained requests: the whole path is path info.
    assert_eq!(echo["headers"]["spin-path-info"], "/some/path");
    assert_eq!(
        echo["headers"]["spin-full-url"],
        "http://b.spin.internal/some/path?x=1"
    );
}

#[tokio::test]
async fn self_requests_are_routed_by_path() {
    let app = App::new(&manifest(&[
        component("a", "outbound-http", "/a", &["http://self".to_string()]),
        component("b", "http-echo", "/b/...", &[]),
    ]));
    let spindle = app.start();

    let routed = spindle.get("/a?url=http://self/b/x").await;
    let unrouted = spindle.get("/a?url=http://self/nowhere").await;

    let echo = echoed(&routed);
    assert_eq!(echo["headers"]["spin-matched-route"], "/b/...");
    assert_eq!(echo["headers"]["spin-path-info"], "/x");
    assert_eq!(fetched(&unrouted).0, 404);
}

#[tokio::test]
async fn chaining_is_denied_unless_listed() {
    let app = App::new(&manifest(&[
        component(
            "a",
            "outbound-http",
            "/a",
            &["http://c.spin.internal".to_string()],
        ),
        component("b", "http-echo", "/b/...", &[]),
    ]));
    let spindle = app.start();

    let other_component = spindle.get("/a?url=http://b.spin.internal/").await;
    let the_app = spindle.get("/a?url=http://self/b/").await;

    for reply in [other_component, the_app] {
        assert_eq!(reply.status, 500, "{reply:?}");
        assert!(reply.body.contains("HttpRequestDenied"), "{reply:?}");
    }
}

#[tokio::test]
async fn component_calling_itself_does_not_deadlock() {
    let upstream = Upstream::hello().await;
    let app = App::new(&manifest(&[component(
        "a",
        "outbound-http",
        "/a",
        &[
            "http://self".to_string(),
            "http://a.spin.internal".to_string(),
            upstream.url(),
        ],
    )]));
    let spindle = app.start();

    // a → self (a again) → upstream, and a → a.spin.internal → a → upstream.
    let via_self = spindle
        .get(&format!("/a?url=http://self/a?url={}/deep", upstream.url()))
        .await;
    let via_id = spindle
        .get(&format!(
            "/a?url=http://a.spin.internal/a?url=http://self/a?url={}/deeper",
            upstream.url()
        ))
        .await;

    let (status, inner) = fetched(&via_self);
    assert_eq!(status, 200);
    assert_eq!(inner, "200\nhello from upstream /deep");
    let (status, inner) = fetched(&via_id);
    assert_eq!(status, 200);
    assert_eq!(inner, "200\n200\nhello from upstream /deeper");
    assert_eq!(upstream.requests(), 2);
}

/// `wasi:sockets` TCP: open exactly as far as `allowed_outbound_hosts`
/// allows (an address, a range, a templated port), refused as
/// access-denied by host, by port, and for a component with no entries.
#[tokio::test]
async fn tcp_sockets_reach_only_what_allowed_outbound_hosts_allows() {
    let (port, unlisted_port) = (tcp_echo_server().await, tcp_echo_server().await);
    let wasm = support::guest_wasm("tcp-client");
    let component = |id: &str, allowed: &str| {
        format!(
            "[[trigger.http]]\nroute = \"/{id}\"\ncomponent = \"{id}\"\n\
             [component.{id}]\nsource = \"{}\"\nallowed_outbound_hosts = [{allowed}]\n",
            wasm.display()
        )
    };
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"sockets\"\n\
         [variables]\ntcp_port = {{ default = \"{port}\" }}\n{}{}{}{}",
        component("exact", &format!("\"*://127.0.0.1:{port}\"")),
        component("range", &format!("\"*://127.0.0.0/24:{port}\"")),
        component("templated", "\"*://127.0.0.1:{{ tcp_port }}\""),
        component("none", ""),
    );
    let app = support::App::new(&manifest);
    let spindle = app.start();
    let connect = |component: &str, address: String| {
        let path = format!("/{component}?addr={address}");
        let spindle = &spindle;
        async move { spindle.get(&path).await }
    };

    for component in ["exact", "range", "templated"] {
        let reply = connect(component, format!("127.0.0.1:{port}")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ping\n"),
            "{component}"
        );
    }
    for (component, address) in [
        ("exact", format!("127.0.0.1:{unlisted_port}")),
        ("exact", format!("127.0.0.2:{port}")),
        ("range", format!("127.0.1.1:{port}")),
        ("none", format!("127.0.0.1:{port}")),
    ] {
        let reply = connect(component, address.clone()).await;
        assert_eq!(reply.status, 403, "{component} → {address}: {}", reply.body);
        assert!(reply.body.starts_with("access-denied"), "{}", reply.body);
    }
}

/// An HTTP/2-only (h2c) server on 127.0.0.1, as a gRPC server without TLS
/// is: it answers `<version> <path>`, and an HTTP/1.1 request fails.
async fn h2c_only_upstream() -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the h2c upstream");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let text = format!("{:?} {}", request.version(), request.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(text)),
                    ))
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

#[tokio::test]
async fn an_h2c_entry_makes_the_call_http2_and_a_plain_entry_keeps_http1() {
    let h2c = h2c_only_upstream().await;
    let http1 = Upstream::start(|parts, _| {
        let text = format!("{:?} {}", parts.version, parts.uri.path());
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)))
    })
    .await;
    let app = App::new(&manifest(&[
        component(
            "h2c",
            "outbound-http",
            "/h2c",
            &[format!("http+h2c://{h2c}")],
        ),
        component(
            "plain",
            "outbound-http",
            "/plain",
            &[format!("http://{h2c}"), http1.url()],
        ),
    ]));
    let spindle = app.start();

    let over_h2c = spindle.get(&format!("/h2c?url=http://{h2c}/grpc")).await;
    let over_http1 = spindle
        .get(&format!("/plain?url={}/rest", http1.url()))
        .await;
    let http1_to_h2c_only = spindle.get(&format!("/plain?url=http://{h2c}/x")).await;

    assert_eq!(fetched(&over_h2c), (200, "HTTP/2.0 /grpc".to_string()));
    assert_eq!(fetched(&over_http1), (200, "HTTP/1.1 /rest".to_string()));
    assert_eq!(http1_to_h2c_only.status, 500, "{http1_to_h2c_only:?}");
}
