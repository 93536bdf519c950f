//! gRPC `GetUser` against the demo's users service, and its native peer.
//!
//! - [`sign_up`]: makes a user on the demo app over its JSON API and waits
//!   for the profile; prints `user_id  token  profile_json`.
//! - [`drive`]: unary `GetUser` calls for `duration` from `concurrency`
//!   clients multiplexed on one h2c connection; prints
//!   `calls  seconds  calls/s  p50_us  p99_us`.
//! - [`serve`]: a native tonic `UserService` doing what the component does
//!   for `GetUser` when its cache holds the profile: check the bearer token
//!   (HS256, issuer) and read the profile as JSON from Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

/// The messages and stubs of `proto/spindle/demo/users/v1/users.proto`.
mod proto {
    tonic::include_proto!("spindle.demo.users.v1");
}

use proto::user_service_client::UserServiceClient;
use proto::user_service_server::{UserService, UserServiceServer};
use proto::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    UpdateUserRequest, UpdateUserResponse, User,
};

/// The Redis key the native peer keeps a profile under.
fn profile_key(user_id: &str) -> String {
    format!("bench-grpc:profile:{user_id}")
}

/// Signs a user up on the demo at `url` and prints `user_id  token  profile`
/// once `users` has made the profile (from `user.registered`).
pub async fn sign_up(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (user_id, token) = crate::saga::sign_up(&http, url).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http
            .get(format!("{url}/users/{user_id}"))
            .bearer_auth(&token)
            .send()
            .await?;
        if reply.status() == 200 {
            let profile = reply.text().await?;
            println!("{user_id}\t{token}\t{profile}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no profile for {user_id} within 60 s: {}", reply.status());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `GetUser` for `duration` from `concurrency` tasks (after a one
/// second warm-up) and prints `calls  seconds  calls/s  p50_us  p99_us`.
pub async fn drive(
    url: &str,
    token: &str,
    user_id: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url.to_string())?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let client = UserServiceClient::new(channel);
    let authorization: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let user_id = user_id.to_string();
    let call = Arc::new(move |mut client: UserServiceClient<_>| {
        let mut request = Request::new(GetUserRequest {
            user_id: user_id.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        async move { client.get_user(request).await.map(drop) }
    });
    timed_calls(&client, &call, concurrency, Duration::from_secs(1)).await?;
    let started = Instant::now();
    let mut latencies = timed_calls(&client, &call, concurrency, duration).await?;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{}\t{seconds:.3}\t{:.0}\t{}\t{}",
        latencies.len(),
        latencies.len() as f64 / seconds,
        at(0.50).as_micros(),
        at(0.99).as_micros()
    );
    Ok(())
}

/// Runs `concurrency` loops of `call` until `duration` is up and returns
/// every call's latency; any failed call fails the run.
async fn timed_calls<C, F, Fut>(
    client: &C,
    call: &Arc<F>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let until = Instant::now() + duration;
    let loops = (0..concurrency.max(1)).map(|_| {
        let (client, call) = (client.clone(), call.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                call(client.clone()).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, Status>(latencies)
        })
    });
    let mut all = Vec::new();
    for finished in futures::future::join_all(loops).await {
        all.extend(finished?.context("a GetUser call failed")?);
    }
    if all.is_empty() {
        bail!("no call finished");
    }
    Ok(all)
}

/// Serves `UserService.GetUser` natively on `port` until killed; keeps
/// `profile` (the JSON API's body) in Redis for `user_id` first.
pub async fn serve(
    port: u16,
    secret: &str,
    issuer: &str,
    redis_url: &str,
    user_id: &str,
    profile: &str,
) -> anyhow::Result<()> {
    let redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {redis_url}"))?;
    let mut seeding = redis.clone();
    redis::cmd("SET")
        .arg(profile_key(user_id))
        .arg(profile)
        .query_async::<()>(&mut seeding)
        .await
        .context("storing the profile in Redis")?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[issuer]);
    let users = NativeUsers {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        redis,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("Ready on {}", listener.local_addr()?);
    Server::builder()
        .add_service(UserServiceServer::new(users))
        .serve_with_incoming(tokio_stream_of(listener))
        .await?;
    Ok(())
}

/// The accepted connections of `listener`, as tonic's server takes them.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// The native peer's state: the token key and the Redis connection.
struct NativeUsers {
    key: DecodingKey,
    validation: Validation,
    redis: redis::aio::MultiplexedConnection,
}

/// The profile as the JSON API shows it (and the peer stores it).
#[derive(Deserialize)]
struct Profile {
    user_id: String,
    email: String,
    name: String,
    bio: String,
    created_at: i64,
    updated_at: i64,
}

#[tonic::async_trait]
impl UserService for NativeUsers {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send authorization: Bearer <token>"))?;
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|_| Status::unauthenticated("the token is not valid"))?;
        let user_id = request.into_inner().user_id;
        let mut redis = self.redis.clone();
        let cached: Option<String> = redis::cmd("GET")
            .arg(profile_key(&user_id))
            .query_async(&mut redis)
            .await
            .map_err(|error| Status::unavailable(format!("the cache: {error}")))?;
        let cached = cached.ok_or_else(|| Status::not_found("no such user"))?;
        let profile: Profile = serde_json::from_str(&cached)
            .map_err(|error| Status::internal(format!("a cached profile: {error}")))?;
        Ok(Response::new(GetUserResponse {
            user: Some(User {
                user_id: profile.user_id,
                email: profile.email,
                name: profile.name,
                bio: profile.bio,
                created_at: profile.created_at,
                updated_at: profile.updated_at,
            }),
        }))
    }

    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        Err(Status::unimplemented("the native peer serves GetUser only"))
    }

    async fn update_user(
        &self,
        _: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        Err(Status::unimplemented("the native peer serves GetUser only"))
    }

    type ListUsersStream = futures::stream::Empty<Result<User, Status>>;

    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        Err(Status::unimplemented("the native peer serves GetUser only"))
    }
}
