//! Spindle: a serverless WebAssembly functions platform.
//!
//! The host runs the components of a Spin app (`spin.toml`) on one wasmtime
//! [`Engine`](wasmtime::Engine) and turns outside events into calls on them.
//! A map of the crate, in the order a request meets it:
//!
//! - [`cli`]: the `spindle` subcommands (`up`, `build`), and nothing else.
//! - [`manifest`]: `spin.toml` and runtime-config parsing and validation; pure.
//! - [`engine`]: the engine, the per-instance store data, the linker, the
//!   on-disk compile cache and one `InstancePre` per component.
//! - [`componentize`]: core wasm modules made into components at load.
//! - [`capabilities`]: one module per host interface granted to guests.
//! - [`health`]: readiness probes of the app's dependencies.
//! - [`metrics`]: the Prometheus registry triggers and capabilities record into.
//! - [`telemetry`]: the host log and OTLP traces.
//! - [`platform`]: bindings of Spindle's own WIT package (`wit/`).
//! - [`bus`]: the message bus (NATS, or in-process) behind messaging,
//!   the outbox and the NATS trigger.
//! - [`triggers`]: what turns an outside event (an HTTP request, a message)
//!   into a call.
//! - [`listener`]: serving HTTP connections under limits, for the app and
//!   the ops listeners.

pub mod bus;
pub mod calls;
pub mod capabilities;
pub mod cli;
pub mod componentize;
pub mod engine;
pub mod health;
pub mod listener;
pub mod manifest;
pub mod metrics;
pub mod ops;
pub mod platform;
pub mod telemetry;
pub mod triggers;
