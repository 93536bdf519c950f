//! The HTTP trigger, end to end: each test writes a spin.toml, starts the real
//! `spindle up` on port 0 and talks to it over HTTP. The routing and `spin-*`
//! header checks use the `http-echo` guest, which answers with what it was given.

mod support;

use std::time::Duration;

use support::connections::{closed_by_host, connect, exchange, left_open, stalled_connections};
use support::{App, Reply, guest_wasm, http_manifest};

/// The `spin-*` headers `http-echo` received, as `name → value`.
fn echoed_headers(reply: &Reply) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(reply.status, 200, "http-echo answered {reply:?}");
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_else(|err| {
        panic!(
            "http-echo answered something that is not JSON ({err}): {}",
            reply.body
        )
    });
    echo["headers"]
        .as_object()
        .expect("`headers` is an object")
        .clone()
}

/// The value of one echoed `spin-*` header, or a panic listing those there were.
fn echoed_header(reply: &Reply, name: &str) -> String {
    let headers = echoed_headers(reply);
    match headers.get(name) {
        Some(value) => value
            .as_str()
            .expect("header values are strings")
            .to_owned(),
        None => panic!("the component did not get `{name}`; it got {headers:?}"),
    }
}

#[tokio::test]
async fn hello_route_answers_with_the_components_body() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let spindle = app.start();

    let reply = spindle.get("/hello").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Hello from Spindle! You asked for /hello\n");
}

#[tokio::test]
async fn named_segment_is_passed_as_spin_path_match_header() {
    let app = App::new(&http_manifest(&[("/users/:id", "users", "http-echo")]));
    let spindle = app.start();

    let reply = spindle.get("/users/42").await;

    assert_eq!(echoed_header(&reply, "spin-path-match-id"), "42");
}

#[tokio::test]
async fn underscores_in_segment_names_become_hyphens_in_the_header_name() {
    let route = "/base/:path_segment/:path_end/...";
    let app = App::new(&http_manifest(&[(route, "base", "http-echo")]));
    let spindle = app.start();

    let reply = spindle.get("/base/one/two/rest").await;

    assert_eq!(echoed_header(&reply, "spin-path-match-path-segment"), "one");
    assert_eq!(echoed_header(&reply, "spin-path-match-path-end"), "two");
    assert_eq!(echoed_header(&reply, "spin-path-info"), "/rest");
}

#[tokio::test]
async fn wildcard_route_passes_the_rest_as_spin_path_info() {
    let app = App::new(&http_manifest(&[("/files/...", "files", "http-echo")]));
    let spindle = app.start();

    let reply = spindle.get("/files/a/b.txt").await;

    assert_eq!(echoed_header(&reply, "spin-path-info"), "/a/b.txt");
    assert_eq!(echoed_header(&reply, "spin-matched-route"), "/files/...");
    assert_eq!(echoed_header(&reply, "spin-component-route"), "/files");
    assert_eq!(
        echoed_header(&reply, "spin-raw-component-route"),
        "/files/..."
    );
    assert_eq!(echoed_header(&reply, "spin-base-path"), "/");
    let full_url = echoed_header(&reply, "spin-full-url");
    assert!(
        full_url.ends_with("/files/a/b.txt"),
        "spin-full-url is {full_url:?}"
    );
    let client_addr = echoed_header(&reply, "spin-client-addr");
    assert!(
        client_addr.starts_with("127.0.0.1:"),
        "spin-client-addr is {client_addr:?}"
    );
}

#[tokio::test]
async fn exact_route_beats_wildcard() {
    let app = App::new(&http_manifest(&[
        ("/api/...", "api", "http-echo"),
        ("/api/status", "status", "http-echo"),
    ]));
    let spindle = app.start();

    let exact = spindle.get("/api/status").await;
    let other = spindle.get("/api/other").await;

    assert_eq!(echoed_header(&exact, "spin-matched-route"), "/api/status");
    assert_eq!(echoed_header(&other, "spin-matched-route"), "/api/...");
}

