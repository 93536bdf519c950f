//! `users`: profiles.
//!
//! - On `user.registered` it creates the profile and publishes
//!   `user.created`, in one transaction (at most once per user, however
//!   often the event is delivered).
//! - `GET /users/{id}` (any signed-in user) reads through a key-value cache
//!   whose entries expire after `cache_ttl_seconds`; `x-cache` says whether
//!   it was a `hit` or a `miss`.
//! - `PUT /users/{id}` `{name?, bio?}` (only that user) updates the profile
//!   and drops its cache entry.
//! - The same over gRPC (`spindle.demo.users.v1.UserService`, see `rpc`),
//!   with the same rules and cache, plus creating one's own profile and
//!   streaming the list of profiles.

use demo_kit::api::{self, ApiError, Reply};
use demo_kit::events::{USER_CREATED, UserEvent};
use demo_kit::grpc;
use demo_kit::token::authenticate;
use demo_kit::{db, now_ms, variable_number};
use serde::{Deserialize, Serialize};
use spin_sdk::http::{BoxBody, HeaderValue, Method, Request, StatusCode, box_body};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;
use spindle_sdk::sql::{self, Transaction, Value};

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

struct Events;

impl Guest for Events {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let user: UserEvent = serde_json::from_slice(&message.body)
            .map_err(|error| HandlerError::Reject(format!("not a user event: {error}")))?;
        create_profile(&user, "").await.map(drop).map_err(|error| {
            eprintln!("users: creating profile {}: {error:?}", user.user_id);
            HandlerError::Retry(500)
        })
    }
}

export!(Events);

/// Creates the profile of `user` with `bio` and publishes `user.created`,
/// unless it exists; whether it was created.
async fn create_profile(user: &UserEvent, bio: &str) -> Result<bool, sql::Error> {
    let now = now_ms();
    let tx = Transaction::begin().await?;
    let created = tx
        .execute(
            "INSERT INTO profiles (user_id, email, name, bio, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (user_id) DO NOTHING"
                .into(),
            vec![
                db::text(&user.user_id),
                db::text(&user.email),
                db::text(&user.name),
                db::text(bio),
                Value::Integer(now),
            ],
        )
        .await?;
    if created == 1 {
        let body = serde_json::to_vec(user).unwrap_or_default();
        tx.publish(USER_CREATED.into(), body, Vec::new()).await?;
    }
    tx.commit().await?;
    Ok(created == 1)
}

mod reflection;
mod rpc;

/// gRPC calls (by their content type) go to `rpc`, the rest is the JSON API.
#[http_service]
async fn serve(request: Request) -> http::Response<BoxBody> {
    if grpc::is_grpc(&request) {
        return rpc::serve(request).await;
    }
    rest(request).await.map(box_body)
}

