//! Overload: ten thousand slow requests at once against one component with
//! the default limits. The host must answer every one, each with a 200 or a
//! 503 that says when to come back, and stay within its memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

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
/// Descriptors the client needs beyond one per request: its runtime, the
/// host's log files, the sampler's reads.
const SPARE_DESCRIPTORS: u64 = 256;
/// How long the host gets to accept every connection before the requests
/// go anyway; well within its 10 s header timeout, which closes a
/// connection that sends nothing.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the host's count of connections must stay put to be all it
/// accepts for now.
const ACCEPT_SETTLED: Duration = Duration::from_millis(500);

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let requests = context.scale(10_000);
    // Short of descriptors, the client's own connections would fail and be
    // counted against the host.
    let client_limit = open_file_limit("self")?;
    if client_limit < requests as u64 + SPARE_DESCRIPTORS {
        bail!(
            "{requests} connections need {} open files and `ulimit -n` is {client_limit}: \
             raise it (ulimit -n 20000)",
            requests as u64 + SPARE_DESCRIPTORS
        );
    }
    let mut outcome = Outcome::new(NAME);
    outcome.load = format!(
        "{requests} concurrent `GET /slow` (the guest sleeps 200 ms without holding a CPU), each \
         on its own connection: all connections opened first, then every request sent at once, \
         against one component with the default `max_concurrency`"
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
    let address: SocketAddr = host
        .url()
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("the host's address in {}", host.url()))?;

    let pid = host.pid().context("the host has no process")?;
    let host_limit = open_file_limit(&pid.to_string())?;
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(host::sample_peak_rss(Some(pid), peak_kib.clone()));
    let peak_open = Arc::new(AtomicUsize::new(0));
    let counter = tokio::spawn(count_peak_descriptors(pid, peak_open.clone()));
    let started = Instant::now();
    let (gate, opened) = watch::channel(false);
    let tried = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (opened, tried, connected) = (opened.clone(), tried.clone(), connected.clone());
            tokio::spawn(slow_request(address, opened, tried, connected))
        })
        .collect();
    let accepted = await_accepted(pid, requests, &tried).await;
    let all_open = started.elapsed();
    let connected = connected.load(Ordering::Relaxed);
    gate.send_replace(true);
    let sent = Instant::now();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        *answers.entry(task.await?).or_default() += 1;
    }
    let took = sent.elapsed();
    sampler.abort();
    counter.abort();
    let peak_open = peak_open.load(Ordering::Relaxed);

    for (answer, count) in &answers {
        outcome.figure(answer.as_str(), count);
    }
    outcome.figure(
        "connections open before the first request was sent: at the client / at the host",
        format!(
            "{connected} / {accepted} (after {:.1} s)",
            all_open.as_secs_f64()
        ),
    );
    outcome.figure(
        "all answered, from the first request sent, in",
        format!("{:.1} s", took.as_secs_f64()),
    );
    let peak_mib = peak_kib.load(Ordering::Relaxed) / 1024;
    outcome.figure(
        "peak RSS of the host (sampled every 50 ms)",
        format!("{peak_mib} MiB"),
    );
    outcome.figure(
        "peak descriptors open in the host (sampled every 50 ms)",
        peak_open,
    );
    outcome.figure("open-file limit of the host (soft)", host_limit);
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
    // Past the host's listen backlog (128) the kernel answers with SYN
    // cookies: such a connection reaches the host with its first bytes.
    outcome.expect(
        "the load was concurrent: every connection was open before the first request was \
         sent, and the host held at least half of them at once",
        connected == requests && peak_open >= requests / 2,
        || format!("{connected} connected; the host had at most {peak_open} descriptors open"),
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

/// The soft `Max open files` of process `pid` (or `self`).
fn open_file_limit(pid: &str) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .with_context(|| format!("reading /proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .with_context(|| format!("no open-file limit in /proc/{pid}/limits"))?;
    let soft = line.split_whitespace().nth(3).unwrap_or_default();
    // "unlimited" cannot be set for descriptors, but reads as no limit.
    Ok(soft.parse().unwrap_or(u64::MAX))
}

/// The descriptors process `pid` has open now.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// Keeps the most descriptors process `pid` had open at once in `peak`,
/// counting every 50 ms until the task is aborted.
async fn count_peak_descriptors(pid: u32, peak: Arc<AtomicUsize>) {
    loop {
        peak.fetch_max(open_descriptors(pid), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The request every connection sends; `Connection: close`, so the answer
/// ends where the stream does.
const REQUEST: &[u8] = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Waits until all `requests` connections were tried and the host (`pid`)
/// has accepted all it will before they send anything (those past its
/// listen backlog wait in the kernel until their first bytes come), or
/// [`ACCEPT_DEADLINE`] passed; how many it holds (its descriptors, less
/// those it had before: logs, listeners).
async fn await_accepted(pid: u32, requests: usize, tried: &AtomicUsize) -> usize {
    let before = open_descriptors(pid);
    let until = Instant::now() + ACCEPT_DEADLINE;
    let (mut last, mut steady_since) = (0, Instant::now());
    loop {
        let accepted = open_descriptors(pid).saturating_sub(before);
        if accepted != last {
            (last, steady_since) = (accepted, Instant::now());
        }
        let all_tried = tried.load(Ordering::Relaxed) == requests;
        let settled = accepted >= requests || steady_since.elapsed() > ACCEPT_SETTLED;
        if (all_tried && settled) || Instant::now() > until {
            return accepted;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a connection of its own, sent once `opened` turns true;
/// its status, `503 + Retry-After`, or what went wrong.
async fn slow_request(
    address: SocketAddr,
    mut opened: watch::Receiver<bool>,
    tried: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
) -> String {
    let connected = TcpStream::connect(address).await;
    if connected.is_ok() {
        open.fetch_add(1, Ordering::Relaxed);
    }
    tried.fetch_add(1, Ordering::Relaxed);
    // The sender lives until every task is awaited.
    let _ = opened.wait_for(|opened| *opened).await;
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(error) => return format!("could not connect: {:?}", error.kind()),
    };
    match tokio::time::timeout(HANG, exchange(&mut stream)).await {
        Err(_) => format!("no answer within {HANG:?}"),
        Ok(Err(error)) => format!("connection dropped: {:?}", error.kind()),
        Ok(Ok(answer)) => classify(&answer),
    }
}

/// Sends [`REQUEST`] and reads the answer to the end of the stream.
async fn exchange(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    stream.write_all(REQUEST).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// What a whole HTTP/1.1 answer says: its status, `503 + Retry-After`, or
/// how it is broken.
fn classify(answer: &[u8]) -> String {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if answer.is_empty() {
            "closed without an answer".to_string()
        } else {
            "answer broken off in its headers".to_string()
        };
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let body = &answer[end + 4..];
    let mut lines = head.lines();
    let Some(status) = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return "not an HTTP answer".to_string();
    };
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| *value)
    };
    let complete = match (header("content-length"), header("transfer-encoding")) {
        (Some(length), _) => length.parse() == Ok(body.len()),
        (None, Some("chunked")) => body.ends_with(b"0\r\n\r\n"),
        (None, _) => true,
    };
    match (status, header("retry-after").is_some(), complete) {
        (_, _, false) => format!("{status}, body broken off"),
        (503, true, true) => "503 + Retry-After".to_string(),
        (503, false, true) => "503 without Retry-After".to_string(),
        (status, _, true) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn reads_status_retry_after_and_whole_bodies() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nslow ok";
        assert_eq!(classify(ok), "200");
        let turned_away =
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(classify(turned_away), "503 + Retry-After");
        let bare = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(classify(bare), "503 without Retry-After");
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nslow ok\r\n0\r\n\r\n";
        assert_eq!(classify(chunked), "200");
    }

    #[test]
    fn names_broken_answers() {
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nslow";
        assert_eq!(classify(short), "200, body broken off");
        let unfinished = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nslow ok\r\n";
        assert_eq!(classify(unfinished), "200, body broken off");
        assert_eq!(classify(b""), "closed without an answer");
        assert_eq!(
            classify(b"HTTP/1.1 200"),
            "answer broken off in its headers"
        );
    }
}
