//! The demo app end to end: the top-level `spin.toml` with its six services,
//! on embedded defaults and on PostgreSQL + NATS JetStream + Redis, used over
//! HTTP the way a client would. Every reply is checked against
//! `openapi.yaml`: its status must be documented and its body must match.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use support::openapi::OpenApi;
use support::proxy::TcpProxy;
use support::services::{self, PrivateNats, postgres_url, redis_url};
use support::{App, Reply, Spindle, workspace_root};

/// The signing key the tests give the app (and forge tokens with).
const SECRET: &str = "a-signing-key-for-tests-only-0123456789";
/// The largest request body the services read (`demo_kit::api`).
const BODY_LIMIT: usize = 64 * 1024;
/// How long a refusal may take when it must not wait for the body.
const PROMPT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "correct horse battery staple";
/// How long the events of one order may take to settle it, crashes included.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
const SERVICES: [&str; 6] = ["auth", "users", "orders", "inventory", "payments", "saga"];

/// Where the demo keeps its data and sends its events.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// No runtime config: SQLite files and the in-process bus.
    Embedded,
    /// PostgreSQL databases, NATS JetStream (a private server) and Redis.
    Durable,
}

/// The demo app, running.
struct Demo {
    app: App,
    args: Vec<String>,
    spindle: Option<Spindle>,
    api: OpenApi,
    _nats: Option<PrivateNats>,
}

/// A signed-up, logged-in user.
struct User {
    id: String,
    email: String,
    token: String,
}

impl Demo {
    fn start(backend: Backend) -> Demo {
        Demo::launch(backend, SECRET, &demo_manifest())
    }

    /// The demo with `jwt_secret` set to `key`.
    fn start_with_key(backend: Backend, key: &str) -> Demo {
        Demo::launch(backend, key, &demo_manifest())
    }

    /// The app of `manifest` with `jwt_secret` set to `key`.
    fn launch(backend: Backend, key: &str, manifest: &str) -> Demo {
        Demo::launch_with_servers(backend, key, manifest, &|_| postgres_url())
    }

    /// The demo on PostgreSQL + NATS with `service`'s database reached at
    /// `server` (`postgres://user@host:port/…`), the others directly.
    fn start_with_database_server(service: &str, server: &str) -> Demo {
        let server_of = |name: &str| {
            if name == service {
                server.to_string()
            } else {
                postgres_url()
            }
        };
        Demo::launch_with_servers(Backend::Durable, SECRET, &demo_manifest(), &server_of)
    }

    /// [`Demo::launch`], with each service's database on the PostgreSQL
    /// server `server_of(service)` names.
    fn launch_with_servers(
        backend: Backend,
        key: &str,
        manifest: &str,
        server_of: &dyn Fn(&str) -> String,
    ) -> Demo {
        let app = App::new(manifest).with_shared_compile_cache();
        let mut args = vec!["--variable".to_string(), format!("jwt_secret={key}")];
        let nats = match backend {
            Backend::Embedded => None,
            Backend::Durable => {
                let nats = PrivateNats::start();
                let config = app.dir().join("runtime-config.toml");
                std::fs::write(&config, durable_runtime_config(&nats.url(), server_of))
                    .expect("writing the runtime config");
                args.push("--runtime-config-file".into());
                args.push(config.display().to_string());
                Some(nats)
            }
        };
        let mut demo = Demo {
            app,
            args,
            spindle: None,
            api: OpenApi::load(),
            _nats: nats,
        };
        demo.boot();
        demo
    }

    fn boot(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.spindle = Some(self.app.start_with(&args));
    }

    /// Kills the host with SIGKILL, as a crash would, and starts it again on
    /// the same databases and broker.
    fn crash_and_restart(&mut self) {
        drop(self.spindle.take());
        self.boot();
    }

    /// The private NATS server's URL (the durable backend only).
    fn nats_url(&self) -> String {
        self._nats.as_ref().expect("the demo runs on NATS").url()
    }

    fn spindle(&self) -> &Spindle {
        self.spindle.as_ref().expect("the demo is running")
    }

