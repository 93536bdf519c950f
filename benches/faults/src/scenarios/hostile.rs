//! Hostile guests: ten thousand requests that make a component trap, loop,
//! exhaust its memory or its stack, or that send huge or slow bodies, while
//! a well-behaved component beside it is timed. The host must not crash,
//! the well-behaved component's p99 must stay within twice its baseline, and
//! the host's memory must stay bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Context;
use crate::host::{self, Host};
use crate::report::Outcome;

const NAME: &str = "hostile-guests";
/// Hostile requests in flight at once.
const HOSTILE_CLIENTS: usize = 8;
/// Clients timing the well-behaved component, one request after another.
const TIMING_CLIENTS: usize = 2;
/// How long the well-behaved component is timed alone first.
const BASELINE: Duration = Duration::from_secs(5);
/// A body well over the host's 16 MiB default limit.
const HUGE_BODY: usize = 32 << 20;
/// The memory bound for the host, memory bombs included. An idle host holds
/// ~40 MiB; each instance of the hostile component may take 32 MiB (its
/// `memory_limit`) and 2 run at once; the pages of instances already dropped
/// stay resident until the pooling allocator's batched decommit flushes
/// (one 32 MiB bomb after another raises the RSS by 32 MiB each for 5 or 6
/// bombs before it falls back); and up to 8 bodies of at most 16 MiB are in
/// flight: ~40 + 64 + 192 + 128 = 424 MiB. Debug-build runs peaked at
/// 374–427 MiB.
const RSS_BOUND_MIB: u64 = 512;
/// A slow body: 1 KiB pieces this far apart, 3 s in all. Longer than a
/// request usually waits for a slot of the hostile component, so the guest
/// starts reading before the body is complete (a body sent in 1 s had mostly
/// arrived whole while its request waited, and tested nothing).
const DRIBBLE_PAUSE: Duration = Duration::from_millis(300);
const DRIBBLE_PIECES: usize = 10;
const HANG: Duration = Duration::from_secs(60);
/// What a client saw when the connection closed under its upload.
const UPLOAD_RESET: &str = "connection closed during the upload";

/// The kinds of hostile request, and how many of every 100 are of each kind.
const MIX: [(Kind, usize); 9] = [
    (Kind::Trap, 25),
    (Kind::StackOverflow, 20),
    (Kind::MemoryBomb, 15),
    (Kind::InfiniteLoop, 5),
    (Kind::HugeDeclaredBody, 2),
    (Kind::HugeStreamedBody, 2),
    (Kind::SlowBody, 2),
    (Kind::Slow, 4),
    (Kind::Harmless, 25),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Trap,
    StackOverflow,
    MemoryBomb,
    InfiniteLoop,
    HugeDeclaredBody,
    HugeStreamedBody,
    SlowBody,
    Slow,
    Harmless,
}

impl Kind {
    /// Whether the request's body is over the host's limit.
    fn uploads_too_much(self) -> bool {
        matches!(self, Kind::HugeDeclaredBody | Kind::HugeStreamedBody)
    }

