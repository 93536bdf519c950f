//! `auth`: sign-up and login.
//!
//! - `POST /auth/signup` `{email, password, name}` stores an Argon2id hash
//!   and publishes `user.registered` through the outbox, in one transaction.
//! - `POST /auth/login` `{email, password}` answers with a signed JWT. A wrong
//!   password and an unknown email get the same answer after the same work;
//!   `max_failed_logins` failures in a row lock the email for
//!   `lockout_seconds`.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use demo_kit::api::{self, ApiError, Reply};
use demo_kit::events::{USER_REGISTERED, UserEvent};
use demo_kit::token::Keys;
use demo_kit::{db, now_ms, variable_number};
use serde::{Deserialize, Serialize};
use spin_sdk::http::{Method, Request, StatusCode};
use spin_sdk::http_service;
use spindle_sdk::sql::{self, Error as SqlError, Transaction, Value};

#[http_service]
async fn serve(request: Request) -> Reply {
    let route = (request.method().clone(), request.uri().path().to_string());
    let result = match (route.0, route.1.trim_end_matches('/')) {
        (Method::POST, "/auth/signup") => signup(request).await,
        (Method::POST, "/auth/login") => login(request).await,
        (_, "/auth/signup" | "/auth/login") => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    };
    result.unwrap_or_else(ApiError::into_reply)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Signup {
    email: String,
    password: String,
    name: String,
}

#[derive(Serialize)]
struct Account {
    user_id: String,
    email: String,
    name: String,
}

async fn signup(request: Request) -> Result<Reply, ApiError> {
    let form: Signup = api::read_json(request).await?;
    let email = normalize_email(&form.email)?;
    check_password(&form.password)?;
    let name = checked_name(&form.name)?;
    let hash = Argon2::default()
        .hash_password(form.password.as_bytes())
        .map_err(|error| ApiError::unavailable(format!("could not hash: {error}")))?
        .to_string();
    let user_id = uuid::Uuid::new_v4().to_string();

    let tx = Transaction::begin().await?;
    let stored = tx
        .execute(
            "INSERT INTO credentials (user_id, email, password_hash, created_at) \
             VALUES ($1, $2, $3, $4)"
                .into(),
            vec![
                db::text(&user_id),
                db::text(&email),
                db::text(hash),
                Value::Integer(now_ms()),
            ],
        )
        .await;
    match stored {
        Err(SqlError::ConstraintViolation(_)) => {
            return Err(ApiError::conflict(
                "email_taken",
                "an account with this email exists",
            ));
        }
        other => other?,
    };
    let event = UserEvent {
        user_id: user_id.clone(),
        email: email.clone(),
        name: name.clone(),
    };
    let body = serde_json::to_vec(&event).unwrap_or_default();
    tx.publish(USER_REGISTERED.into(), body, Vec::new()).await?;
    tx.commit().await?;
    Ok(api::json(
        StatusCode::CREATED,
        &Account {
            user_id,
            email,
            name,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct Session {
    token: String,
    token_type: &'static str,
    expires_in: u64,
    user_id: String,
}

async fn login(request: Request) -> Result<Reply, ApiError> {
    let form: Login = api::read_json(request).await?;
    let email = form.email.trim().to_lowercase();
    if email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::invalid("email is not a valid address"));
    }
    let policy = LockoutPolicy::from_variables().await;
    // Counted before the password is checked: an attempt that is not let
    // through here never reaches Argon2, however many arrive at once.
    if let Attempt::Locked { wait_seconds } = count_attempt(&email, &policy).await? {
        return Err(ApiError::too_many(
            "too many failed logins; try again later",
            wait_seconds,
        ));
    }
    let Some(user_id) = check_credentials(&email, &form.password).await? else {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the email or the password is wrong",
        ));
    };
    sql::execute(
        "DELETE FROM login_failures WHERE email = $1".into(),
        vec![db::text(&email)],
    )
    .await?;
    let ttl = variable_number("token_ttl_seconds", 3600).await;
    let token = Keys::from_variables().await?.issue(&user_id, ttl)?;
    Ok(api::json(
        StatusCode::OK,
        &Session {
            token,
            token_type: "Bearer",
            expires_in: ttl,
            user_id,
        },
    ))
}

/// The user id when the password matches. An unknown email costs the same
/// Argon2 work as a known one, so timing does not tell them apart.
async fn check_credentials(email: &str, password: &str) -> Result<Option<String>, ApiError> {
    let rows = sql::query(
        "SELECT user_id, password_hash FROM credentials WHERE email = $1".into(),
        vec![db::text(email)],
    )
    .await?;
    let Some(row) = db::first(&rows) else {
        let _ = Argon2::default().hash_password_with_salt(password.as_bytes(), UNKNOWN_USER_SALT);
        return Ok(None);
    };
    let stored = row.text("password_hash");
    let hash = PasswordHash::new(&stored)
        .map_err(|_| ApiError::unavailable("a stored password hash is unreadable"))?;
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    Ok(matches.then(|| row.text("user_id")))
}

/// The longest address SMTP allows.
const MAX_EMAIL_BYTES: usize = 254;

/// Any fixed salt: the hash it gives is thrown away.
const UNKNOWN_USER_SALT: &[u8] = b"spindle-unknown-user";

/// How many failures lock an email, and for how long.
struct LockoutPolicy {
    max_failures: i64,
    lock_ms: i64,
}

impl LockoutPolicy {
    async fn from_variables() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: variable_number("max_failed_logins", 5).await as i64,
            lock_ms: variable_number("lockout_seconds", 300).await as i64 * 1000,
        }
    }
}