    /// Sends a request and checks the reply against openapi.yaml.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let mut all = headers.to_vec();
        if let Some(authorization) = &authorization {
            all.push(("authorization", authorization));
        }
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        let reply = self
            .spindle()
            .send_with_headers(method.clone(), path, &all, body)
            .await;
        self.api.check(method.as_str(), path, &reply);
        reply
    }

    /// Writes `method path` with the header lines `head`, then `body`, on a
    /// new connection and never ends the body, as a slow or hostile client
    /// would; the answer must come within [`PROMPT`] anyway. Checks it
    /// against openapi.yaml like [`Demo::call`].
    async fn send_unfinished(&self, method: &str, path: &str, head: &str, body: &[u8]) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.spindle().base_url().trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connecting to the app listener");
        // `Connection: close`: the answer ends where the connection does.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{head}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("headers");
        // The host may answer, close and reset the connection before all of
        // the body is written: that is the behaviour under test.
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PROMPT, async {
            let mut buffer = [0u8; 4096];
            // An error after the answer is the reset of the unread body.
            while let Ok(count @ 1..) = stream.read(&mut buffer).await {
                answer.extend_from_slice(&buffer[..count]);
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(
            read.is_ok(),
            "{method} {path} got no complete answer within {PROMPT:?}, so the body was \
             waited for; so far: {answer:?}"
        );
        let reply = parse_reply(&answer);
        self.api.check(method, path, &reply);
        reply
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, &[], None).await
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Reply {
        self.call(method, path, token, &[], Some(body.to_string()))
            .await
    }

    /// GETs `path` until `done` holds, for what events settle later.
    async fn poll(&self, path: &str, token: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let until = Instant::now() + SETTLE_DEADLINE;
        loop {
            let reply = self.get(path, Some(token)).await;
            if done(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < until,
                "GET {path} did not settle within {SETTLE_DEADLINE:?}; last: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sign_up(&self, name: &str) -> User {
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        let reply = self
            .send_json(
                Method::POST,
                "/auth/signup",
                None,
                json!({ "email": email, "password": PASSWORD, "name": name }),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        let id = body(&reply)["user_id"]
            .as_str()
            .expect("user_id")
            .to_string();
        let reply = self.log_in(&email, PASSWORD).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let token = body(&reply)["token"].as_str().expect("token").to_string();
        User { id, email, token }
    }

    async fn log_in(&self, email: &str, password: &str) -> Reply {
        self.send_json(
            Method::POST,
            "/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// The user's payment account, once `user.created` has opened it.
    async fn account(&self, user: &User) -> Value {
        body(
            &self
                .poll("/payments/account", &user.token, |r| r.status == 200)
                .await,
        )
    }

    async fn stock(&self, sku: &str) -> i64 {
        let reply = self.get(&format!("/inventory/{sku}"), None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        body(&reply)["available"].as_i64().expect("available")
    }

    async fn place_order(&self, user: &User, items: Value, key: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = key
            .map(|key| ("idempotency-key", key))
            .into_iter()
            .collect();
        let body = json!({ "items": items }).to_string();
        self.call(
            Method::POST,
            "/orders",
            Some(&user.token),
            &headers,
            Some(body),
        )
        .await
    }

    /// Places an order and returns its id.
    async fn order(&self, user: &User, items: Value) -> String {
        let reply = self.place_order(user, items, None).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(body(&reply)["status"], "pending", "{reply:?}");
        body(&reply)["order_id"]
            .as_str()
            .expect("order_id")
            .to_string()
    }

    /// The order once the saga has confirmed or cancelled it.
    async fn settled(&self, user: &User, order_id: &str) -> Value {
        let reply = self
            .poll(&format!("/orders/{order_id}"), &user.token, |reply| {
                reply.status == 200 && body(reply)["status"] != "pending"
            })
            .await;
        body(&reply)
    }
}

/// A raw HTTP/1.1 answer read to its end, as a [`Reply`]: the body is
/// taken whole after the headers, or decoded if it is chunked.
fn parse_reply(answer: &str) -> Reply {
    let (head, rest) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("a bad header line in {answer:?}"));
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            reqwest::header::HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The data of a chunked body (`<hex size>\r\n<data>\r\n`..., `0\r\n\r\n`).
fn dechunk(mut chunks: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, rest) = chunks
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("a cut chunk: {chunks:?}"));
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&rest[..size]);
        chunks = rest[size..].trim_start_matches("\r\n");
    }
}

fn body(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {reply:?}"))
}

/// The workspace's spin.toml with its paths made absolute, so the app can
/// run from a temporary directory.
fn demo_manifest() -> String {
    let root = workspace_root().display().to_string();
    std::fs::read_to_string(workspace_root().join("spin.toml"))
        .expect("reading the demo's spin.toml")
        .replace("source = \"target/", &format!("source = \"{root}/target/"))
        .replace(
            "migrations = \"migrations/",
            &format!("migrations = \"{root}/migrations/"),
        )
}

/// A database per service (fresh names; `spindle up` creates them) on the
/// PostgreSQL server `server_of(service)` names, the private NATS server
/// and the local Redis.
fn durable_runtime_config(nats_url: &str, server_of: &dyn Fn(&str) -> String) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut config = format!(
        "[messaging]\nurl = \"{nats_url}\"\n\n[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis_url()
    );
    for service in SERVICES {
        let server = server_of(service);
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(base, _)| base);
        config.push_str(&format!(
            "\n[database.{service}]\nurl = \"{base}/spindle_demo_{}_{service}\"\n",
            &run[..12]
        ));
    }
    config
}