    /// The kind of the `index`th hostile request, following [`MIX`].
    fn of(index: usize) -> Kind {
        let mut slot = index % 100;
        for (kind, share) in MIX {
            if slot < share {
                return kind;
            }
            slot -= share;
        }
        Kind::Harmless
    }
}

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let requests = context.scale(10_000);
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{requests} hostile requests, {HOSTILE_CLIENTS} at a time, of every 100: {}; beside \
         them {TIMING_CLIENTS} clients time `GET /hello/` on a well-behaved component: alone for \
         {} s, then as long beside {HOSTILE_CLIENTS} clients sending harmless requests to the \
         hostile component (the baseline), then throughout the hostile requests",
        MIX.iter()
            .map(|(kind, share)| format!("{share} {kind:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        BASELINE.as_secs()
    );
    outcome.faults = "the `limits` test guest as the hostile component (`timeout = \"500ms\"`, \
                      `memory_limit = \"32MiB\"`, `max_concurrency = 2`); the hello guest as the \
                      well-behaved one, with the defaults"
        .to_string();

    let manifest = context.write_manifest(
        NAME,
        &format!(
            "spin_manifest_version = 2\n[application]\nname = \"hostile\"\n\n\
             [[trigger.http]]\nroute = \"/hello/...\"\ncomponent = \"well\"\n\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hostile\"\n\n\
             [component.well]\nsource = \"{}\"\n\n\
             [component.hostile]\nsource = \"{}\"\n\
             [component.hostile.tool.spindle]\ntimeout = \"500ms\"\nmemory_limit = \"32MiB\"\nmax_concurrency = 2\n",
            context.guest_wasm("hello").display(),
            context.guest_wasm("limits").display()
        ),
    )?;
    let args = context.app_args(&manifest, NAME);
    let mut host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let idle_mib = host.rss_kib().unwrap_or_default() / 1024;
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(host::sample_peak_rss(host.pid(), peak_kib.clone()));

    let alone = time_well_behaved(host.url(), Phase::For(BASELINE)).await;
    // The baseline: the same number of clients on the other component, but
    // harmless, so what is compared is the hostility, not the extra load on
    // two CPUs shared with the clients.
    let (baseline, harmless) = tokio::join!(
        time_well_behaved(host.url(), Phase::For(BASELINE)),
        harmless_load(host.url(), BASELINE)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let timing = tokio::spawn(time_well_behaved(
        host.url().to_string(),
        Phase::Until(stop.clone()),
    ));
    let started = Instant::now();
    let answers = hostile_load(host.url(), requests).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = timing.await?;
    sampler.abort();

    for ((kind, answer), count) in &answers {
        outcome.figure(format!("{kind:?}: {answer}"), count);
    }
    outcome.figure(
        "hostile requests took",
        format!("{:.1} s", took.as_secs_f64()),
    );
    let (base_p99, during_p99) = (baseline.p99(), during.p99());
    outcome.figure(
        "well-behaved `GET /hello/`: requests, p50, p99 — alone",
        alone.describe(),
    );
    outcome.figure(
        format!(
            "well-behaved `GET /hello/`: requests, p50, p99 — beside {harmless} harmless \
             requests from {HOSTILE_CLIENTS} clients (the baseline)"
        ),
        baseline.describe(),
    );
    outcome.figure(
        "well-behaved `GET /hello/`: requests, p50, p99 — beside the hostile requests",
        during.describe(),
    );
    outcome.figure(
        "p99 beside the hostile requests ÷ p99 of the baseline / ÷ p99 alone",
        format!(
            "{:.2} / {:.2}",
            ratio(during_p99, base_p99),
            ratio(during_p99, alone.p99())
        ),
    );
    // A trap ends its instance, and a WASI 0.3 instance serves several
    // requests at once: those beside the trapping one fail with it.
    let collateral: usize = answers
        .iter()
        .filter(|((kind, answer), _)| {
            matches!(kind, Kind::Slow | Kind::Harmless) && answer.as_str() == "500"
        })
        .map(|(_, count)| count)
        .sum();
    outcome.figure(
        "well-behaved requests to the hostile component (`/slow`, `/`) that failed with a \
         request trapping in the instance they shared",
        collateral,
    );
    let peak_mib = peak_kib.load(Ordering::Relaxed) / 1024;
    outcome.figure(
        "RSS of the host: idle at the start / peak (sampled every 50 ms)",
        format!("{idle_mib} MiB / {peak_mib} MiB"),
    );

    let unanswered: Vec<String> = answers
        .iter()
        .filter(|((kind, answer), _)| {
            let refused_upload = kind.uploads_too_much() && answer == UPLOAD_RESET;
            !refused_upload && !answer.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .map(|((kind, answer), count)| format!("{count} × {kind:?}: {answer}"))
        .collect();
    outcome.expect(
        "every hostile request got an HTTP answer, no hang; only an upload over the body limit \
         may instead see its connection closed under it (after the host's 413)",
        unanswered.is_empty(),
        || unanswered.join(", "),
    );
    let serves = reqwest::get(format!("{}/hello/", host.url()))
        .await
        .is_ok_and(|response| response.status() == 200);
    let panics = host.host_panics();
    outcome.expect(
        "0 host crashes: the host still runs and serves, no panic in its log",
        host.is_running() && serves && panics.is_empty(),
        || {
            format!(
                "running: {}, serves: {serves}; {}",
                host.is_running(),
                panics.first().cloned().unwrap_or_else(|| host.log_tail(5))
            )
        },
    );
    outcome.expect(
        "the well-behaved component's requests all succeeded",
        alone.failures + baseline.failures + during.failures == 0,
        || {
            format!(
                "{} failed alone, {} beside the harmless load, {} beside the hostile load",
                alone.failures, baseline.failures, during.failures
            )
        },
    );
    outcome.expect(
        "the well-behaved component's p99 stayed within 2× its baseline (beside as many \
         clients sending harmless requests)",
        during_p99 <= base_p99 * 2,
        || format!("{during_p99:?} against {base_p99:?}"),
    );
    outcome.expect(
        format!(
            "the host's RSS stayed under {RSS_BOUND_MIB} MiB (idle ~40, 2 running instances × \
             32 MiB, the dropped ones whose pages wait for a batched decommit, 8 bodies of at \
             most 16 MiB)"
        ),
        peak_mib < RSS_BOUND_MIB,
        || format!("peak {peak_mib} MiB"),
    );
    Ok(outcome)
}

/// Sends harmless requests from [`HOSTILE_CLIENTS`] clients for `span`;
/// how many.
async fn harmless_load(url: &str, span: Duration) -> usize {
    let started = Instant::now();
    let clients = (0..HOSTILE_CLIENTS).map(|_| async move {
        let http = reqwest::Client::new();
        let mut sent = 0;
        while started.elapsed() < span {
            if let Ok(response) = http.get(format!("{url}/")).send().await {
                let _ = response.bytes().await;
            }
            sent += 1;
        }
        sent
    });
    futures::future::join_all(clients).await.into_iter().sum()
}

/// Sends the hostile mix; (kind, answer) → count.
async fn hostile_load(
    url: &str,
    requests: usize,
) -> anyhow::Result<BTreeMap<(Kind, String), usize>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG)
        .build()?;
    let huge = bytes::Bytes::from(vec![b'x'; HUGE_BODY]);
    let answers = futures::stream::iter(0..requests)
        .map(|index| {
            let kind = Kind::of(index);
            let request = hostile_request(&http, url, kind, &huge);
            async move { (kind, answer_of(kind, request.send().await).await) }
        })
        .buffer_unordered(HOSTILE_CLIENTS)
        .collect::<Vec<_>>()
        .await;
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(answer).or_default() += 1;
    }
    Ok(counts)
}