/// Whether a login attempt may check its password.
enum Attempt {
    /// Within the allowance: check the password.
    Allowed,
    /// The email is locked; answer 429 without checking anything.
    Locked { wait_seconds: u64 },
}

/// Counts a login attempt for `email` and says whether it may go on, in one
/// statement, so that concurrent attempts are counted one after the other
/// and no more than `max_failures` in a row get to check a password.
///
/// `failures` counts the attempts since the last successful login (which
/// deletes the row). The attempt that reaches `max_failures` starts the
/// lock, so that the ones arriving while it is checked are already refused;
/// if it turns out right, its success lifts the lock again. While locked,
/// attempts are still counted, past `max_failures`, which is how they are
/// told apart from the one that started the lock. Once the lock has run
/// out, the next attempt starts a new run as if the row were not there.
async fn count_attempt(email: &str, policy: &LockoutPolicy) -> Result<Attempt, ApiError> {
    let now = now_ms();
    let lock_ends = now + policy.lock_ms;
    let first_attempt_lock = if policy.max_failures <= 1 {
        lock_ends
    } else {
        0
    };
    let rows = sql::query(
        "INSERT INTO login_failures (email, failures, locked_until) VALUES ($1, 1, $2) \
         ON CONFLICT (email) DO UPDATE SET \
         failures = CASE \
             WHEN login_failures.locked_until BETWEEN 1 AND $3 THEN excluded.failures \
             ELSE login_failures.failures + 1 END, \
         locked_until = CASE \
             WHEN login_failures.locked_until > $3 THEN login_failures.locked_until \
             WHEN login_failures.locked_until > 0 THEN excluded.locked_until \
             WHEN login_failures.failures + 1 >= $4 THEN $5 \
             ELSE 0 END \
         RETURNING failures, locked_until"
            .into(),
        vec![
            db::text(email),
            Value::Integer(first_attempt_lock),
            Value::Integer(now),
            Value::Integer(policy.max_failures),
            Value::Integer(lock_ends),
        ],
    )
    .await?;
    let row = db::first(&rows)
        .ok_or_else(|| ApiError::unavailable("counting the login attempt returned nothing"))?;
    if row.integer("failures") <= policy.max_failures {
        return Ok(Attempt::Allowed);
    }
    let left_ms = (row.integer("locked_until") - now).max(0) as u64;
    Ok(Attempt::Locked {
        wait_seconds: left_ms.div_ceil(1000),
    })
}

fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid("email is not a valid address"))
    }
}

/// The name trimmed, if it is 1 to 100 characters.
fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    Ok(name.to_string())
}

fn check_password(password: &str) -> Result<(), ApiError> {
    match password.chars().count() {
        8..=128 => Ok(()),
        _ => Err(ApiError::invalid("password must be 8 to 128 characters")),
    }
}

#[cfg(test)]
mod proptests;
