//! Bearer tokens: HS256 JWTs that `auth` signs and every other service
//! checks, with the key from the secret variable `jwt_secret`.

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use spin_sdk::http::Request;
use spin_sdk::variables;

use crate::api::ApiError;

/// Keys shorter than this are refused: HS256 wants at least 256 bits.
const MIN_SECRET_BYTES: usize = 32;

/// The `jwt_secret` that `manifests/kubernetes/secret.yaml` ships. It is
/// long enough but public: anyone could sign tokens with it, so it is
/// refused like a short key.
const PLACEHOLDER_SECRET: &str = "replace-with-a-random-key-of-at-least-32-bytes";

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Who signed it (`jwt_issuer`).
    pub iss: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Signs and checks tokens with the app's key.
pub struct Keys {
    secret: String,
    issuer: String,
}

impl Keys {
    /// The keys from the `jwt_secret` and `jwt_issuer` variables.
    ///
    /// A key that is too short or the shipped placeholder is a 500 telling the
    /// operator to set a real one: signing with it, or trusting what it
    /// signed, would let anyone mint tokens.
    pub async fn from_variables() -> Result<Keys, ApiError> {
        let secret = variables::get("jwt_secret").await.map_err(unreadable)?;
        let issuer = variables::get("jwt_issuer").await.map_err(unreadable)?;
        check_secret(&secret)?;
        Ok(Keys { secret, issuer })
    }

    /// A token for `subject`, valid for `ttl_seconds`.
    pub fn issue(&self, subject: &str, ttl_seconds: u64) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + ttl_seconds,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .map_err(|error| {
            // HS256 signing fails only on a broken serialiser: not the
            // caller's fault, and logged.
            eprintln!("signing a token: {error:?}");
            ApiError::unavailable("could not sign a token")
        })
    }

    /// The claims of a token signed with our key by our issuer, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.secret.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => {
                ApiError::unauthorized("token_expired", "the token has expired; log in again")
            }
            _ => ApiError::unauthorized("invalid_token", "the token is not valid"),
        })
    }
}

/// The caller's claims, from `Authorization: Bearer <token>`.
pub async fn authenticate(request: &Request) -> Result<Claims, ApiError> {
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        // The scheme is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(|| {
            ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>")
        })?;
    instance_keys().await?.verify(token.trim())
}

/// The keys, read from the variables once per instance: they do not change
/// while the host runs, and an instance serves a bounded number of calls,
/// so this saves three host calls on every authenticated request. A key
/// the checks refuse is not kept, so each request reports it.
async fn instance_keys() -> Result<&'static Keys, ApiError> {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    if let Some(keys) = KEYS.get() {
        return Ok(keys);
    }
    let keys = Keys::from_variables().await?;
    // Calls running at once in this instance may both read them; the first
    // stored wins and they are the same.
    Ok(KEYS.get_or_init(|| keys))
}

/// Refuses a key anyone could know or guess.
fn check_secret(secret: &str) -> Result<(), ApiError> {
    let problem = if secret.trim() == PLACEHOLDER_SECRET {
        "is the placeholder from secret.yaml"
    } else if secret.len() < MIN_SECRET_BYTES {
        "is too short"
    } else {
        return Ok(());
    };
    eprintln!("token keys: jwt_secret {problem}; nothing is signed or checked");
    Err(ApiError::misconfigured(format!(
        "the jwt_secret variable must be set to a random value of at least \
         {MIN_SECRET_BYTES} bytes"
    )))
}

/// The variables could not be read: the host's trouble, worth a retry.
fn unreadable(error: impl std::fmt::Debug) -> ApiError {
    eprintln!("token keys: {error:?}");
    ApiError::unavailable("the service is misconfigured")
}
