//! What each scenario did and found, and `RELIABILITY.md` made of it.

use std::fmt::Write;
use std::time::Duration;

/// One scenario's record: the load, the faults, every claim checked, the
/// figures measured and the claims that did not hold.
pub struct Outcome {
    pub name: &'static str,
    /// What the clients did, e.g. "1,000 orders from 20 users, 32 at a time".
    pub load: String,
    /// What was done to the platform, e.g. "10 × kill -9 of the host".
    pub faults: String,
    /// Every claim checked, in order.
    pub checked: Vec<String>,
    /// Measured figures, as (what, value).
    pub figures: Vec<(String, String)>,
    /// The claims that did not hold, each with what was seen instead.
    pub violations: Vec<String>,
    pub duration: Duration,
}

impl Outcome {
    /// An empty record for the scenario `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            load: String::new(),
            faults: String::new(),
            checked: Vec::new(),
            figures: Vec::new(),
            violations: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// The record of a scenario whose harness failed: that counts as a
    /// violation, since nothing was shown to hold.
    pub fn could_not_run(name: &'static str, error: &anyhow::Error) -> Self {
        let mut outcome = Self::new(name);
        outcome
            .violations
            .push(format!("the scenario could not run: {error:#}"));
        outcome
    }

    /// Records `claim`, and a violation with `seen` when it does not hold.
    pub fn expect(&mut self, claim: impl Into<String>, holds: bool, seen: impl FnOnce() -> String) {
        let claim = claim.into();
        if !holds {
            self.violations.push(format!("{claim}: {}", seen()));
        }
        self.checked.push(claim);
    }

    /// Records a measured figure.
    pub fn figure(&mut self, what: impl Into<String>, value: impl ToString) {
        self.figures.push((what.into(), value.to_string()));
    }

    /// The record with its wall-clock duration.
    pub fn took(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    pub fn held(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        let verdict = if self.held() { "held" } else { "VIOLATED" };
        format!(
            "{verdict}: {} checks, {} violations, {:.0} s",
            self.checked.len(),
            self.violations.len(),
            self.duration.as_secs_f64()
        )
    }
}

/// Every scenario's outcome, in the order run.
pub struct Report {
    quick: bool,
    outcomes: Vec<Outcome>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            outcomes: Vec::new(),
        }
    }

    pub fn add(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    pub fn all_held(&self) -> bool {
        self.outcomes.iter().all(Outcome::held)
    }

    /// The report's first line, which `benches/run` prints too.
    pub fn summary_line(&self) -> String {
        let held = self.outcomes.iter().filter(|o| o.held()).count();
        let violations: usize = self.outcomes.iter().map(|o| o.violations.len()).sum();
        let checks: usize = self.outcomes.iter().map(|o| o.checked.len()).sum();
        format!(
            "Fault suite: {held} of {} scenarios held, {checks} checks, {violations} invariant violations{}.",
            self.outcomes.len(),
            if self.quick {
                " (--quick: reduced load)"
            } else {
                ""
            }
        )
    }

    /// RELIABILITY.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Reliability\n\n{}\n", self.summary_line());
        let _ = writeln!(
            out,
            "Written by `benches/run --faults` (the fault suite in `benches/faults/`) on {}. \
             Every scenario runs the release `spindle` binary on this machine's PostgreSQL, \
             a private NATS JetStream server and Redis.\n",
            machine()
        );
        let _ = writeln!(out, "| scenario | result | checks | duration |");
        let _ = writeln!(out, "|---|---|---|---|");
        for outcome in &self.outcomes {
            let result = if outcome.held() {
                "held".to_string()
            } else {
                format!("**{} violations**", outcome.violations.len())
            };
            let _ = writeln!(
                out,
                "| [{name}](#{name}) | {result} | {} | {:.0} s |",
                outcome.checked.len(),
                outcome.duration.as_secs_f64(),
                name = outcome.name
            );
        }
        for outcome in &self.outcomes {
            section(&mut out, outcome);
        }
        out
    }
}

fn section(out: &mut String, outcome: &Outcome) {
    let _ = writeln!(out, "\n## {}\n", outcome.name);
    let _ = writeln!(out, "- **Load**: {}", outcome.load);
    let _ = writeln!(out, "- **Faults**: {}", outcome.faults);
    if !outcome.figures.is_empty() {
        let _ = writeln!(out, "\n| figure | value |\n|---|---|");
        for (what, value) in &outcome.figures {
            let _ = writeln!(out, "| {what} | {value} |");
        }
    }
    let _ = writeln!(out, "\nChecked:\n");
    for claim in &outcome.checked {
        let _ = writeln!(out, "- {claim}");
    }
    if outcome.violations.is_empty() {
        let _ = writeln!(out, "\nViolations: none.");
    } else {
        let _ = writeln!(out, "\nViolations:\n");
        for violation in &outcome.violations {
            let _ = writeln!(out, "- {violation}");
        }
    }
}

/// The date, commit and machine the run was on.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".into());
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    format!("{date}, commit {commit}, {cpus} CPUs, {memory}")
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
