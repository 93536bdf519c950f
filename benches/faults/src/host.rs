//! A `spindle up` process: started, killed (SIGKILL, as a crash would) and
//! started again with the same arguments, its output kept in files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long `spindle up` may take to print where it serves.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// A running (or killed) `spindle up`.
pub struct Host {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` of the app listener, once serving.
    url: String,
    /// The same for the ops listener (`/health`, `/ready`, `/metrics`).
    ops_url: String,
    /// How many times this host has been started.
    starts: usize,
}

impl Host {
    /// Starts `binary up ARGS… --listen 127.0.0.1:0 --ops-listen 127.0.0.1:0`
    /// and waits until it serves; `name` names its log files in `logs`.
    pub async fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        logs: &Path,
    ) -> anyhow::Result<Host> {
        let mut host = Host {
            name: name.to_string(),
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            logs: logs.to_path_buf(),
            child: None,
            url: String::new(),
            ops_url: String::new(),
            starts: 0,
        };
        host.launch().await?;
        Ok(host)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn ops_url(&self) -> &str {
        &self.ops_url
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The resident set of the process now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(self.pid()?)
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// How the process ended, if it did on its own.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts it again with the same arguments. The
    /// ports change: the clients follow [`Host::url`].
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Starts it again after [`Host::kill`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.launch().await
    }

    /// `GET /ready` on the ops listener: its status and the names of the
    /// dependencies it reports down. A host that does not answer is `None`.
    pub async fn readiness(&self) -> Option<(u16, Vec<String>)> {
        let response = reqwest::Client::new()
            .get(format!("{}/ready", self.ops_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let report: serde_json::Value = response.json().await.ok()?;
        let down = report["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|dependency| dependency["status"] == "down")
            .filter_map(|dependency| dependency["name"].as_str().map(str::to_string))
            .collect();
        Some((status, down))
    }

    /// Polls `/ready` until `wanted` holds of (status, dependencies down);
    /// how long that took, or `None` if it did not within `deadline`.
    pub async fn await_readiness(
        &self,
        wanted: impl Fn(u16, &[String]) -> bool,
        deadline: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some((status, down)) = self.readiness().await
                && wanted(status, &down)
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Panics of the host itself in its log, every start's; a guest's own
    /// panic output (`guest:` lines) is not one.
    pub fn host_panics(&self) -> Vec<String> {
        let mut panics = self.log_lines_containing("panicked at");
        panics.retain(|line| !line.contains(" guest: "));
        panics
    }

    /// Records, into `outcome`, that the host's log holds no panic.
    pub fn expect_no_panic(&self, outcome: &mut crate::report::Outcome) {
        let panics = self.host_panics();
        outcome.expect("no panic in the host's log", panics.is_empty(), || {
            panics.join(" | ")
        });
    }

    /// The last `lines` lines of every start's stderr, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of the stderr of every start so far that contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.stderr_path())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }

    fn stderr_path(&self) -> PathBuf {
        self.logs.join(format!("{}.err", self.name))
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let stdout_path = self.logs.join(format!("{}.{}.out", self.name, self.starts));
        let stdout = std::fs::File::create(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        // All starts append to one stderr log, so a scenario can look for
        // panics across restarts.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .with_context(|| format!("opening {}", self.stderr_path().display()))?;
        let child = Command::new(&self.binary)
            .arg("up")
            .args(&self.args)
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            let printed = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            let url = address_after(&printed, "Serving ");
            let ops_url = address_after(&printed, "Operations on ");
            if let (Some(url), Some(ops_url)) = (url, ops_url) {
                self.url = url;
                self.ops_url = ops_url;
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                bail!(
                    "{} exited before serving ({status}):\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{} not serving after {STARTUP_DEADLINE:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The resident set of process `pid`, in KiB.
fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Keeps the highest RSS of process `pid` seen in `peak_kib`, sampling every
/// 50 ms until the task is aborted.
pub async fn sample_peak_rss(
    pid: Option<u32>,
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let Some(pid) = pid else { return };
    loop {
        if let Some(kib) = rss_kib_of(pid) {
            peak_kib.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `http://…` that follows `prefix` at the start of a line of `printed`.
fn address_after(printed: &str, prefix: &str) -> Option<String> {
    printed.lines().find_map(|line| {
        let url = line.strip_prefix(prefix)?.split_whitespace().next()?;
        url.starts_with("http://").then(|| url.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::address_after;

    #[test]
    fn finds_the_addresses_spindle_prints() {
        let printed = "Serving http://127.0.0.1:4321\n  /hello -> hello\nOperations on http://127.0.0.1:4322\n";
        assert_eq!(
            address_after(printed, "Serving ").as_deref(),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(
            address_after(printed, "Operations on ").as_deref(),
            Some("http://127.0.0.1:4322")
        );
        assert_eq!(address_after("Serving soon\n", "Serving "), None);
    }
}
