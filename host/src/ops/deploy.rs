//! Hot deploy: a new version of one component, compiled and checked against
//! its imports and its trigger before it is swapped in. Calls already running
//! finish on the old version; a version that fails any check changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::engine::{CompileCache, InstanceState, LoadedComponent};
use crate::manifest;
use crate::triggers::http::HttpTrigger;
use crate::triggers::nats::NatsTrigger;
use crate::triggers::redis::RedisTrigger;

/// The largest component a deploy accepts.
pub const MAX_COMPONENT_BYTES: usize = 256 << 20;

/// The deploy token the shipped Kubernetes Secret holds until an operator
/// replaces it: a value anyone can read is no credential.
pub const PLACEHOLDER_TOKEN: &str = "replace-with-a-random-token";

/// Refuses a configured deploy token that would not protect the deploy API:
/// empty (it would match a request carrying none) or the shipped placeholder.
pub fn check_token(token: Option<&str>) -> anyhow::Result<()> {
    match token {
        Some(token) if token.trim().is_empty() => anyhow::bail!(
            "SPINDLE_DEPLOY_TOKEN / --deploy-token is set but empty: set a random \
             token (e.g. `openssl rand -hex 32`) or unset it to disable deploys"
        ),
        Some(PLACEHOLDER_TOKEN) => anyhow::bail!(
            "SPINDLE_DEPLOY_TOKEN is the placeholder from the example Secret: \
             replace it with a random token (e.g. `openssl rand -hex 32`)"
        ),
        _ => Ok(()),
    }
}

/// What a deploy needs: the engine and linker the app was loaded with, and
/// the triggers whose components it replaces.
pub struct Deployer {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: CompileCache,
    http: Arc<HttpTrigger>,
    nats: Arc<NatsTrigger>,
    redis: Arc<RedisTrigger>,
    components: HashMap<String, manifest::Component>,
    /// Deploys are refused unless a token is configured.
    token: Option<String>,
}

impl Deployer {
    /// A deployer for the running app's `components`.
    pub fn new(
        engine: Engine,
        linker: Linker<InstanceState>,
        cache: CompileCache,
        (http, nats, redis): (Arc<HttpTrigger>, Arc<NatsTrigger>, Arc<RedisTrigger>),
        components: impl IntoIterator<Item = manifest::Component>,
        token: Option<String>,
    ) -> Self {
        Self {
            engine,
            linker,
            cache,
            http,
            nats,
            redis,
            components: components.into_iter().map(|c| (c.id.clone(), c)).collect(),
            token,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        presented.as_bytes().ct_eq(expected.as_bytes()).into()
    }

    /// Compiles, links and swaps in `wasm` as the new `id`. It compiles on
    /// the calling thread: call it off the async workers.
    pub fn deploy(&self, id: &str, wasm: &[u8]) -> Result<Deployed, DeployError> {
        let Some(component) = self.components.get(id) else {
            return Err(DeployError::UnknownComponent(id.to_string()));
        };
        let (http, nats, redis) = (
            self.http.serves(id),
            self.nats.serves(id),
            self.redis.serves(id),
        );
        if !http && !nats && !redis {
            return Err(DeployError::UnknownComponent(id.to_string()));
        }
        let invalid = |error: anyhow::Error| DeployError::Invalid(format!("{error:#}"));
        let loaded =
            LoadedComponent::from_wasm(&self.engine, &self.linker, &self.cache, component, wasm)
                .map_err(invalid)?;
        // Every check passes before anything is swapped.
        if nats {
            self.nats.check(&loaded).map_err(invalid)?;
        }
        if redis {
            self.redis.check(&loaded).map_err(invalid)?;
        }
        if http {
            self.http.replace(&loaded).map_err(invalid)?;
        }
        if nats {
            self.nats.replace(&loaded).map_err(invalid)?;
        }
        if redis {
            self.redis.replace(&loaded).map_err(invalid)?;
        }
        let digest: String = Sha256::digest(wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::info!(component = %id, sha256 = %digest, "deployed a new version");
        Ok(Deployed {
            component: id.to_string(),
            sha256: digest,
        })
    }
}

/// The answer to a successful deploy.
#[derive(Debug, Serialize)]
pub struct Deployed {
    /// The component replaced.
    component: String,
    /// The new version's content hash.
    sha256: String,
}

/// What a refused deploy tells its client.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No or wrong bearer token (or none configured on the host).
    #[error("a valid bearer token is required (the host's SPINDLE_DEPLOY_TOKEN)")]
    Unauthorized,
    /// The body is larger than [`MAX_COMPONENT_BYTES`] or was cut off.
    #[error("the component must be a complete body of at most {} MiB", MAX_COMPONENT_BYTES >> 20)]
    BadBody,
    /// The app has no such component on this host.
    #[error("no component `{0}` runs on this host")]
    UnknownComponent(String),
    /// The wasm is not a component, imports what the host does not provide,
    /// or does not export what its trigger calls.
    #[error("{0}")]
    Invalid(String),
    /// The deploy task itself failed; the detail is in the host's log.
    #[error("internal error")]
    Internal,
}

impl IntoResponse for DeployError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadBody => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownComponent(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// `PUT /components/{id}` with the wasm as the body.
pub async fn deploy(
    State(deployer): State<Arc<Deployer>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Deployed>, DeployError> {
    // The token is checked first: an unauthenticated client must not make
    // the host read (and hold) up to MAX_COMPONENT_BYTES.
    if !deployer.authorized(&headers) {
        return Err(DeployError::Unauthorized);
    }
    let wasm = axum::body::to_bytes(body, MAX_COMPONENT_BYTES)
        .await
        .map_err(|error| {
            tracing::warn!(component = %id, "deploy body refused: {error}");
            DeployError::BadBody
        })?;
    // Compiling takes a core for a while: keep it off the async workers.
    let task = tokio::task::spawn_blocking(move || deployer.deploy(&id, &wasm));
    match task.await {
        Ok(result) => result.map(Json),
        Err(error) => {
            tracing::error!("deploy task failed: {error}");
            Err(DeployError::Internal)
        }
    }
}
