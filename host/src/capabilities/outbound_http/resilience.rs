//! Timeouts, retries and circuit breakers for outbound HTTP, done once in
//! the host instead of in every function.
//!
//! Each request gets the policy of its host: the most specific matching
//! `[[component.x.tool.spindle.outbound_http]]` entry, then the runtime
//! config's `[[outbound_http]]`, then the defaults, field by field. One
//! attempt has `timeout` to answer. Idempotent methods (and other requests
//! carrying an `Idempotency-Key`) are retried `retries` times on a failure or
//! a 502/503/504, with exponential backoff and full jitter, if their body
//! fits in `MAX_REPLAY_BODY` (a longer one is streamed once). A breaker per
//! component and destination opens after `breaker_failures` failures in a
//! row (or when half of the last calls failed), fails calls fast while
//! open, lets one probe through after `breaker_cooldown`, and closes when
//! the probe succeeds.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::WasiBody;

use crate::manifest::{App, OutboundPolicy, RuntimeConfig};
use crate::metrics;

/// An attempt that has not answered by then has failed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra attempts of a retryable request.
const DEFAULT_RETRIES: u32 = 2;
/// Failures in a row that open a breaker.
const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// How long an open breaker refuses calls.
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(10);
/// The first retry waits up to this; each next one up to twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The failure-rate rule looks at this many recent calls, once it has
/// seen at least `RATE_MIN_CALLS`, and opens at half of them failing.
const RATE_WINDOW: usize = 20;
const RATE_MIN_CALLS: usize = 10;

/// The settings one request goes out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Time for one attempt to answer.
    pub timeout: Duration,
    /// Extra attempts for a retryable request.
    pub retries: u32,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
}

/// The app's policies and every breaker.
pub struct Resilience {
    runtime: Vec<OutboundPolicy>,
    components: HashMap<String, Vec<OutboundPolicy>>,
    breakers: Mutex<HashMap<(String, String), Arc<Breaker>>>,
}

impl Resilience {
    /// Collects the policies of the runtime config and of each component.
    pub fn configure(app: &App, runtime_config: &RuntimeConfig) -> Self {
        Self {
            runtime: runtime_config.outbound_http.clone(),
            components: app
                .components
                .values()
                .map(|c| (c.id.clone(), c.spindle.outbound_http.clone()))
                .collect(),
            breakers: Mutex::new(HashMap::new()),
        }
    }

    /// The policy for `component` calling `host`.
    pub fn policy(&self, component: &str, host: &str) -> Policy {
        let own = self
            .components
            .get(component)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut matching: Vec<&OutboundPolicy> = own.iter().filter(|p| p.matches(host)).collect();
        matching.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        let mut shared: Vec<&OutboundPolicy> =
            self.runtime.iter().filter(|p| p.matches(host)).collect();
        shared.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        // The component's entries first, each list most specific first.
        let candidates: Vec<&OutboundPolicy> = matching.into_iter().chain(shared).collect();
        let pick =
            |field: fn(&OutboundPolicy) -> Option<u64>| candidates.iter().find_map(|p| field(p));
        Policy {
            timeout: pick(|p| p.timeout.map(duration_millis))
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            retries: pick(|p| p.retries.map(u64::from)).map_or(DEFAULT_RETRIES, saturate),
            breaker_failures: pick(|p| p.breaker_failures.map(u64::from))
                .map_or(DEFAULT_BREAKER_FAILURES, saturate),
            breaker_cooldown: pick(|p| p.breaker_cooldown.map(duration_millis))
                .map_or(DEFAULT_BREAKER_COOLDOWN, Duration::from_millis),
        }
    }