/// Runs each scenario on both backends.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Backend::Embedded).await
                }
            )*
        }
        mod on_postgres_and_nats {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Backend::Durable).await
                }
            )*
        }
    };
}

on_both_backends!(
    sign_up_log_in_and_an_order_is_confirmed,
    concurrent_wrong_passwords_get_no_more_tries_than_sequential_ones,
    a_lock_runs_out_and_the_count_starts_again,
    an_order_over_the_credit_limit_is_cancelled_and_its_stock_restored,
    an_order_for_missing_stock_is_cancelled_without_a_charge,
);

async fn sign_up_log_in_and_an_order_is_confirmed(backend: Backend) {
    let demo = Demo::start(backend);
    let ada = demo.sign_up("ada").await;

    // The profile comes from `user.registered`; the second read is cached.
    let path = format!("/users/{}", ada.id);
    let profile = demo.poll(&path, &ada.token, |r| r.status == 200).await;
    assert_eq!(body(&profile)["email"], ada.email.as_str());
    assert_eq!(body(&profile)["name"], "ada");
    assert_eq!(profile.headers["x-cache"], "miss");
    assert_eq!(
        demo.get(&path, Some(&ada.token)).await.headers["x-cache"],
        "hit"
    );

    let change = json!({ "name": "Ada Lovelace", "bio": "analyst" });
    let reply = demo
        .send_json(Method::PUT, &path, Some(&ada.token), change)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reread = demo.get(&path, Some(&ada.token)).await;
    assert_eq!(
        reread.headers["x-cache"], "miss",
        "a change drops the cached copy"
    );
    assert_eq!(body(&reread)["name"], "Ada Lovelace");

    // The account comes from `user.created`.
    let account = demo.account(&ada).await;
    assert_eq!(account["charged_cents"], 0);
    let keyboards = demo.stock("KEYB-001").await;
    let cables = demo.stock("CABL-003").await;

    let order_id = demo
        .order(
            &ada,
            json!([{ "sku": "KEYB-001", "quantity": 2 }, { "sku": "CABL-003", "quantity": 3 }]),
        )
        .await;
    let order = demo.settled(&ada, &order_id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["amount_cents"], 2 * 8900 + 3 * 900);
    // orders took the customer from users over gRPC (GetUser, service
    // chaining over h2c): the profile as it was changed above.
    assert_eq!(
        order["customer"],
        json!({ "name": "Ada Lovelace", "email": ada.email }),
        "{order}"
    );
    assert_eq!(demo.stock("KEYB-001").await, keyboards - 2);
    assert_eq!(demo.stock("CABL-003").await, cables - 3);
    assert_eq!(
        demo.account(&ada).await["charged_cents"],
        2 * 8900 + 3 * 900
    );
}

async fn an_order_over_the_credit_limit_is_cancelled_and_its_stock_restored(backend: Backend) {
    let demo = Demo::start(backend);
    let bob = demo.sign_up("bob").await;
    let limit = demo.account(&bob).await["credit_limit_cents"]
        .as_i64()
        .expect("limit");
    let laptops = demo.stock("LAPT-005").await;
    assert!(
        149_900 > limit,
        "a laptop must be over the default credit limit"
    );

    let order_id = demo
        .order(&bob, json!([{ "sku": "LAPT-005", "quantity": 1 }]))
        .await;
    let order = demo.settled(&bob, &order_id).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    let reason = order["reason"].as_str().expect("a reason");
    assert!(reason.contains("declined"), "{reason}");
    assert_eq!(
        demo.stock("LAPT-005").await,
        laptops,
        "the reservation was released"
    );
    assert_eq!(demo.account(&bob).await["charged_cents"], 0);
}