#[tokio::test]
async fn longest_prefix_wins() {
    let app = App::new(&http_manifest(&[
        ("/...", "everything", "http-echo"),
        ("/api/...", "api", "http-echo"),
        ("/api/v1/...", "v1", "http-echo"),
    ]));
    let spindle = app.start();

    let v1 = spindle.get("/api/v1/things").await;
    let api = spindle.get("/api/v2/things").await;
    let root = spindle.get("/elsewhere").await;

    assert_eq!(echoed_header(&v1, "spin-matched-route"), "/api/v1/...");
    assert_eq!(echoed_header(&v1, "spin-path-info"), "/things");
    assert_eq!(echoed_header(&api, "spin-matched-route"), "/api/...");
    assert_eq!(echoed_header(&api, "spin-path-info"), "/v2/things");
    assert_eq!(echoed_header(&root, "spin-matched-route"), "/...");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let spindle = app.start();

    let elsewhere = spindle.get("/nothing-here").await;
    let below_an_exact_route = spindle.get("/hello/more").await;

    assert_eq!(elsewhere.status, 404, "{elsewhere:?}");
    assert_eq!(below_an_exact_route.status, 404, "{below_an_exact_route:?}");
}

#[tokio::test]
async fn trapping_component_answers_500_and_the_next_request_succeeds() {
    let app = App::new(&http_manifest(&[("/trap/...", "trap", "trap")]));
    let spindle = app.start();

    let trapped = spindle.get("/trap/boom").await;
    let next = spindle.get("/trap/again").await;

    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert_eq!(
        trapped.body, "",
        "a trap's cause belongs in the log, not the body"
    );
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body, "still alive");
}

#[tokio::test]
async fn wasi_0_2_incoming_handler_components_are_served() {
    let app = App::new(&http_manifest(&[("/p2", "p2", "p2-hello")]));
    let spindle = app.start();

    let reply = spindle.get("/p2").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "hello from wasi 0.2\n");
}

#[tokio::test]
async fn spin_health_endpoint_answers_ok() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let spindle = app.start();

    let reply = spindle.get("/.well-known/spin/health").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "OK");
}

#[tokio::test]
async fn second_start_uses_the_compile_cache() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));

    let first = app.start();
    first.wait_for_stderr("compiled and cached", Duration::from_secs(10));
    drop(first);
    let cached_files = files_under(&app.cache_dir());
    assert!(
        !cached_files.is_empty(),
        "the first start left no file in {}",
        app.cache_dir().display()
    );

    let second = app.start();
    second.wait_for_stderr("loaded from compile cache", Duration::from_secs(10));
    assert!(
        !second.stderr().contains("compiled and cached"),
        "the second start compiled again:\n{}",
        second.stderr()
    );
    assert_eq!(second.get("/hello").await.status, 200);
}

#[tokio::test]
async fn up_prints_the_routes() {
    let app = App::new(&http_manifest(&[
        ("/hello", "hello", "hello"),
        ("/files/...", "files", "http-echo"),
        ("/...", "fallback", "http-echo"),
    ]));
    let spindle = app.start();
    let base = spindle.base_url().to_owned();
    let expected_routes = [
        format!("  hello: {base}/hello"),
        format!("  files: {base}/files (wildcard)"),
        format!("  fallback: {base} (wildcard)"),
    ];
    for route in &expected_routes {
        spindle.wait_for_stdout(route, Duration::from_secs(10));
    }

    let stdout = spindle.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("Serving {base}"));
    assert_eq!(lines[1], "Available Routes:");
    let mut printed: Vec<&str> = lines[2..]
        .iter()
        .copied()
        .filter(|line| line.starts_with("  "))
        .collect();
    assert!(
        spindle.ops_url().starts_with("http://127.0.0.1:"),
        "the operations listener's address is printed too:\n{stdout}"
    );
    let mut expected: Vec<&str> = expected_routes.iter().map(String::as_str).collect();
    printed.sort();
    expected.sort();
    assert_eq!(printed, expected, "stdout was:\n{stdout}");
}

