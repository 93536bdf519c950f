//! The demo's users service over gRPC: a real gRPC client (tonic, h2c)
//! against the demo app on the real binary. The same profiles, rules and
//! cache as the JSON API, with gRPC statuses and their messages.

mod support;

use futures::StreamExt;
use serde_json::json;
use support::{App, Spindle, workspace_root};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

const SECRET: &str = "a-signing-key-for-tests-only-0123456789";
const SERVICE: &str = "/spindle.demo.users.v1.UserService";

// The messages of proto/spindle/demo/users/v1/users.proto.

#[derive(Clone, PartialEq, prost::Message)]
struct User {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    email: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    bio: String,
    #[prost(int64, tag = "5")]
    created_at: i64,
    #[prost(int64, tag = "6")]
    updated_at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetUserRequest {
    #[prost(string, tag = "1")]
    user_id: String,
}

/// `GetUserResponse`, `CreateUserResponse` and `UpdateUserResponse` alike.
#[derive(Clone, PartialEq, prost::Message)]
struct UserResponse {
    #[prost(message, optional, tag = "1")]
    user: Option<User>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateUserRequest {
    #[prost(string, tag = "1")]
    email: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    bio: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateUserRequest {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(string, optional, tag = "3")]
    bio: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListUsersRequest {
    #[prost(uint32, tag = "1")]
    page_size: u32,
}

/// The demo app on embedded defaults, its paths made absolute.
fn start_demo() -> (App, Spindle) {
    let root = workspace_root().display().to_string();
    let manifest = std::fs::read_to_string(workspace_root().join("spin.toml"))
        .expect("reading the demo's spin.toml")
        .replace("source = \"target/", &format!("source = \"{root}/target/"))
        .replace(
            "migrations = \"migrations/",
            &format!("migrations = \"{root}/migrations/"),
        );
    let app = App::new(&manifest).with_shared_compile_cache();
    let spindle = app.start_with(&["--variable", &format!("jwt_secret={SECRET}")]);
    (app, spindle)
}

/// A token the demo accepts for the user `sub` (signed as `auth` signs).
fn token_for(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": sub, "iss": "spindle-demo", "iat": now, "exp": now + 600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing a test token")
}

fn fresh_id() -> String {
    format!("grpc-{}", uuid::Uuid::new_v4().simple())
}

/// A gRPC client of the demo, calling as the holder of `token` (if any).
struct Caller {
    grpc: tonic::client::Grpc<Channel>,
}

impl Caller {
    async fn connect(spindle: &Spindle) -> Caller {
        let channel = Endpoint::from_shared(spindle.base_url().to_string())
            .expect("the base URL is a URI")
            .connect()
            .await
            .expect("connecting with HTTP/2 prior knowledge");
        Caller {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn call<M>(
        &mut self,
        method: &str,
        token: Option<&str>,
        message: M,
    ) -> Result<User, tonic::Status>
    where
        M: prost::Message + Send + Sync + 'static,
    {
        let mut request = Request::new(message);
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("a metadata value");
            request.metadata_mut().insert("authorization", value);
        }
        let path = PathAndQuery::try_from(format!("{SERVICE}/{method}")).expect("a path");
        self.grpc.ready().await.expect("the channel is ready");
        let reply: tonic::Response<UserResponse> = self
            .grpc
            .unary(request, path, ProstCodec::default())
            .await?;
        Ok(reply.into_inner().user.expect("a reply carries the user"))
    }

    async fn create(&mut self, token: &str, name: &str) -> Result<User, tonic::Status> {
        let request = CreateUserRequest {
            email: format!("{name}@example.com"),
            name: name.into(),
            bio: format!("{name}'s bio"),
        };
        self.call("CreateUser", Some(token), request).await
    }

    async fn get(&mut self, token: Option<&str>, id: &str) -> Result<User, tonic::Status> {
        let request = GetUserRequest { user_id: id.into() };
        self.call("GetUser", token, request).await
    }

    async fn update(
        &mut self,
        token: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<User, tonic::Status> {
        let request = UpdateUserRequest {
            user_id: id.into(),
            name: name.map(str::to_string),
            bio: None,
        };
        self.call("UpdateUser", Some(token), request).await
    }
}

fn assert_status(outcome: Result<User, tonic::Status>, code: Code, message: &str) {
    let status = outcome.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_and_update_a_profile_over_grpc_with_statuses_for_every_refusal() {
    let (_app, spindle) = start_demo();
    let mut caller = Caller::connect(&spindle).await;
    let (ada, bob) = (fresh_id(), fresh_id());
    let (ada_token, bob_token) = (token_for(&ada), token_for(&bob));

    let created = caller.create(&ada_token, "ada").await.expect("CreateUser");
    assert_eq!(
        (
            created.user_id.as_str(),
            created.email.as_str(),
            created.name.as_str()
        ),
        (ada.as_str(), "ada@example.com", "ada")
    );
    assert_status(
        caller.create(&ada_token, "ada").await,
        Code::AlreadyExists,
        "you have a profile already; change it with UpdateUser",
    );

    // Anyone signed in may read it, over gRPC and over the JSON API alike.
    let read = caller.get(Some(&bob_token), &ada).await.expect("GetUser");
    assert_eq!(read, created);
    let reply = spindle
        .send_with_headers(
            reqwest::Method::GET,
            &format!("/users/{ada}"),
            &[("authorization", &format!("Bearer {bob_token}"))],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.headers["x-cache"], "hit",
        "GetUser filled the cache the JSON API reads"
    );

    let updated = caller
        .update(&ada_token, &ada, Some("Ada Lovelace"))
        .await
        .expect("UpdateUser");
    assert_eq!(updated.name, "Ada Lovelace");
    assert_eq!(updated.bio, "ada's bio", "an unset field keeps its value");
    let read = caller.get(Some(&ada_token), &ada).await.expect("GetUser");
    assert_eq!(
        read.name, "Ada Lovelace",
        "the update dropped the cached copy"
    );

    assert_status(
        caller.update(&bob_token, &ada, Some("mallory")).await,
        Code::PermissionDenied,
        "you may change only your own profile",
    );
    assert_status(
        caller.update(&ada_token, &ada, Some("  ")).await,
        Code::InvalidArgument,
        "name must be 1 to 100 characters",
    );
    assert_status(
        caller.get(Some(&ada_token), &fresh_id()).await,
        Code::NotFound,
        "no such user",
    );
    assert_status(
        caller.get(None, &ada).await,
        Code::Unauthenticated,
        "send Authorization: Bearer <token>",
    );
    assert_status(
        caller.get(Some("not.a.jwt"), &ada).await,
        Code::Unauthenticated,
        "the token is not valid",
    );
    let no_email = CreateUserRequest {
        email: "nobody".into(),
        name: "bob".into(),
        bio: String::new(),
    };
    assert_status(
        caller.call("CreateUser", Some(&bob_token), no_email).await,
        Code::InvalidArgument,
        "email must be an email address",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_users_streams_every_profile_page_by_page() {
    let (_app, spindle) = start_demo();
    let mut caller = Caller::connect(&spindle).await;
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cy"] {
        let id = fresh_id();
        caller
            .create(&token_for(&id), name)
            .await
            .expect("CreateUser");
        ids.push(id);
    }
    ids.sort();

    let mut request = Request::new(ListUsersRequest { page_size: 1 });
    let value = format!("Bearer {}", token_for(&ids[0]))
        .parse()
        .expect("a metadata value");
    request.metadata_mut().insert("authorization", value);
    caller.grpc.ready().await.expect("the channel is ready");
    let stream = caller
        .grpc
        .server_streaming(
            request,
            PathAndQuery::from_static("/spindle.demo.users.v1.UserService/ListUsers"),
            ProstCodec::<ListUsersRequest, User>::default(),
        )
        .await
        .expect("ListUsers starts")
        .into_inner();
    let listed: Vec<String> = stream
        .map(|user| user.expect("every message arrives").user_id)
        .collect()
        .await;
    assert_eq!(listed, ids, "every profile once, in id order");

    let mut unsigned = Request::new(ListUsersRequest { page_size: 1 });
    unsigned.metadata_mut().clear();
    caller.grpc.ready().await.expect("the channel is ready");
    let status = caller
        .grpc
        .server_streaming(
            unsigned,
            PathAndQuery::from_static("/spindle.demo.users.v1.UserService/ListUsers"),
            ProstCodec::<ListUsersRequest, User>::default(),
        )
        .await
        .expect_err("no token, no list");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_and_describes_them_and_health_answers_on_the_ops_port() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (_app, spindle) = start_demo();
    let channel = Endpoint::from_shared(spindle.base_url().to_string())
        .expect("the base URL is a URI")
        .connect()
        .await
        .expect("connecting with HTTP/2 prior knowledge");
    let mut reflection = ServerReflectionClient::new(channel);
    // One stream, two questions, as grpcurl asks them.
    let asks = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("spindle.demo.users.v1.UserService".into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(asks))
        .await
        .expect("reflection starts")
        .into_inner();

    let listed = answers.next().await.expect("an answer").expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("a list of services: {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"spindle.demo.users.v1.UserService")
            && names.contains(&"grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );

    let described = answers.next().await.expect("an answer").expect("no error");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("a file descriptor: {described:?}");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .expect("a FileDescriptorProto");
    let methods: Vec<&str> = file.service[0]
        .method
        .iter()
        .map(|method| method.name())
        .collect();
    assert_eq!(
        methods,
        ["GetUser", "CreateUser", "UpdateUser", "ListUsers"]
    );

    let ops = Endpoint::from_shared(spindle.ops_url())
        .expect("the ops URL is a URI")
        .connect()
        .await
        .expect("connecting to the ops listener with HTTP/2 prior knowledge");
    let mut health = HealthClient::new(ops);
    for service in ["", "users", "orders"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("Check({service:?}): {status:?}"));
        assert_eq!(
            reply.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no-such-component".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