async fn an_order_for_missing_stock_is_cancelled_without_a_charge(backend: Backend) {
    let demo = Demo::start(backend);
    let cy = demo.sign_up("cy").await;
    demo.account(&cy).await;
    let lamps = demo.stock("LAMP-006").await;

    let order_id = demo
        .order(&cy, json!([{ "sku": "MOUS-002", "quantity": 1 }, { "sku": "LAMP-006", "quantity": lamps + 1 }]))
        .await;
    let order = demo.settled(&cy, &order_id).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert!(
        order["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("not enough LAMP-006")),
        "{order}"
    );
    assert_eq!(demo.stock("LAMP-006").await, lamps);
    assert_eq!(
        demo.account(&cy).await["charged_cents"],
        0,
        "nothing was charged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_other_users_tokens_are_refused() {
    let demo = Demo::start(Backend::Embedded);
    let owner = demo.sign_up("owner").await;
    let other = demo.sign_up("other").await;
    demo.account(&owner).await;
    let order_id = demo
        .order(&owner, json!([{ "sku": "CABL-003", "quantity": 1 }]))
        .await;
    let order_path = format!("/orders/{order_id}");

    let now = jsonwebtoken::get_current_timestamp();
    let claims =
        |exp: u64, iss: &str| json!({ "sub": owner.id, "iss": iss, "iat": now, "exp": exp });
    let sign = |claims: Value, key: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("signing a test token")
    };
    let cases = [
        ("no token", None, "missing_token"),
        (
            "signed with another key",
            Some(sign(
                claims(now + 600, "spindle-demo"),
                "not-the-apps-key-but-long-enough-too",
            )),
            "invalid_token",
        ),
        (
            "expired",
            Some(sign(claims(now - 600, "spindle-demo"), SECRET)),
            "token_expired",
        ),
        (
            "another issuer",
            Some(sign(claims(now + 600, "someone-else"), SECRET)),
            "invalid_token",
        ),
        ("not a JWT", Some("not.a.jwt".to_string()), "invalid_token"),
    ];
    for (case, token, code) in cases {
        let reply = demo.get(&order_path, token.as_deref()).await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert_eq!(body(&reply)["error"], code, "{case}");
    }
    assert_eq!(demo.get(&order_path, Some(&owner.token)).await.status, 200);

    // A good token for someone the users service has no profile of: orders
    // asks users over gRPC, hears NOT_FOUND, and places nothing.
    let stranger_id = uuid::Uuid::new_v4().to_string();
    let stranger = User {
        token: sign(
            json!({ "sub": stranger_id, "iss": "spindle-demo", "iat": now, "exp": now + 600 }),
            SECRET,
        ),
        id: stranger_id,
        email: String::new(),
    };
    let reply = demo
        .place_order(
            &stranger,
            json!([{ "sku": "CABL-003", "quantity": 1 }]),
            None,
        )
        .await;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(body(&reply)["error"], "no_profile_yet", "{reply:?}");

    // Someone else's order does not exist for them; their profile is theirs.
    let reply = demo.get(&order_path, Some(&other.token)).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = demo
        .send_json(
            Method::PUT,
            &format!("/users/{}", owner.id),
            Some(&other.token),
            json!({ "name": "mallory" }),
        )
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_yaml_placeholder_or_a_short_signing_key_signs_and_checks_nothing() {
    for key in [
        kubernetes_placeholder_key(),
        "only-31-bytes-long-0123456789ab".into(),
    ] {
        let demo = Demo::start_with_key(Backend::Embedded, &key);
        let email = format!("kim-{}@example.com", uuid::Uuid::new_v4().simple());
        let signup = json!({ "email": email, "password": PASSWORD, "name": "kim" });
        let reply = demo
            .send_json(Method::POST, "/auth/signup", None, signup)
            .await;
        assert_eq!(reply.status, 201, "sign-up signs nothing: {reply:?}");

        let reply = demo.log_in(&email, PASSWORD).await;
        assert_misconfigured(&reply, &key);

        // Anyone can sign with a key that is public or guessable: a token
        // signed with it must not be taken as proof of anything.
        let now = jsonwebtoken::get_current_timestamp();
        let claims =
            json!({ "sub": "anyone", "iss": "spindle-demo", "iat": now, "exp": now + 600 });
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("signing a test token");
        for path in ["/payments/account", "/orders/any", "/users/anyone"] {
            assert_misconfigured(&demo.get(path, Some(&forged)).await, &key);
        }
    }
}

/// The `jwt_secret` placeholder the Kubernetes Secret ships.
fn kubernetes_placeholder_key() -> String {
    let path = workspace_root().join("manifests/kubernetes/secret.yaml");
    let text = std::fs::read_to_string(&path).expect("reading secret.yaml");
    let secret: Value = serde_yaml_ng::from_str(&text).expect("secret.yaml is YAML");
    let key = secret["stringData"]["SPIN_VARIABLE_JWT_SECRET"]
        .as_str()
        .expect("secret.yaml sets SPIN_VARIABLE_JWT_SECRET")
        .to_string();
    assert!(
        key.len() >= 32,
        "the placeholder is refused for what it is, not its length"
    );
    key
}

/// A 500 that tells the operator how to set the key.
fn assert_misconfigured(reply: &Reply, key: &str) {
    assert_eq!(reply.status, 500, "with jwt_secret={key}: {reply:?}");
    assert_eq!(body(reply)["error"], "misconfigured", "{reply:?}");
    let message = body(reply)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("jwt_secret") && message.contains("32 bytes"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_and_unknown_emails_look_the_same_and_repeated_failures_lock() {
    let demo = Demo::start(Backend::Embedded);
    let user = demo.sign_up("dora").await;

    let wrong_password = demo.log_in(&user.email, "not the password").await;
    let unknown_email = demo.log_in("nobody@example.com", "not the password").await;
    assert_eq!(wrong_password.status, 401, "{wrong_password:?}");
    assert_eq!(
        (unknown_email.status, &unknown_email.body),
        (wrong_password.status, &wrong_password.body),
        "an unknown email must not be told apart from a wrong password"
    );

    // Five failures in a row (one above, four here) lock the email, even
    // against the right password; an unknown email locks the same way.
    for _ in 0..4 {
        assert_eq!(demo.log_in(&user.email, "still wrong").await.status, 401);
        assert_eq!(
            demo.log_in("nobody@example.com", "still wrong")
                .await
                .status,
            401
        );
    }
    for email in [user.email.as_str(), "nobody@example.com"] {
        let locked = demo.log_in(email, PASSWORD).await;
        assert_eq!(locked.status, 429, "{locked:?}");
        let wait: u64 = locked.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=300).contains(&wait), "Retry-After: {wait}");
    }
}

/// The lockout counts each attempt before checking the password, so
/// guesses sent all at once get no more tries than guesses in a row.
async fn concurrent_wrong_passwords_get_no_more_tries_than_sequential_ones(backend: Backend) {
    let demo = Demo::start(backend);
    let user = demo.sign_up("ivy").await;

    let guesses: Vec<String> = (0..20)
        .map(|guess| format!("wrong guess {guess}"))
        .collect();
    let logins = guesses.iter().map(|guess| demo.log_in(&user.email, guess));
    let replies = futures::future::join_all(logins).await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    let wrong = statuses.iter().filter(|&&status| status == 401).count();
    let locked = statuses.iter().filter(|&&status| status == 429).count();
    assert!(
        wrong <= 5,
        "{wrong} of 20 concurrent guesses were checked; 5 may be: {statuses:?}"
    );
    assert_eq!(wrong + locked, 20, "only 401 or 429: {statuses:?}");

    let right = demo.log_in(&user.email, PASSWORD).await;
    assert_eq!(right.status, 429, "the email is locked: {right:?}");
    assert!(right.headers.contains_key("retry-after"), "{right:?}");
}

/// With `lockout_seconds` at 1: once the lock has run out, the next
/// attempt starts a new run of five, and a success ends a run.
async fn a_lock_runs_out_and_the_count_starts_again(backend: Backend) {
    let manifest = demo_manifest();
    let short_lock = manifest.replace("lockout_seconds = \"300\"", "lockout_seconds = \"1\"");
    assert_ne!(short_lock, manifest, "spin.toml sets lockout_seconds");
    let demo = Demo::launch(backend, SECRET, &short_lock);
    let user = demo.sign_up("jo").await;

    for _ in 0..5 {
        assert_eq!(demo.log_in(&user.email, "wrong").await.status, 401);
    }
    let locked = demo.log_in(&user.email, PASSWORD).await;
    assert_eq!(locked.status, 429, "{locked:?}");
    assert_eq!(locked.headers["retry-after"], "1", "{locked:?}");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A new run of five: four wrong, and the fifth, right, is let in.
    for _ in 0..4 {
        assert_eq!(demo.log_in(&user.email, "wrong").await.status, 401);
    }
    let right = demo.log_in(&user.email, PASSWORD).await;
    assert_eq!(right.status, 200, "{right:?}");
    // The success cleared the count: a wrong password is just wrong again.
    assert_eq!(demo.log_in(&user.email, "wrong").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_places_an_order_once() {
    let demo = Demo::start(Backend::Embedded);
    let user = demo.sign_up("eve").await;
    demo.account(&user).await;
    let items = json!([{ "sku": "MOUS-002", "quantity": 1 }]);

    let first = demo
        .place_order(&user, items.clone(), Some("checkout-1"))
        .await;
    let again = demo
        .place_order(&user, items.clone(), Some("checkout-1"))
        .await;
    assert_eq!(
        (first.status, again.status),
        (201, 201),
        "{first:?} {again:?}"
    );
    assert_eq!(body(&first)["order_id"], body(&again)["order_id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let reused = demo
        .place_order(
            &user,
            json!([{ "sku": "MOUS-002", "quantity": 2 }]),
            Some("checkout-1"),
        )
        .await;
    assert_eq!(reused.status, 422, "{reused:?}");
    assert_eq!(body(&reused)["error"], "idempotency_key_reused");

    let other = demo.order(&user, items).await;
    for order_id in [
        body(&first)["order_id"].as_str().expect("id"),
        other.as_str(),
    ] {
        assert_eq!(demo.settled(&user, order_id).await["status"], "confirmed");
    }
    assert_eq!(
        demo.account(&user).await["charged_cents"],
        2 * 2900,
        "two orders charged, not three"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_with_a_json_error_and_changes_nothing() {
    let demo = Demo::start(Backend::Embedded);
    let user = demo.sign_up("fay").await;
    let token = Some(user.token.as_str());
    let own_profile = format!("/users/{}", user.id);
    let cases: Vec<(Method, &str, Option<&str>, &str, u16)> = vec![
        (Method::POST, "/auth/signup", None, "not json", 400),
        (
            Method::POST,
            "/auth/signup",
            None,
            r#"{"email":"nope","password":"long enough","name":"x"}"#,
            400,
        ),
        (
            Method::POST,
            "/auth/signup",
            None,
            r#"{"email":"a@example.com","password":"short","name":"x"}"#,
            400,
        ),
        (
            Method::POST,
            "/auth/signup",
            None,
            r#"{"email":"a@example.com","password":"long enough","name":" "}"#,
            400,
        ),
        (Method::POST, "/auth/login", None, "{}", 400),
        (Method::GET, "/auth/login", None, "", 405),
        (Method::POST, "/orders", token, r#"{"items":[]}"#, 400),
        (
            Method::POST,
            "/orders",
            token,
            r#"{"items":[{"sku":"no spaces","quantity":1}]}"#,
            400,
        ),
        (
            Method::POST,
            "/orders",
            token,
            r#"{"items":[{"sku":"CABL-003","quantity":0}]}"#,
            400,
        ),
        (
            Method::POST,
            "/orders",
            token,
            r#"{"items":[{"sku":"CABL-003","quantity":"2"}]}"#,
            400,
        ),
        (
            Method::POST,
            "/orders",
            token,
            r#"{"items":[{"sku":"CABL-003","quantity":1}],"coupon":"x"}"#,
            400,
        ),
        (
            Method::POST,
            "/orders",
            token,
            r#"{"items":[{"sku":"CABL-003","quantity":1},{"sku":"CABL-003","quantity":1}]}"#,
            400,
        ),
        (Method::GET, "/orders/no-such-order", token, "", 404),
        (Method::GET, "/inventory/NO-SUCH-SKU", None, "", 404),
        (Method::DELETE, "/inventory", None, "", 405),
        (
            Method::PUT,
            own_profile.as_str(),
            token,
            r#"{"name":""}"#,
            400,
        ),
        (
            Method::PUT,
            own_profile.as_str(),
            token,
            r#"{"email":"x@example.com"}"#,
            400,
        ),
    ];
    // Signing up again with an email that is taken.
    let signup = json!({ "email": user.email, "password": PASSWORD, "name": "again" }).to_string();
    let duplicate = (Method::POST, "/auth/signup", None, signup.as_str(), 409);
    for (method, path, token, text, expected) in cases.into_iter().chain([duplicate]) {
        let body_text = (!text.is_empty()).then(|| text.to_string());
        let reply = demo.call(method.clone(), path, token, &[], body_text).await;
        assert_eq!(reply.status, expected, "{method} {path} {text}: {reply:?}");
        assert!(body(&reply)["message"].is_string(), "{reply:?}");
    }

    // None of it left anything behind: no order was charged, stock is whole.
    assert_eq!(demo.account(&user).await["charged_cents"], 0);
    assert_eq!(demo.stock("CABL-003").await, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_64_kib_is_refused_with_413_without_being_read_to_the_end() {
    let demo = Demo::start(Backend::Embedded);
    let user = demo.sign_up("gil").await;
    let token = Some(user.token.as_str());
    let own_profile = format!("/users/{}", user.id);

    // Every operation that reads a JSON body, sent a body one byte over.
    let padding = "x".repeat(BODY_LIMIT);
    let oversized = json!({ "email": "a@example.com", "password": padding, "name": "x" });
    let over_limit = json!({ "name": padding, "bio": "x" });
    let cases = [
        (Method::POST, "/auth/signup", None, oversized.clone()),
        (Method::POST, "/auth/login", None, oversized),
        (
            Method::POST,
            "/orders",
            token,
            json!({ "items": [padding] }),
        ),
        (Method::PUT, own_profile.as_str(), token, over_limit),
    ];
    for (method, path, token, value) in cases {
        let text = value.to_string();
        assert!(text.len() > BODY_LIMIT);
        let reply = demo
            .call(method.clone(), path, token, &[], Some(text))
            .await;
        assert_eq!(reply.status, 413, "{method} {path}: {reply:?}");
        assert_eq!(body(&reply)["error"], "body_too_large", "{reply:?}");
    }

    // Announced as 1 MiB (under the host's own cap, so the service decides),
    // 1 KiB sent: refused on the header alone.
    let announced = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        1u64 << 20
    );
    let reply = demo
        .send_unfinished("POST", "/auth/signup", &announced, &[b'x'; 1024])
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(body(&reply)["error"], "body_too_large", "{reply:?}");

    // No length announced and a body that never ends: refused once more
    // than 64 KiB has arrived, not when the body ends (it never does).
    let chunked = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n";
    let mut stream = Vec::new();
    for _ in 0..=BODY_LIMIT / 1024 {
        stream.extend_from_slice(b"400\r\n");
        stream.extend_from_slice(&[b' '; 1024]);
        stream.extend_from_slice(b"\r\n");
    }
    let reply = demo
        .send_unfinished("POST", "/auth/signup", chunked, &stream)
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(body(&reply)["error"], "body_too_large", "{reply:?}");

    // A body at the limit is still read: the login is simply wrong.
    let filler = " ".repeat(BODY_LIMIT);
    let at_limit = json!({ "email": user.email, "password": "not the password" }).to_string();
    let at_limit = format!("{at_limit}{}", &filler[at_limit.len()..]);
    assert_eq!(at_limit.len(), BODY_LIMIT);
    let reply = demo
        .call(Method::POST, "/auth/login", None, &[], Some(at_limit))
        .await;
    assert_eq!(reply.status, 401, "{reply:?}");
}

/// With orders in flight, the host is killed (SIGKILL) at three points and
/// restarted. Every order must end confirmed or cancelled, and stock and
/// charges must add up to exactly the confirmed orders: no event lost, none
/// applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn orders_survive_the_host_being_killed_mid_saga() {
    let mut demo = Demo::start(Backend::Durable);
    let users = [demo.sign_up("gus").await, demo.sign_up("hal").await];
    for user in &users {
        demo.account(user).await;
    }
    let catalogue = body(&demo.get("/inventory", None).await);
    let stock_before = stock_levels(&catalogue);
    let prices: BTreeMap<String, i64> = catalogue["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["sku"].as_str().expect("sku").to_string(),
                item["price_cents"].as_i64().expect("price"),
            )
        })
        .collect();
    // Cheap lines, a laptop (over the limit: compensated) and a monitor
    // (confirmed until the credit runs out, then compensated too).
    let baskets = [
        json!([{ "sku": "KEYB-001", "quantity": 1 }]),
        json!([{ "sku": "MOUS-002", "quantity": 2 }, { "sku": "CABL-003", "quantity": 1 }]),
        json!([{ "sku": "LAPT-005", "quantity": 1 }]),
        json!([{ "sku": "MONI-004", "quantity": 1 }]),
        json!([{ "sku": "CABL-003", "quantity": 4 }]),
    ];

    let mut placed: Vec<(usize, String)> = Vec::new();
    // Kill right after placing, after one settled, and after half settled.
    for (round, settled_before_kill) in [0, 1, 5].into_iter().enumerate() {
        let mut batch = Vec::new();
        for index in 0..10 {
            let user = (round + index) % users.len();
            let basket = baskets[(round * 10 + index) % baskets.len()].clone();
            let key = format!("crash-{round}-{index}");
            let reply = demo.place_order(&users[user], basket, Some(&key)).await;
            assert_eq!(reply.status, 201, "{reply:?}");
            batch.push((
                user,
                body(&reply)["order_id"].as_str().expect("id").to_string(),
            ));
        }
        wait_until_settled(&demo, &users, &batch, settled_before_kill).await;
        demo.crash_and_restart();
        placed.extend(batch);
    }

    let mut confirmed_amounts = [0i64; 2];
    let mut confirmed_quantities: BTreeMap<String, i64> = BTreeMap::new();
    for (user, order_id) in &placed {
        let order = demo.settled(&users[*user], order_id).await;
        match order["status"].as_str() {
            Some("confirmed") => {
                let mut amount = 0;
                for item in order["items"].as_array().expect("items") {
                    let sku = item["sku"].as_str().expect("sku");
                    let quantity = item["quantity"].as_i64().expect("quantity");
                    amount += prices[sku] * quantity;
                    *confirmed_quantities.entry(sku.to_string()).or_default() += quantity;
                }
                assert_eq!(order["amount_cents"], amount, "{order}");
                confirmed_amounts[*user] += amount;
            }
            Some("cancelled") => assert!(order["reason"].is_string(), "{order}"),
            _ => panic!("an order ended neither confirmed nor cancelled: {order}"),
        }
    }
    assert!(
        confirmed_amounts.iter().sum::<i64>() > 0,
        "some orders were confirmed"
    );

    let stock_after = stock_levels(&body(&demo.get("/inventory", None).await));
    for (sku, before) in &stock_before {
        let sold = confirmed_quantities.get(sku).copied().unwrap_or(0);
        assert_eq!(stock_after[sku], before - sold, "stock of {sku}");
    }
    for (user, amount) in users.iter().zip(confirmed_amounts) {
        assert_eq!(
            demo.account(user).await["charged_cents"],
            amount,
            "charges of {}",
            user.email
        );
    }
}

/// The `order.confirmed` event reaches `orders` while its database is cut
/// off, for longer than five half-second retries: the default `max_deliver`
/// dead-lettered the event then and the order stayed pending for good (the
/// fault suite's postgres-cut scenario found it). Once the database is
/// back, the order is confirmed.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_settled_after_its_database_was_cut_off_for_seconds() {
    let direct = postgres_url();
    let upstream = services::host_port(&direct, 5432);
    let proxy = TcpProxy::start(&upstream).await;
    let through_proxy = direct.replacen(&upstream, &proxy.address().to_string(), 1);
    let demo = Demo::start_with_database_server("orders", &through_proxy);
    let ida = demo.sign_up("ida").await;
    demo.account(&ida).await;

    let basket = json!([{ "sku": "CABL-003", "quantity": 1 }]);
    let reply = demo.place_order(&ida, basket, None).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let order_id = body(&reply)["order_id"].as_str().expect("id").to_string();
    proxy.cut();
    // The saga's own `order.confirmed` may not have been sent yet (the
    // order's event can still be in orders' outbox, behind the cut): send
    // one as the saga would, so that `orders` surely receives it now.
    let nats = async_nats::connect(demo.nats_url()).await.expect("NATS");
    let event = json!({ "order_id": order_id, "amount_cents": 900 }).to_string();
    async_nats::jetstream::new(nats)
        .publish("order.confirmed", event.into())
        .await
        .expect("publishing order.confirmed")
        .await
        .expect("JetStream took order.confirmed");
    // `orders` cannot record it and asks for the event again, well past the
    // five deliveries it used to get.
    demo.spindle()
        .wait_for_log_count("orders: settling", 8, SETTLE_DEADLINE);
    proxy.restore();

    let order = demo.settled(&ida, &order_id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert!(
        !demo.spindle().stderr().contains("dead-lettered"),
        "an event was dead-lettered:\n{}",
        demo.spindle().stderr()
    );
}

fn stock_levels(catalogue: &Value) -> BTreeMap<String, i64> {
    catalogue["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["sku"].as_str().expect("sku").to_string(),
                item["available"].as_i64().expect("available"),
            )
        })
        .collect()
}

/// Waits until at least `count` of `orders` are no longer pending.
async fn wait_until_settled(demo: &Demo, users: &[User], orders: &[(usize, String)], count: usize) {
    let until = Instant::now() + SETTLE_DEADLINE;
    loop {
        let mut settled = 0;
        for (user, order_id) in orders {
            let reply = demo
                .get(&format!("/orders/{order_id}"), Some(&users[*user].token))
                .await;
            if body(&reply)["status"] != "pending" {
                settled += 1;
            }
        }
        if settled >= count {
            return;
        }
        assert!(
            Instant::now() < until,
            "only {settled} of {} orders settled",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
