//! The host's log and its traces.
//!
//! Logs go to stderr as text or JSON. Spans are `tracing` spans; when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is set they are also
//! exported over OTLP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//! default, or `http/json`), with the W3C trace context carried in and out
//! through `traceparent` headers on HTTP and on messages.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::bus::TRACEPARENT_HEADER;
use crate::cli::LogFormat;

/// A span for one capability call: under the running call's span, exported,
/// when traces are on; a plain debug span otherwise.
#[macro_export]
macro_rules! capability_span {
    ($call:expr, $name:literal $(, $($fields:tt)*)?) => {
        if $crate::telemetry::traces_on() {
            ::tracing::info_span!(parent: $call.id(), $name $(, $($fields)*)?)
        } else {
            ::tracing::debug_span!($name $(, $($fields)*)?)
        }
    };
}

/// Whether spans are exported; without an exporter the hot paths skip
/// making them.
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Keeps the trace exporter alive; dropping it sends what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces at exit: {error}");
        }
    }
}

/// Installs the log (stderr, `RUST_LOG` overrides the default `info`) and,
/// when the environment names an OTLP endpoint, the trace exporter.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime_wasi_http=warn,cranelift=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let provider = otlp_provider()?;
    TRACES_ON.store(provider.is_some(), Ordering::Relaxed);
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("spindle")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(traces)
        .init();
    Ok(Telemetry { provider })
}

/// The OTLP exporter the `OTEL_*` variables describe, if any.
fn otlp_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value == "true")
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|value| value == "none");
    if !configured || disabled {
        return Ok(None);
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    let protocol = match protocol.as_str() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use http/protobuf or http/json"
        ),
    };
    // The endpoint, headers and timeout come from the same variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .context("setting up the OTLP trace exporter")?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("spindle");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(provider))
}

/// Makes `span` continue the trace whose `traceparent` is among `headers`
/// (no-op without one, or when traces are off).
pub fn continue_trace<'a>(span: &tracing::Span, headers: impl Iterator<Item = (&'a str, &'a str)>) {
    let headers = HeaderPairs(headers.collect());
    if headers.get(TRACEPARENT_HEADER).is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&headers);
    let _ = span.set_parent(context);
}

/// The `traceparent` naming `span`, when traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT_HEADER)
}

struct HeaderPairs<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for HeaderPairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| *value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }
}
