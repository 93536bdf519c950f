//! `GET /ready`: whether every dependency answers, as JSON, 503 when one
//! does not. Probes run concurrently with a short timeout, and the report is
//! reused briefly, so a probe storm costs one round of checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::health::Probe;

/// How long one probe may take before its dependency counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a report is served again before the probes run anew.
const REPORT_TTL: Duration = Duration::from_secs(1);

/// The app's dependencies and the last report on them.
pub struct Readiness {
    probes: Vec<Probe>,
    last: Mutex<Option<(Instant, Arc<Report>)>>,
}

/// The body of `GET /ready`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// When the probes ran (RFC 3339).
    timestamp: String,
    /// One entry per dependency.
    dependencies: Vec<Dependency>,
}

/// One dependency's state.
#[derive(Debug, Serialize)]
struct Dependency {
    name: String,
    kind: &'static str,
    /// `up` or `down`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    latency_ms: u64,
}

impl Readiness {
    /// Readiness over `probes`.
    pub fn new(probes: Vec<Probe>) -> Self {
        Self {
            probes,
            last: Mutex::new(None),
        }
    }

    /// The recent report, or a fresh one. Callers arriving while probes run
    /// wait for that round instead of starting their own.
    pub async fn report(&self) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < REPORT_TTL
        {
            return report.clone();
        }
        let dependencies = futures::future::join_all(self.probes.iter().map(run)).await;
        let ready = dependencies.iter().all(|d| d.status == "up");
        let report = Arc::new(Report {
            status: if ready { "ready" } else { "unavailable" },
            timestamp: chrono::Utc::now().to_rfc3339(),
            dependencies,
        });
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

impl Report {
    /// Whether `service` is serving: the whole app for `""`, else the
    /// component of that id while everything it may need is up; `None` for
    /// a name that is neither.
    pub fn serving(&self, service: &str) -> Option<bool> {
        let ready = self.status == "ready";
        if service.is_empty() {
            return Some(ready);
        }
        let component = format!("component:{service}");
        self.dependencies
            .iter()
            .find(|d| d.kind == "component" && d.name == component)
            .map(|d| ready && d.status == "up")
    }
}

async fn run(probe: &Probe) -> Dependency {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(error) = &outcome {
        tracing::warn!(dependency = %probe.name, "not ready: {error}");
    }
    Dependency {
        name: probe.name.clone(),
        kind: probe.kind,
        status: if outcome.is_ok() { "up" } else { "down" },
        error: outcome.err(),
        latency_ms,
    }
}

/// `GET /ready`.
pub async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<Arc<Report>>) {
    let report = readiness.report().await;
    let status = if report.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(name: &str, result: Result<(), &'static str>) -> Probe {
        Probe::new(name, "database", move || {
            Box::pin(async move { result.map_err(str::to_owned) })
        })
    }

    #[tokio::test]
    async fn one_failing_dependency_makes_the_app_unavailable_and_is_named() {
        let readiness = Readiness::new(vec![
            probe("database:a", Ok(())),
            probe("database:b", Err("refused")),
        ]);
        let report = readiness.report().await;
        assert_eq!(report.status, "unavailable");
        let down: Vec<_> = report
            .dependencies
            .iter()
            .filter(|d| d.status == "down")
            .collect();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].name, "database:b");
        assert_eq!(down[0].error.as_deref(), Some("refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_counts_as_down_after_the_timeout() {
        let hanging = Probe::new("bus", "bus", || Box::pin(futures::future::pending()));
        let report = Readiness::new(vec![hanging]).report().await;
        assert_eq!(report.status, "unavailable");
        assert!(
            report.dependencies[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("no answer")
        );
    }
}