    /// The breaker of `component`'s calls to `destination` (scheme, host and
    /// port), made on first use.
    pub fn breaker(&self, component: &str, destination: &str, policy: &Policy) -> Arc<Breaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .entry((component.to_string(), destination.to_string()))
            .or_insert_with(|| Arc::new(Breaker::new(component, destination, policy)))
            .clone()
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn saturate(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Whether a request may be sent again: its method is idempotent, or it
/// carries an `Idempotency-Key`.
pub fn is_retryable(request: &Request<WasiBody>) -> bool {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent || request.headers().contains_key("idempotency-key")
}

/// Statuses worth another attempt: the upstream is briefly unable.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The gRPC status code UNAVAILABLE: the service could not take the call,
/// so the call was not processed and may be sent again.
pub const GRPC_UNAVAILABLE: u32 = 14;

/// Whether a request is a gRPC call (`content-type: application/grpc...`).
/// gRPC calls are POSTs, yet safe to send again when the answer says the
/// service never took them (UNAVAILABLE).
pub fn is_grpc(request: &Request<WasiBody>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The `grpc-status` of a trailers-only gRPC answer (carried in the
/// headers), if there is one.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether an answer is worth another attempt: a gRPC UNAVAILABLE, or
/// (without a gRPC status) one of the statuses of [`is_retryable_status`].
/// Other gRPC statuses (DEADLINE_EXCEEDED, INTERNAL, ...) are not retried:
/// the call may have run.
pub fn is_retryable_response(status: StatusCode, headers: &http::HeaderMap) -> bool {
    match grpc_status(headers) {
        Some(code) => code == GRPC_UNAVAILABLE,
        None => is_retryable_status(status),
    }
}

/// Whether an answer counts as a failure for the breaker: a 5xx, or a gRPC
/// UNAVAILABLE sent with HTTP 200.
pub fn is_failed_response(status: StatusCode, headers: &http::HeaderMap) -> bool {
    status.is_server_error() || grpc_status(headers) == Some(GRPC_UNAVAILABLE)
}

/// How long to wait before retry number `retry` (1-based): a random time up
/// to an exponentially growing cap ("full jitter").
pub fn backoff(retry: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(MAX_BACKOFF);
    let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
    cap.mul_f64(fraction)
}

/// The largest request body kept in memory so that the request can be sent
/// again. A longer body is streamed to the upstream once, and its request
/// is not retried: retries must never make the host hold a large upload.
pub const MAX_REPLAY_BODY: u64 = 1 << 20;

/// A request read for retrying: its body in memory, or the request as it
/// was (streaming) because its body is longer than `MAX_REPLAY_BODY`.
pub enum Replay {
    /// The whole body was read; the request can be sent as often as needed.
    Replayable(ReplayableRequest),
    /// The body is too long to keep; send this request once.
    Once(Request<WasiBody>),
}

/// A request whose body was read into memory, so it can be sent again.
pub struct ReplayableRequest {
    parts: http::request::Parts,
    body: Bytes,
}

impl ReplayableRequest {
    /// Reads the body of `request` up to `MAX_REPLAY_BODY` bytes. A longer
    /// one stops the reading: the request comes back as [`Replay::Once`],
    /// with the bytes already read put back in front of the rest.
    pub async fn read(request: Request<WasiBody>) -> wasmtime_wasi_http::Result<Replay> {
        let (parts, mut body) = request.into_parts();
        if body.size_hint().lower() > MAX_REPLAY_BODY {
            return Ok(Replay::Once(Request::from_parts(parts, body)));
        }
        let mut read = Vec::new();
        let mut length = 0;
        while let Some(frame) = body.frame().await {
            // Trailers are not replayed (`copy` sends data only), as before.
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            length += data.len() as u64;
            read.push(data);
            if length > MAX_REPLAY_BODY {
                let body = Rejoined {
                    read: read.into(),
                    rest: body,
                };
                return Ok(Replay::Once(Request::from_parts(
                    parts,
                    body.boxed_unsync(),
                )));
            }
        }
        let body = read.concat().into();
        Ok(Replay::Replayable(Self { parts, body }))
    }

    /// A fresh copy to send.
    pub fn copy(&self) -> Request<WasiBody> {
        let mut request = Request::new(
            Full::new(self.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        request
    }
}

/// A body whose first chunks were already read: they go out first, then
/// the rest as it comes.
struct Rejoined {
    read: VecDeque<Bytes>,
    rest: WasiBody,
}

impl Body for Rejoined {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.read.pop_front() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self.read.iter().map(|data| data.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

/// Where a breaker stands.
#[derive(Debug)]
enum State {
    /// Calls go through; recent outcomes are counted.
    Closed {
        failures_in_a_row: u32,
        recent: VecDeque<bool>,
    },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One probe is out; the others fail fast until it answers.
    HalfOpen,
}

/// A call the breaker let through; its outcome is recorded once, and a
/// probe dropped without one frees the probe.
pub struct Call<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Call<'_> {
    /// Counts the call's outcome.
    pub fn record(mut self, success: bool) {
        self.settled = true;
        self.breaker.record(success);
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.probe_abandoned();
        }
    }
}

/// Why a call was not let through.
#[derive(Debug)]
pub struct BreakerOpen {
    /// The destination whose breaker is open.
    pub destination: String,
}

/// One component's circuit breaker for one destination.
pub struct Breaker {
    component: String,
    destination: String,
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    fn new(component: &str, destination: &str, policy: &Policy) -> Self {
        let breaker = Self {
            component: component.to_string(),
            destination: destination.to_string(),
            failures_to_open: policy.breaker_failures,
            cooldown: policy.breaker_cooldown,
            state: Mutex::new(closed()),
        };
        breaker.record_state(0);
        breaker
    }

    /// `closed`, `open` or `half-open`, for spans.
    pub fn state_name(&self) -> &'static str {
        match &*self.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// Lets a call through, or refuses it while the breaker is open (and
    /// while a half-open probe is out). The call's outcome goes to
    /// [`Call::record`].
    pub fn admit(&self) -> Result<Call<'_>, BreakerOpen> {
        let mut state = self.lock();
        match &*state {
            State::Closed { .. } => Ok(Call {
                breaker: self,
                probe: false,
                settled: false,
            }),
            State::Open { until } if Instant::now() >= *until => {
                *state = State::HalfOpen;
                self.record_state(2);
                tracing::info!(component = %self.component, destination = %self.destination, "circuit half-open: one probe goes through");
                Ok(Call {
                    breaker: self,
                    probe: true,
                    settled: false,
                })
            }
            State::Open { .. } | State::HalfOpen => Err(BreakerOpen {
                destination: self.destination.clone(),
            }),
        }
    }

    /// A probe ended without an outcome (its caller went away): the next
    /// call may probe instead, so the breaker is never half-open for good.
    fn probe_abandoned(&self) {
        let mut state = self.lock();
        if let State::HalfOpen = &*state {
            *state = State::Open {
                until: Instant::now(),
            };
            self.record_state(1);
        }
    }

    /// Counts the outcome of a call that was let through.
    fn record(&self, success: bool) {
        let mut state = self.lock();
        match &mut *state {
            State::Closed {
                failures_in_a_row,
                recent,
            } => {
                *failures_in_a_row = if success { 0 } else { *failures_in_a_row + 1 };
                recent.push_back(success);
                if recent.len() > RATE_WINDOW {
                    recent.pop_front();
                }
                let failed = recent.iter().filter(|ok| !**ok).count();
                let rate_exceeded = recent.len() >= RATE_MIN_CALLS && failed * 2 >= recent.len();
                if *failures_in_a_row >= self.failures_to_open || rate_exceeded {
                    let why = if rate_exceeded {
                        format!("{failed} of the last {} calls failed", recent.len())
                    } else {
                        format!("{failures_in_a_row} failures in a row")
                    };
                    *state = self.open();
                    tracing::warn!(component = %self.component, destination = %self.destination, "circuit opened: {why}; failing calls fast for {:?}", self.cooldown);
                }
            }
            State::HalfOpen if success => {
                *state = closed();
                self.record_state(0);
                tracing::info!(component = %self.component, destination = %self.destination, "circuit closed: the probe succeeded");
            }
            State::HalfOpen => {
                *state = self.open();
                tracing::warn!(component = %self.component, destination = %self.destination, "circuit opened again: the probe failed");
            }
            // A call admitted before the breaker opened; it changes nothing.
            State::Open { .. } => {}
        }
    }

    fn open(&self) -> State {
        self.record_state(1);
        State::Open {
            until: Instant::now() + self.cooldown,
        }
    }

    /// 0 closed, 1 open, 2 half-open.
    fn record_state(&self, state: i64) {
        metrics::metrics()
            .breaker_state
            .get_or_create(&metrics::DestinationLabels {
                component: self.component.clone(),
                destination: self.destination.clone(),
            })
            .set(state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn closed() -> State {
    State::Closed {
        failures_in_a_row: 0,
        recent: VecDeque::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_headers(code: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_str(code).expect("header value"),
        );
        headers
    }

    #[test]
    fn a_grpc_unavailable_is_retried_and_fails_the_breaker() {
        let unavailable = grpc_headers("14");
        assert!(is_retryable_response(StatusCode::OK, &unavailable));
        assert!(is_failed_response(StatusCode::OK, &unavailable));
    }

    #[test]
    fn other_grpc_statuses_are_not_retried() {
        // DEADLINE_EXCEEDED, NOT_FOUND, INTERNAL: the call may have run.
        for code in ["4", "5", "13"] {
            let headers = grpc_headers(code);
            assert!(!is_retryable_response(StatusCode::OK, &headers), "{code}");
            assert!(!is_failed_response(StatusCode::OK, &headers), "{code}");
        }
        let ok = grpc_headers("0");
        assert!(!is_retryable_response(StatusCode::OK, &ok));
        assert!(!is_failed_response(StatusCode::OK, &ok));
    }

    #[test]
    fn answers_without_grpc_status_are_classified_by_http_status() {
        let none = http::HeaderMap::new();
        assert!(is_retryable_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &none
        ));
        assert!(is_failed_response(StatusCode::INTERNAL_SERVER_ERROR, &none));
        assert!(!is_retryable_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &none
        ));
        assert!(!is_failed_response(StatusCode::OK, &none));
        // A garbled grpc-status is no gRPC status.
        assert!(!is_failed_response(StatusCode::OK, &grpc_headers("x")));
    }

    fn policy(failures: u32, cooldown: Duration) -> Policy {
        Policy {
            timeout: DEFAULT_TIMEOUT,
            retries: 0,
            breaker_failures: failures,
            breaker_cooldown: cooldown,
        }
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_a_successful_probe_closes_it() {
        let breaker = Breaker::new("c", "http://test-a", &policy(3, Duration::ZERO));
        for _ in 0..2 {
            breaker.admit().expect("closed").record(false);
        }
        breaker
            .admit()
            .expect("still closed after two")
            .record(false);
        // Open with no cooldown: the next call is the probe, the one after waits for it.
        let probe = breaker.admit().expect("the probe");
        assert!(breaker.admit().is_err(), "only one probe at a time");
        probe.record(true);
        breaker.admit().expect("closed again").record(true);
    }

    #[test]
    fn a_probe_dropped_without_an_outcome_lets_the_next_call_probe() {
        let breaker = Breaker::new("c", "http://test-probe", &policy(1, Duration::ZERO));
        breaker.admit().expect("closed").record(false);
        let probe = breaker.admit().expect("the probe");
        assert!(breaker.admit().is_err(), "only one probe at a time");
        drop(probe); // the caller was cancelled mid-call
        let next = breaker.admit().expect("a new probe");
        next.record(true);
        assert_eq!(breaker.state_name(), "closed");
    }

    #[test]
    fn an_open_breaker_fails_fast_until_the_cooldown_ends() {
        let breaker = Breaker::new("c", "http://test-b", &policy(1, Duration::from_secs(60)));
        breaker.admit().expect("closed").record(false);
        assert!(breaker.admit().is_err());
    }

    #[test]
    fn half_of_the_recent_calls_failing_opens_the_breaker() {
        let breaker = Breaker::new("c", "http://test-c", &policy(100, Duration::from_secs(60)));
        for index in 0..RATE_MIN_CALLS {
            breaker.admit().expect("closed").record(index % 2 == 0);
        }
        assert!(breaker.admit().is_err());
    }

    /// A POST whose body comes in `chunks`, each of 512 KiB of one letter.
    fn post_of(chunks: &[u8]) -> Request<WasiBody> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|letter| Ok(Frame::data(Bytes::from(vec![*letter; 512 << 10]))))
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        Request::post("http://upstream.test/")
            .body(body.boxed_unsync())
            .expect("valid request")
    }

    fn letters(chunks: &[u8]) -> Vec<u8> {
        chunks
            .iter()
            .flat_map(|letter| vec![*letter; 512 << 10])
            .collect()
    }

    #[tokio::test]
    async fn a_body_within_the_replay_cap_is_kept_and_sent_whole_each_time() {
        let Replay::Replayable(request) =
            ReplayableRequest::read(post_of(b"ab")).await.expect("read")
        else {
            panic!("1 MiB fits in the replay cap");
        };
        for _ in 0..2 {
            let body = request.copy().into_body().collect().await.expect("body");
            assert_eq!(body.to_bytes(), letters(b"ab"));
        }
    }

    #[tokio::test]
    async fn a_body_over_the_replay_cap_comes_back_whole_and_in_order_to_send_once() {
        let Replay::Once(request) = ReplayableRequest::read(post_of(b"abcd"))
            .await
            .expect("read")
        else {
            panic!("2 MiB is over the replay cap");
        };
        let body = request.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), letters(b"abcd"));
    }

    #[test]
    fn backoff_stays_under_its_growing_cap() {
        for retry in 1..10 {
            let cap = BACKOFF_BASE
                .saturating_mul(1 << (retry - 1))
                .min(MAX_BACKOFF);
            assert!(backoff(retry) <= cap);
        }
    }

    #[test]
    fn the_most_specific_setting_wins_field_by_field() {
        let entry = |host: &str, timeout: Option<u64>, retries: Option<u32>| OutboundPolicy {
            host: host.into(),
            timeout: timeout.map(Duration::from_millis),
            retries,
            breaker_failures: None,
            breaker_cooldown: None,
        };
        let resilience = Resilience {
            runtime: vec![
                entry("*", Some(1000), Some(5)),
                entry("api.example.com", Some(2000), None),
            ],
            components: HashMap::from([(
                "c".to_string(),
                vec![entry("*.example.com", None, Some(1))],
            )]),
            breakers: Mutex::new(HashMap::new()),
        };
        let policy = resilience.policy("c", "api.example.com");
        assert_eq!(policy.retries, 1, "the component's entry first");
        assert_eq!(
            policy.timeout,
            Duration::from_millis(2000),
            "then the most specific shared one"
        );
        assert_eq!(policy.breaker_failures, DEFAULT_BREAKER_FAILURES);
        assert_eq!(
            resilience.policy("other", "elsewhere.org").timeout,
            Duration::from_millis(1000)
        );
    }
}