async fn rest(request: Request) -> Reply {
    let id = api::path_after(&request, "/users/")
        .unwrap_or_default()
        .to_string();
    let result = match *request.method() {
        _ if id.is_empty() || id.contains('/') => Err(ApiError::not_found("no such route")),
        Method::GET => get_profile(&request, &id).await,
        Method::PUT => put_profile(request, &id).await,
        _ => Err(ApiError::method_not_allowed()),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Profile {
    user_id: String,
    email: String,
    name: String,
    bio: String,
    created_at: i64,
    updated_at: i64,
}

/// A cache entry: the profile and when it stops being fresh (ms).
#[derive(Serialize, Deserialize)]
struct Cached {
    profile: Profile,
    expires_at: i64,
}

async fn get_profile(request: &Request, id: &str) -> Result<Reply, ApiError> {
    authenticate(request).await?;
    let (profile, outcome) = read_profile(id).await?;
    Ok(with_cache_header(
        api::json(StatusCode::OK, &profile),
        outcome,
    ))
}

/// The profile, read through the cache, and whether it was a cache `hit`
/// or a `miss`.
async fn read_profile(id: &str) -> Result<(Profile, &'static str), ApiError> {
    let cache = open_cache().await;
    if let Some(profile) = cached(cache.as_ref(), id).await {
        return Ok((profile, "hit"));
    }
    let profile = load(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    if let Some(cache) = &cache {
        let ttl_ms = variable_number("cache_ttl_seconds", 30).await as i64 * 1000;
        let entry = Cached {
            profile: profile.clone(),
            expires_at: now_ms() + ttl_ms,
        };
        if let Err(error) = cache.set_json(cache_key(id), &entry).await {
            eprintln!("users: caching {id}: {error:?}");
        }
    }
    Ok((profile, "miss"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileChange {
    name: Option<String>,
    bio: Option<String>,
}

async fn put_profile(request: Request, id: &str) -> Result<Reply, ApiError> {
    let claims = authenticate(&request).await?;
    if claims.sub != id {
        return Err(ApiError::forbidden("you may change only your own profile"));
    }
    let change = api::read_json(request).await?;
    let profile = update_profile(id, change).await?;
    Ok(api::json(StatusCode::OK, &profile))
}

/// Applies `change` (checked here) to the profile of `id` and drops its
/// cache entry; the caller has checked who may.
async fn update_profile(id: &str, change: ProfileChange) -> Result<Profile, ApiError> {
    let ProfileChange { name, bio } = checked(change)?;
    let updated = sql::execute(
        "UPDATE profiles SET name = COALESCE($2, name), bio = COALESCE($3, bio), updated_at = $4 \
         WHERE user_id = $1"
            .into(),
        vec![
            db::text(id),
            name.map_or(Value::Null, Value::Text),
            bio.map_or(Value::Null, Value::Text),
            Value::Integer(now_ms()),
        ],
    )
    .await?;
    if updated == 0 {
        return Err(ApiError::not_found("no such user"));
    }
    if let Some(cache) = open_cache().await
        && let Err(error) = cache.delete(cache_key(id)).await
    {
        eprintln!("users: dropping cached {id}: {error:?}");
    }
    load(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

/// The change with its name trimmed, or why it is refused: a name of 1 to
/// 100 characters, a bio of at most 500.
fn checked(change: ProfileChange) -> Result<ProfileChange, ApiError> {
    let name = change.name.map(|name| name.trim().to_string());
    if name
        .as_ref()
        .is_some_and(|name| name.is_empty() || name.chars().count() > 100)
    {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    if change
        .bio
        .as_ref()
        .is_some_and(|bio| bio.chars().count() > 500)
    {
        return Err(ApiError::invalid("bio must be at most 500 characters"));
    }
    Ok(ProfileChange {
        name,
        bio: change.bio,
    })
}

async fn load(id: &str) -> Result<Option<Profile>, ApiError> {
    let rows = sql::query(
        "SELECT user_id, email, name, bio, created_at, updated_at FROM profiles WHERE user_id = $1"
            .into(),
        vec![db::text(id)],
    )
    .await?;
    Ok(db::first(&rows).map(|row| profile_of(&row)))
}

/// Up to `limit` profiles whose ids come after `after`, in id order.
async fn page_after(after: &str, limit: u32) -> Result<Vec<Profile>, ApiError> {
    let rows = sql::query(
        "SELECT user_id, email, name, bio, created_at, updated_at FROM profiles \
         WHERE user_id > $1 ORDER BY user_id LIMIT $2"
            .into(),
        vec![db::text(after), Value::Integer(limit.into())],
    )
    .await?;
    Ok(db::rows(&rows).map(|row| profile_of(&row)).collect())
}

fn profile_of(row: &db::Row<'_>) -> Profile {
    Profile {
        user_id: row.text("user_id"),
        email: row.text("email"),
        name: row.text("name"),
        bio: row.text("bio"),
        created_at: row.integer("created_at"),
        updated_at: row.integer("updated_at"),
    }
}

/// The cache is an optimisation: when it is unavailable, reads go to the
/// database.
async fn open_cache() -> Option<Store> {
    Store::open_default()
        .await
        .inspect_err(|error| eprintln!("users: cache unavailable: {error:?}"))
        .ok()
}

async fn cached(cache: Option<&Store>, id: &str) -> Option<Profile> {
    let entry: Cached = cache?.get_json(cache_key(id)).await.ok()??;
    (entry.expires_at > now_ms()).then_some(entry.profile)
}

fn cache_key(id: &str) -> String {
    format!("profile:{id}")
}

fn with_cache_header(mut reply: Reply, outcome: &'static str) -> Reply {
    reply
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(outcome));
    reply
}

#[cfg(test)]
mod proptests;
