//! Overload: ten thousand slow requests at once against one component with
//! the default limits. The host must answer every one, each with a 200 or a
//! 503 that says when to come back, and stay within its memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Context;
use crate::host::{self, Host};
use crate::report::Outcome;

const NAME: &str = "overload";
/// The resident memory the host must stay under, all of this included: the
/// pooling allocator reserves address space, not memory, so the host's own
/// buffers and connections are what counts.
const RSS_BOUND_MIB: u64 = 512;
/// Longer than any answer may take.
const HANG: Duration = Duration::from_secs(120);

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let requests = context.scale(10_000);
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{requests} concurrent `GET /slow` (the guest sleeps 200 ms without holding a CPU), each \
         on its own connection, all sent at once, against one component with the default \
         `max_concurrency`"
    );
    outcome.faults = "more requests than the component may run or queue".to_string();

    let manifest = context.write_manifest(
        NAME,
        &format!(
            "spin_manifest_version = 2\n[application]\nname = \"overload\"\n\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"slow\"\n\n\
             [component.slow]\nsource = \"{}\"\n",
            context.guest_wasm("limits").display()
        ),
    )?;
    let args = context.app_args(&manifest, NAME);
    let host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let url = format!("{}/slow", host.url());

    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(host::sample_peak_rss(host.pid(), peak_kib.clone()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..requests)
        .map(|_| tokio::spawn(slow_request(url.clone())))
        .collect();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        *answers.entry(task.await?).or_default() += 1;
    }
    let took = started.elapsed();
    sampler.abort();

    for (answer, count) in &answers {
        outcome.figure(answer.as_str(), count);
    }
    outcome.figure("all answered in", format!("{:.1} s", took.as_secs_f64()));
    let peak_mib = peak_kib.load(Ordering::Relaxed) / 1024;
    outcome.figure(
        "peak RSS of the host (sampled every 50 ms)",
        format!("{peak_mib} MiB"),
    );
    let other: Vec<String> = answers
        .iter()
        .filter(|(answer, _)| !["200", "503 + Retry-After"].contains(&answer.as_str()))
        .map(|(answer, count)| format!("{count} × {answer}"))
        .collect();
    outcome.expect(
        "every request answered 200, or 503 with Retry-After: no other status, no dropped \
         connection, no hang",
        other.is_empty(),
        || other.join(", "),
    );
    outcome.expect(
        "the component served requests through the overload",
        answers.get("200").is_some_and(|served| *served > 0),
        || "no request was served".to_string(),
    );
    outcome.expect(
        format!("the host's RSS stayed under {RSS_BOUND_MIB} MiB"),
        peak_mib < RSS_BOUND_MIB,
        || format!("peak {peak_mib} MiB"),
    );
    let mut alarming = host.log_lines_containing("memory allocation");
    alarming.extend(host.log_lines_containing("Too many open files"));
    alarming.extend(host.host_panics());
    outcome.expect(
        "no allocator error, descriptor exhaustion or panic in the host's log",
        alarming.is_empty(),
        || {
            alarming
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        },
    );
    let after = reqwest::get(format!("{}/", host.url())).await?.status();
    outcome.expect("the host serves normally afterwards", after == 200, || {
        format!("GET / answered {after}")
    });
    Ok(outcome)
}

/// One request on a connection of its own: its status, `503 + Retry-After`,
/// or what went wrong.
async fn slow_request(url: String) -> String {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG)
        .pool_max_idle_per_host(0)
        .build()
    {
        Ok(client) => client,
        Err(error) => return format!("client error: {error}"),
    };
    match client.get(&url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.bytes().await;
            match (status, retry_after, body) {
                (_, _, Err(_)) => format!("{status}, body broken off"),
                (503, true, Ok(_)) => "503 + Retry-After".to_string(),
                (503, false, Ok(_)) => "503 without Retry-After".to_string(),
                (status, _, Ok(_)) => status.to_string(),
            }
        }
        Err(error) if error.is_timeout() => format!("no answer within {HANG:?}"),
        Err(error) if error.is_connect() => "connection refused".to_string(),
        Err(_) => "connection dropped".to_string(),
    }
}