/// Every regular file below `dir`, however deep.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[tokio::test]
async fn selected_components_serve_and_the_others_routes_are_absent() {
    let app = App::new(&http_manifest(&[
        ("/hello", "hello", "hello"),
        ("/echo/...", "echo", "http-echo"),
    ]));
    let spindle = app.start_with(&["-c", "echo"]);
    assert_eq!(spindle.get("/echo/x").await.status, 200);
    assert_eq!(
        spindle.get("/hello").await.status,
        404,
        "hello is not selected"
    );
    let routes = spindle.stdout();
    assert!(routes.contains("  echo: "), "{routes}");
    assert!(!routes.contains("  hello: "), "{routes}");
}

#[test]
fn selecting_an_unknown_component_is_an_error() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let (code, stderr) = app.run_up_expecting_failure_with(&["-c", "nope"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no component `nope`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_finish_their_headers_are_closed_while_others_are_served() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let spindle = app.start_with(&["--header-timeout", "1s"]);
    let mut stalled = stalled_connections(spindle.base_url(), 2_000).await;

    // Ordinary requests keep working while the 2,000 hang.
    for _ in 0..20 {
        let reply = spindle.get("/hello").await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // One deadline for all of them: the timeout is 1s.
    assert_eq!(
        left_open(&mut stalled, Duration::from_secs(10)).await,
        0,
        "connections left open past the header timeout"
    );
    assert_eq!(spindle.get("/hello").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_new_connections_wait_and_the_host_keeps_serving() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    let spindle = app.start_with(&["--max-connections", "50", "--header-timeout", "2s"]);
    // 50 stalled connections take every slot: a request waits until the
    // header timeout frees them, then it is served.
    let _stalled = stalled_connections(spindle.base_url(), 50).await;
    let started = std::time::Instant::now();
    let reply = spindle.get("/hello").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "served at once ({:?}): the cap did not hold",
        started.elapsed()
    );
}

const HELLO_REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
const HELLO_BODY: &str = "You asked for /hello\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_idle_timeout() {
    let app = App::new(&http_manifest(&[("/hello", "hello", "hello")]));
    // A long header timeout, so that only the idle timeout can close it.
    let spindle = app.start_with(&["--idle-timeout", "1s", "--header-timeout", "30s"]);
    let mut stream = connect(spindle.base_url()).await;
    // Kept alive: a second request on the same connection is served.
    for _ in 0..2 {
        let answer = exchange(&mut stream, HELLO_REQUEST, HELLO_BODY).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let idle_since = std::time::Instant::now();

    assert!(
        closed_by_host(&mut stream, Duration::from_secs(10)).await,
        "an idle connection was kept open past the idle timeout"
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
    assert_eq!(spindle.get("/hello").await.status, 200);
}

/// `http-echo` as component `echo` on `/echo`, taking bodies up to 1 KiB.
fn echo_with_a_1kib_body_limit() -> App {
    let manifest = http_manifest(&[("/echo", "echo", "http-echo")])
        + "\n[component.echo.tool.spindle]\nmax_request_body = \"1KiB\"\n";
    App::new(&manifest)
}

/// The `body_length` `http-echo` read.
fn echoed_body_length(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 200, "http-echo answered {reply:?}");
    let echo: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON from http-echo");
    echo["body_length"].as_u64().expect("a body_length")
}

#[tokio::test]
async fn a_body_within_max_request_body_reaches_the_component() {
    let app = echo_with_a_1kib_body_limit();
    let spindle = app.start();

    let reply = spindle.post("/echo", &"x".repeat(1024)).await;

    assert_eq!(echoed_body_length(&reply), 1024);
}

#[tokio::test]
async fn a_declared_length_over_max_request_body_gets_413_without_calling_the_component() {
    let app = echo_with_a_1kib_body_limit();
    let spindle = app.start();

    let refused = spindle.post("/echo", &"x".repeat(1025)).await;

    assert_eq!(refused.status, 413, "{refused:?}");
    let metrics = reqwest::get(format!("{}/metrics", spindle.ops_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    assert!(
        !metrics.contains("spindle_instantiation_duration_seconds_count{component=\"echo\"}"),
        "an instance was started for a refused request:\n{metrics}"
    );
    assert_eq!(echoed_body_length(&spindle.post("/echo", "ok").await), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_growing_past_max_request_body_gets_413_and_the_host_keeps_serving() {
    let app = echo_with_a_1kib_body_limit();
    let spindle = app.start();
    let mut stream = connect(spindle.base_url()).await;
    // Four 512-byte chunks and no content-length: only reading finds out.
    let chunk = format!("200\r\n{}\r\n", "x".repeat(512));
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );

    let answer = exchange(&mut stream, request.as_bytes(), "\r\n\r\n").await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let within = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(2)
    );
    let mut next = connect(spindle.base_url()).await;
    let answer = exchange(&mut next, within.as_bytes(), "\"body_length\":1024").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Spin's `files`: a static site mounted at `/` and a pattern, served with
/// their exact bytes; excluded and unnamed files are not there, and nothing
/// can be written.
#[tokio::test]
async fn files_are_mounted_read_only_with_their_bytes() {
    let wasm = guest_wasm("file-server");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "files"

[[trigger.http]]
route = "/..."
component = "site"

[component.site]
source = "{}"
files = [{{ source = "assets", destination = "/" }}, "docs/**/*.md"]
exclude_files = ["docs/private.md"]
"#,
        wasm.display()
    );
    let app = App::new(&manifest);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let write = |file: &str, bytes: &[u8]| {
        let path = app.dir().join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folder");
        std::fs::write(path, bytes).expect("write file");
    };
    write("assets/index.html", b"<h1>hello</h1>");
    write("assets/img/pixels.bin", &binary);
    write("docs/guide.md", b"# guide");
    write("docs/private.md", b"# private");
    write("docs/notes.txt", b"not matched");
    let spindle = app.start();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("{}{path}", spindle.base_url()));
        async move {
            let reply = request.send().await.expect("GET");
            let status = reply.status().as_u16();
            (status, reply.bytes().await.expect("body").to_vec())
        }
    };

    assert_eq!(get("/index.html").await, (200, b"<h1>hello</h1>".to_vec()));
    assert_eq!(get("/img/pixels.bin").await, (200, binary.clone()));
    assert_eq!(get("/docs/guide.md").await, (200, b"# guide".to_vec()));
    for hidden in [
        "/docs/private.md",
        "/docs/notes.txt",
        "/spin.toml",
        "/assets/index.html",
    ] {
        assert_eq!(get(hidden).await.0, 404, "{hidden} is reachable");
    }
    let put = client
        .put(format!("{}/index.html", spindle.base_url()))
        .send()
        .await
        .expect("PUT");
    assert_eq!(
        put.status().as_u16(),
        500,
        "a write to a mounted file succeeded"
    );
    assert_eq!(get("/index.html").await, (200, b"<h1>hello</h1>".to_vec()));
    assert_eq!(
        std::fs::read(app.dir().join("assets/index.html")).expect("read"),
        b"<h1>hello</h1>"
    );
}

/// Core modules, as Spin's older SDKs build apps, are made into components
/// at load: one for `wasm32-wasip1` (its std imports WASI preview 1, which
/// the adapter provides) and one for `wasm32-unknown-unknown`.
#[tokio::test]
async fn core_modules_are_componentized_at_load() {
    for (target, imports_preview1) in [("wasm32-wasip1", true), ("wasm32-unknown-unknown", false)] {
        let module = support::core_module_wasm("p2-hello", target);
        let bytes = std::fs::read(&module).expect("read the module");
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0], "{target}: not a core module");
        let preview1 = bytes
            .windows(22)
            .any(|window| window == b"wasi_snapshot_preview1");
        assert_eq!(preview1, imports_preview1, "{target}");
        let manifest = format!(
            "spin_manifest_version = 2\n[application]\nname = \"core\"\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n\
             [component.hello]\nsource = \"{}\"\n",
            module.display()
        );
        let app = App::new(&manifest);
        let spindle = app.start();
        let reply = spindle.get("/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "hello from wasi 0.2\n"),
            "{target}"
        );
    }
}

/// An app importing Spin's LLM interface starts (this host has no model);
/// a call gets the interface's own `model-not-supported`, not a trap.
#[tokio::test]
async fn an_app_importing_the_llm_interface_runs_and_gets_model_not_supported() {
    let app = App::new(&http_manifest(&[("/...", "ai", "llm-caller")]));
    let spindle = app.start();

    let reply = spindle.get("/").await;

    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "Error::ModelNotSupported")
    );
}