fn hostile_request(
    http: &reqwest::Client,
    url: &str,
    kind: Kind,
    huge: &bytes::Bytes,
) -> reqwest::RequestBuilder {
    match kind {
        Kind::Trap => http.get(format!("{url}/trap")),
        Kind::StackOverflow => http.get(format!("{url}/overflow")),
        Kind::MemoryBomb => http.get(format!("{url}/grow")),
        Kind::InfiniteLoop => http.get(format!("{url}/loop")),
        Kind::Slow => http.get(format!("{url}/slow")),
        Kind::Harmless => http.get(format!("{url}/")),
        Kind::HugeDeclaredBody => http.post(format!("{url}/consume")).body(huge.clone()),
        Kind::HugeStreamedBody => {
            // 1 MiB chunks with no length announced: only the count stops it.
            let huge = huge.clone();
            let chunks = (0..HUGE_BODY >> 20)
                .map(move |i| Ok::<_, std::io::Error>(huge.slice(i << 20..(i + 1) << 20)));
            http.post(format!("{url}/consume"))
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        }
        Kind::SlowBody => {
            let pieces = futures::stream::iter(0..DRIBBLE_PIECES).then(|_| async {
                tokio::time::sleep(DRIBBLE_PAUSE).await;
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024]))
            });
            http.post(format!("{url}/consume"))
                .body(reqwest::Body::wrap_stream(pieces))
        }
    }
}

/// The status of an answer to a `kind` request read to its end, or what
/// went wrong.
async fn answer_of(kind: Kind, sent: reqwest::Result<reqwest::Response>) -> String {
    match sent {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) => status.as_u16().to_string(),
                Err(_) => format!("{} then the body broke off", status.as_u16()),
            }
        }
        Err(error) if error.is_timeout() => format!("no answer within {HANG:?}"),
        // A host that refuses a body (413) closes the connection without
        // reading the rest; the client, still uploading, may see the reset
        // before the answer.
        Err(error) if kind.uploads_too_much() && (error.is_request() || error.is_body()) => {
            UPLOAD_RESET.to_string()
        }
        Err(error) => format!("no answer: {}", causes(&error)),
    }
}

/// `a / b`, for figures.
fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// An error and its causes on one line.
fn causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

/// How long to time the well-behaved component.
enum Phase {
    For(Duration),
    Until(Arc<AtomicBool>),
}

/// Latencies of the well-behaved component's answers.
#[derive(Default)]
struct Timings {
    latencies: Vec<Duration>,
    failures: usize,
}

impl Timings {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(index).copied().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    fn describe(&self) -> String {
        format!(
            "{}, {:.2} ms, {:.2} ms",
            self.latencies.len(),
            self.percentile(0.5).as_secs_f64() * 1000.0,
            self.p99().as_secs_f64() * 1000.0
        )
    }
}

/// Times `GET /hello/` from [`TIMING_CLIENTS`] clients during `phase`.
async fn time_well_behaved(url: impl Into<String>, phase: Phase) -> Timings {
    let url = format!("{}/hello/", url.into());
    let started = Instant::now();
    let going = |phase: &Phase| match phase {
        Phase::For(span) => started.elapsed() < *span,
        Phase::Until(stop) => !stop.load(Ordering::Relaxed),
    };
    let phase = &phase;
    let clients = (0..TIMING_CLIENTS).map(|_| {
        let url = url.clone();
        async move {
            let http = reqwest::Client::new();
            let mut timings = Timings::default();
            while going(phase) {
                let sent = Instant::now();
                let answered = match http.get(&url).send().await {
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if answered {
                    timings.latencies.push(sent.elapsed());
                } else {
                    timings.failures += 1;
                }
            }
            timings
        }
    });
    let mut all = Timings::default();
    for timings in futures::future::join_all(clients).await {
        all.latencies.extend(timings.latencies);
        all.failures += timings.failures;
    }
    all
}
