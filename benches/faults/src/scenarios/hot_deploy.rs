//! Hot deploy under load: one component replaced twenty times, alternating
//! between two versions, through the ops API while clients loop on its
//! route. Not one request may fail, and each deploy must take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Context;
use super::crash::median;
use crate::host::Host;
use crate::report::Outcome;

const NAME: &str = "hot-deploy";
const TOKEN: &str = "fault-suite-deploy-token";
/// Clients looping on the route while the deploys happen.
const CLIENTS: usize = 4;
/// How long each version serves before the next deploy.
const DWELL: Duration = Duration::from_millis(250);
/// How soon after its deploy the new version must answer.
const TAKEOVER: Duration = Duration::from_secs(10);

/// The two versions: which guest, and how to recognise its answer.
const VERSIONS: [(&str, &str); 2] = [
    ("hello", "Hello from Spindle!"),
    ("http-echo", "\"path_and_query\""),
];

pub async fn run(context: &Context) -> anyhow::Result<Outcome> {
    let deploys = context.scale(20).max(2);
    let mut outcome = Outcome::new(NAME);
    outcome.load =
        format!("{CLIENTS} clients each sending `GET /greet` one after another for the whole run");
    outcome.faults = format!(
        "{deploys} deploys of the component `web` (`PUT /components/web` on the ops listener), \
         alternating between the hello guest and the http-echo guest, each {} ms after the \
         previous version answered",
        DWELL.as_millis()
    );

    let manifest = context.write_manifest(
        NAME,
        &format!(
            "spin_manifest_version = 2\n[application]\nname = \"hot-deploy\"\n\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\n\
             [component.web]\nsource = \"{}\"\n",
            context.guest_wasm(VERSIONS[0].0).display()
        ),
    )?;
    let mut args = context.app_args(&manifest, NAME);
    args.extend(["--deploy-token".to_string(), TOKEN.to_string()]);
    let host = Host::start(NAME, context.spindle(), &args, context.work()).await?;
    let wasm: Vec<Vec<u8>> = VERSIONS
        .iter()
        .map(|(guest, _)| std::fs::read(context.guest_wasm(guest)))
        .collect::<Result<_, _>>()?;

    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(loop_requests(format!("{}/greet", host.url()), done.clone())))
        .collect();
    let http = reqwest::Client::new();
    let (mut put, mut took, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for deploy in 1..=deploys {
        let version = deploy % VERSIONS.len();
        let started = Instant::now();
        let response = http
            .put(format!("{}/components/web", host.ops_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(wasm[version].clone())
            .send()
            .await?;
        put.push(started.elapsed());
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!(
                "deploy {deploy} refused: {status} {}",
                response.text().await?
            );
        }
        match answers_with(&http, host.url(), VERSIONS[version].1).await {
            Some(()) => took.push(started.elapsed()),
            None => late.push(deploy),
        }
        tokio::time::sleep(DWELL).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for client in clients {
        seen.add(&client.await?);
    }

    outcome.figure("deploys", deploys);
    outcome.figure("requests during the deploys", seen.requests);
    outcome.figure("failed requests", seen.failures.len());
    outcome.figure(
        "answers by version (hello / http-echo)",
        format!("{} / {}", seen.by_version[0], seen.by_version[1]),
    );
    outcome.figure(
        "`PUT /components/web` answered in, median / max",
        median_and_max(&put),
    );
    outcome.figure(
        "deploy to the new version answering, median / max",
        median_and_max(&took),
    );
    outcome.expect("no request failed", seen.failures.is_empty(), || {
        format!(
            "{} failed: {}",
            seen.failures.len(),
            seen.failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    });
    outcome.expect(
        format!("every deploy took over within {TAKEOVER:?}"),
        late.is_empty(),
        || format!("deploys {late:?} did not"),
    );
    outcome.expect(
        "no client saw a version come back after it was replaced: each saw at most one switch \
         per deploy",
        seen.most_switches <= deploys,
        || {
            format!(
                "a client saw {} switches for {deploys} deploys",
                seen.most_switches
            )
        },
    );
    outcome.expect(
        "both versions served",
        seen.by_version.iter().all(|n| *n > 0),
        || format!("by version: {:?}", seen.by_version),
    );
    host.expect_no_panic(&mut outcome);
    Ok(outcome)
}

/// `median ms / max ms` of `spans`.
fn median_and_max(spans: &[Duration]) -> String {
    let max = spans.iter().max().copied().unwrap_or_default();
    format!(
        "{:.0} ms / {:.0} ms",
        median(spans).as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    )
}

/// Polls `url/greet` until the answer contains `marker`.
async fn answers_with(http: &reqwest::Client, url: &str, marker: &str) -> Option<()> {
    let until = Instant::now() + TAKEOVER;
    while Instant::now() < until {
        if let Ok(response) = http.get(format!("{url}/greet")).send().await
            && response
                .text()
                .await
                .is_ok_and(|body| body.contains(marker))
        {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// What one client saw: the version of each answer (by index in
/// [`VERSIONS`]), and its failures.
#[derive(Default)]
struct Observed {
    versions: Vec<usize>,
    failures: Vec<String>,
}

async fn loop_requests(url: String, done: Arc<AtomicBool>) -> Observed {
    let http = reqwest::Client::new();
    let mut observed = Observed::default();
    while !done.load(Ordering::Relaxed) {
        let answer = match http.get(&url).send().await {
            Ok(response) if response.status() == 200 => {
                response.text().await.map_err(|e| e.to_string())
            }
            Ok(response) => Err(format!("status {}", response.status())),
            Err(error) => Err(error.to_string()),
        };
        match answer.map(|body| {
            VERSIONS
                .iter()
                .position(|(_, marker)| body.contains(marker))
        }) {
            Ok(Some(version)) => observed.versions.push(version),
            Ok(None) => observed
                .failures
                .push("an answer from neither version".into()),
            Err(error) => observed.failures.push(error),
        }
    }
    observed
}

/// Every client's observations together.
#[derive(Default)]
struct Seen {
    requests: usize,
    by_version: [usize; 2],
    failures: Vec<String>,
    /// The most version switches one client saw.
    most_switches: usize,
}

impl Seen {
    fn add(&mut self, observed: &Observed) {
        self.requests += observed.versions.len() + observed.failures.len();
        for version in &observed.versions {
            self.by_version[*version] += 1;
        }
        self.failures.extend(observed.failures.iter().cloned());
        let switches = observed
            .versions
            .windows(2)
            .filter(|pair| pair[0] != pair[1])
            .count();
        self.most_switches = self.most_switches.max(switches);
    }
}
