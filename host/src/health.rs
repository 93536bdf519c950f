//! Readiness probes: one per dependency the app needs to serve (a managed
//! database, a key-value backend, the message bus, a component). Each
//! capability says how to check its own backends; the ops listener runs
//! them for `GET /ready`.

use std::sync::Arc;

use futures::future::BoxFuture;

/// How a probe checks its dependency.
type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One dependency and how to tell whether it answers.
#[derive(Clone)]
pub struct Probe {
    /// What is checked, e.g. `database:orders` or `bus`.
    pub name: String,
    /// The kind of dependency: `database`, `key-value`, `bus`, `component`.
    pub kind: &'static str,
    check: Check,
}

impl Probe {
    /// A probe that runs `check` each time it is asked.
    pub fn new(
        name: impl Into<String>,
        kind: &'static str,
        check: impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            check: Arc::new(check),
        }
    }

    /// Checks the dependency once; the error says what failed.
    pub fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        (self.check)()
    }
}
