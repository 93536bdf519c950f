//! The operations listener, on a port of its own so that probes and deploys
//! never queue behind application traffic: `GET /health` (liveness) and the
//! deploy API (`PUT /components/{id}`, bearer token).

mod deploy;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, put};
use tokio::net::TcpListener;

pub use deploy::Deployer;

/// The ops listener's routes.
pub fn router(deployer: Arc<Deployer>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/components/{id}", put(deploy::deploy))
        .layer(axum::extract::DefaultBodyLimit::max(
            deploy::MAX_COMPONENT_BYTES,
        ))
        .with_state(deployer)
}

/// Serves the ops routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    deployer: Arc<Deployer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(deployer))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Liveness: the process is up and its runtime answers.
async fn health() -> &'static str {
    "ok"
}
