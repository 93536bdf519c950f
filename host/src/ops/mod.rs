//! The operations listener, on a port of its own so that probes and deploys
//! never queue behind application traffic: `GET /health` (liveness),
//! `GET /ready` (readiness of every dependency), `GET /metrics`
//! (Prometheus), `grpc.health.v1.Health/Check` (the same readiness for gRPC
//! tools, over h2c) and the deploy API (`PUT /components/{id}`, bearer
//! token).
//! It is served with the same connection limits as the app listener, but
//! its own connection slots, so a flood on one never starves the other.

mod deploy;
mod grpc_health;
mod ready;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::listener::{self, ConnectionLimits};
use crate::metrics;
use crate::triggers::Admissions;
pub use deploy::{Deployer, check_token};
pub use ready::Readiness;

/// What the ops routes serve from.
pub struct Ops {
    /// Hot deploys.
    pub deployer: Arc<Deployer>,
    /// The dependencies' probes.
    pub readiness: Arc<Readiness>,
    /// Per-component admission, read for the in-flight and queued gauges.
    pub admissions: Admissions,
}

/// The ops listener's routes.
pub fn router(ops: Ops) -> Router {
    let deploys = Router::new()
        .route("/components/{id}", put(deploy::deploy))
        // The handler reads the body itself, after the token check, up to
        // its own limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(ops.deployer);
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready::ready))
        .route("/grpc.health.v1.Health/Check", post(grpc_health::check))
        .with_state(ops.readiness)
        .route("/metrics", get(prometheus))
        .with_state(Arc::new(ops.admissions))
        .merge(deploys)
}

/// Serves the ops routes on `listener`, under `limits`, until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    ops: Ops,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = TowerToHyperService::new(router(ops));
    listener::serve("ops", listener, limits, |_client| service.clone(), shutdown).await
}

/// Liveness: the process is up and its runtime answers.
async fn health() -> &'static str {
    "ok"
}

/// `GET /metrics`, in the OpenMetrics text format Prometheus reads.
async fn prometheus(State(admissions): State<Arc<Admissions>>) -> impl IntoResponse {
    let metrics = metrics::metrics();
    for (component, admission) in admissions.iter() {
        let labels = metrics::component(component);
        metrics
            .in_flight
            .get_or_create(&labels)
            .set(gauge(admission.running()));
        metrics
            .queued
            .get_or_create(&labels)
            .set(gauge(admission.waiting()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
