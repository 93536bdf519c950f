//! The harness for tests that start the real `spindle` binary: it builds the
//! test guests, writes a spin.toml into a temporary directory, runs `spindle up`
//! on port 0 and waits for the printed `Serving http://…` line — never a fixed
//! sleep. The child's output is drained by background threads so it never
//! blocks on a full pipe, and is printed when a test fails.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod connections;
pub mod js;
pub mod openapi;
pub mod proxy;
pub mod python;
pub mod services;
pub mod upstream;

/// How long `spindle up` may take to print `Serving …` or to fail: it compiles
/// every component first, which is slow the first time.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How often the harness looks again at the child's output.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The workspace root: the tests are compiled as integration tests of the
/// `spindle` package, whose manifest lives in `<root>/host`.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host package lives inside the workspace")
}

/// The guest crates the tests run: every crate under `tests/guests/` and
/// `functions/` (a crate's package name is its directory name).
fn guests() -> Vec<String> {
    ["tests/guests", "functions"]
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(workspace_root().join(dir))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Builds every guest of [`guests`] for wasm32-wasip2, once per test process.
/// Panics with cargo's output if the build fails.
pub fn build_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build("wasm32-wasip2", &guests()));
}

/// Builds the guest crates `packages` for `target` in release mode; panics
/// with cargo's output if the build fails.
fn cargo_build(target: &str, packages: &[String]) {
    // `CARGO` is the cargo that runs the tests, so the guests are built by
    // the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", target])
        .arg("--target-dir")
        .arg(target_dir())
        .args(packages.iter().flat_map(|guest| ["-p", guest.as_str()]))
        .output()
        .expect("running cargo to build test guests");
    assert!(
        output.status.success(),
        "building {packages:?} for {target} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `CARGO_TARGET_DIR` (relative to the workspace root) if set, else
/// `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The built `.wasm` of a guest crate, e.g. `http-echo` →
/// `<target>/wasm32-wasip2/release/http_echo.wasm`. Builds the guests first.
pub fn guest_wasm(name: &str) -> PathBuf {
    build_guests();
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "guest {name} was built but {} is missing",
        path.display()
    );
    path
}

/// A guest crate built as a core wasm module for `target`
/// (`wasm32-wasip1` or `wasm32-unknown-unknown`), as Spin's older SDKs
/// build apps; built here if `scripts/test` has not built it already.
pub fn core_module_wasm(name: &str, target: &str) -> PathBuf {
    cargo_build(target, &[name.to_owned()]);
    target_dir()
        .join(target)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Copies the `message-handler` guest's migrations into the app at
/// `app_dir` for its component `component`, as `migrations/<component>/`.
pub fn install_message_handler_migrations(app_dir: &Path, component: &str) {
    let source = workspace_root().join("tests/guests/message-handler/migrations");
    let target = app_dir.join("migrations").join(component);
    std::fs::create_dir_all(&target).expect("create the migrations dir");
    for entry in std::fs::read_dir(&source).expect("the guest's migrations") {
        let entry = entry.expect("a migration");
        std::fs::copy(entry.path(), target.join(entry.file_name())).expect("copy a migration");
    }
}

/// A spin.toml with one HTTP trigger per `(route, component id, guest crate)`;
/// a component named twice is declared once.
pub fn http_manifest(routes: &[(&str, &str, &str)]) -> String {
    let mut manifest =
        String::from("spin_manifest_version = 2\n\n[application]\nname = \"test-app\"\n");
    for (route, component, _) in routes {
        manifest +=
            &format!("\n[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"{component}\"\n");
    }
    let mut declared = Vec::new();
    for (_, component, guest) in routes {
        if !declared.contains(component) {
            declared.push(*component);
            let source = guest_wasm(guest);
            manifest += &format!(
                "\n[component.{component}]\nsource = \"{}\"\n",
                source.display()
            );
        }
    }
    manifest
}

/// An app on disk: a fresh temporary directory holding `spin.toml`, the state
/// directory and the compile cache, all removed when the `App` is dropped.
pub struct App {
    dir: TempDir,
    /// Where compiled components are cached, when not in `dir`.
    shared_cache: Option<PathBuf>,
}

impl App {
    /// Writes `manifest` as `spin.toml` into a fresh temporary directory.
    pub fn new(manifest: &str) -> App {
        let dir = tempfile::tempdir().expect("creating a temporary app directory");
        std::fs::write(dir.path().join("spin.toml"), manifest).expect("writing spin.toml");
        App {
            dir,
            shared_cache: None,
        }
    }

    /// A fresh temporary directory with no `spin.toml` in it, for checking
    /// what happens when the manifest is missing.
    pub fn without_manifest() -> App {
        App {
            dir: tempfile::tempdir().expect("creating a temporary app directory"),
            shared_cache: None,
        }
    }

    /// The app's directory, where `spin.toml` is.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The app's `spin.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("spin.toml")
    }

    /// The compile cache every start of this app shares, so a second start
    /// can reuse what the first compiled.
    pub fn cache_dir(&self) -> PathBuf {
        self.shared_cache
            .clone()
            .unwrap_or_else(|| self.dir.path().join("cache"))
    }

    /// Keeps compiled components in `target/spindle-test-cache`, shared by
    /// every app that opts in, so that many tests of one big app compile it
    /// once (the cache is keyed by the wasm's hash and safe to share).
    pub fn with_shared_compile_cache(mut self) -> App {
        self.shared_cache = Some(workspace_root().join("target/spindle-test-cache"));
        self
    }

    /// Runs `spindle up` on this app and waits until it serves.
    pub fn start(&self) -> Spindle {
        self.start_with(&[])
    }

    /// Runs `spindle up` on this app with `extra_args` appended, and waits
    /// until it prints `Serving http://ADDR`. Panics with everything the child
    /// printed if it exits first or takes longer than [`STARTUP_DEADLINE`].
    pub fn start_with(&self, extra_args: &[&str]) -> Spindle {
        self.start_with_env(extra_args, &[])
    }

    /// Like [`App::start_with`], with extra environment variables for the host.
    pub fn start_with_env(&self, extra_args: &[&str], env: &[(&str, &str)]) -> Spindle {
        self.serve("up", extra_args, env)
    }

    /// Runs `spindle watch` on this app (its first build included) and waits
    /// until it serves, as [`App::start_with`] does.
    pub fn watch(&self) -> Spindle {
        self.serve("watch", &[], &[])
    }

    /// Runs `spindle <command>` (`up` or `watch`) and waits until it serves.
    fn serve(&self, command: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Spindle {
        let (child, stdout, stderr) = self.spawn(command, extra_args, env);
        let mut spindle = Spindle {
            child,
            base_url: String::new(),
            stdout,
            stderr,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("building the HTTP client"),
        };

        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(addr) = spindle
                .stdout
                .lines()
                .iter()
                .find_map(|line| line.strip_prefix("Serving http://").map(str::to_owned))
            {
                spindle.base_url = format!("http://{}", addr.trim());
                return spindle;
            }
            if let Some(status) = spindle.child.try_wait().expect("polling spindle") {
                spindle.stdout.wait_for_eof(Duration::from_secs(5));
                spindle.stderr.wait_for_eof(Duration::from_secs(5));
                panic!("spindle {command} exited ({status}) before serving; its output follows");
            }
            if Instant::now() > deadline {
                panic!(
                    "spindle {command} did not print `Serving http://…` within {STARTUP_DEADLINE:?}; its output follows"
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts `spindle <command> -f <dir>/spin.toml --listen 127.0.0.1:0 …`
    /// with its output drained into buffers.
    fn spawn(
        &self,
        command: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> (Child, Captured, Captured) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg(command)
            .arg("-f")
            .arg(self.manifest_path())
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(self.dir.path().join(".spin"))
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(extra_args)
            // The binary's own default log filter, whatever the caller's shell
            // says: the tests look for its info-level lines.
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting spindle");
        let stdout = Captured::drain(child.stdout.take().expect("stdout is piped"));
        let stderr = Captured::drain(child.stderr.take().expect("stderr is piped"));
        (child, stdout, stderr)
    }
}

/// A running `spindle up`. Dropping it kills the process; if the test is
/// failing, the process's stdout and stderr are printed, so the panics of its
/// methods need not repeat them.
pub struct Spindle {
    child: Child,
    /// `http://127.0.0.1:PORT`, from the `Serving` line.
    base_url: String,
    stdout: Captured,
    stderr: Captured,
    client: reqwest::Client,
}

/// What a request got back, read in full so tests can assert on plain values.
#[derive(Debug)]
pub struct Reply {
    /// The status code, e.g. `200`.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text (lossy if it is not UTF-8).
    pub body: String,
}

impl Spindle {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET base_url + path`, read in full. Panics if no response comes back.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST`s `body` to `path` on the app.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    /// Sends one request and reads the whole answer; panics (showing the
    /// host's output) if there is no answer.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Reply {
        self.send_with_headers(method, path, &[], body).await
    }

    /// Like [`Spindle::send`], with extra request headers.
    pub async fn send_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(30));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {url} failed: {err}; spindle's output follows"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_else(|err| {
            panic!("reading the body of {method} {url}: {err}; spindle's output follows")
        });
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// `http://127.0.0.1:PORT` of the operations listener (health, deploy).
    pub fn ops_url(&self) -> String {
        self.wait_for_stdout("Operations on http://", STARTUP_DEADLINE);
        let stdout = self.stdout();
        let address = stdout
            .lines()
            .find_map(|line| line.strip_prefix("Operations on http://"))
            .expect("the line was just seen");
        format!("http://{}", address.trim())
    }

    /// The process id, for sending it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process exits by itself; panics (showing its output)
    /// if it is still running after `deadline`.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling spindle") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "spindle still running after {deadline:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until `needle` has appeared `count` times in the host's log
    /// (stderr), where guest output goes too.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, deadline: Duration) {
        let until = Instant::now() + deadline;
        while self.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < until,
                "`{needle}` appeared fewer than {count} times in the log within {deadline:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The process's resident memory now (`VmRSS`), in bytes.
    pub fn resident_memory_bytes(&self) -> u64 {
        self.memory_status("VmRSS:")
    }

    /// The most resident memory the process ever had (`VmHWM`), in bytes.
    pub fn peak_resident_memory_bytes(&self) -> u64 {
        self.memory_status("VmHWM:")
    }

    fn memory_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc/<pid>/status of spindle");
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("a {field} line in /proc/<pid>/status"));
        kib * 1024
    }

    /// Everything the process printed on stderr (its logs) so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stdout contains `needle`; panics with the output otherwise.
    pub fn wait_for_stdout(&self, needle: &str, deadline: Duration) {
        if !self.stdout.wait_for(needle, deadline) {
            panic!(
                "spindle did not print {needle:?} on stdout within {deadline:?}; its output follows"
            );
        }
    }

    /// Waits until stderr contains `needle`; panics with the output otherwise.
    pub fn wait_for_stderr(&self, needle: &str, deadline: Duration) {
        if !self.stderr.wait_for(needle, deadline) {
            panic!(
                "spindle did not log {needle:?} on stderr within {deadline:?}; its output follows"
            );
        }
    }

    fn output(&self) -> String {
        format!(
            "--- spindle stdout ---\n{}--- spindle stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        // The process may already have exited; either way it is gone after this.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// Runs `spindle up` on `manifest_text` and expects it to fail at start-up;
/// see [`App::run_up_expecting_failure`].
pub fn run_up_expecting_failure(manifest_text: &str) -> (i32, String) {
    App::new(manifest_text).run_up_expecting_failure()
}

impl App {
    /// Runs `spindle up` on this app and expects it to exit non-zero by itself.
    /// Returns the exit code and stderr. Panics if it starts serving, is
    /// killed by a signal, or neither exits nor serves within
    /// [`STARTUP_DEADLINE`].
    pub fn run_up_expecting_failure(&self) -> (i32, String) {
        self.run_up_expecting_failure_with(&[])
    }

    /// Like [`App::run_up_expecting_failure`], with extra `spindle up` flags.
    pub fn run_up_expecting_failure_with(&self, extra_args: &[&str]) -> (i32, String) {
        let (mut child, stdout, stderr) = self.spawn("up", extra_args, &[]);
        let output = || {
            format!(
                "--- spindle stdout ---\n{}--- spindle stderr ---\n{}",
                stdout.text(),
                stderr.text()
            )
        };

        let deadline = Instant::now() + STARTUP_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("polling spindle") {
                break status;
            }
            if stdout.text().contains("Serving http://") || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "spindle up was expected to fail but kept running\n{}",
                    output()
                );
            }
            thread::sleep(POLL_INTERVAL);
        };
        stdout.wait_for_eof(Duration::from_secs(5));
        stderr.wait_for_eof(Duration::from_secs(5));
        let code = status
            .code()
            .unwrap_or_else(|| panic!("spindle was killed by a signal ({status})\n{}", output()));
        (code, stderr.text())
    }
}

/// One output stream of the child, drained line by line by a background
/// thread into a shared buffer.
#[derive(Clone)]
struct Captured {
    text: Arc<Mutex<String>>,
    /// Set when the stream reached its end, so the whole output can be shown
    /// after the process exits.
    eof: Arc<OnceLock<()>>,
}

impl Captured {
    fn drain(stream: impl Read + Send + 'static) -> Captured {
        let captured = Captured {
            text: Arc::default(),
            eof: Arc::default(),
        };
        let sink = captured.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            // Lines are read as bytes so that invalid UTF-8 cannot stop the drain.
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                sink.text
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
            let _ = sink.eof.set(());
        });
        captured
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// The complete lines so far.
    fn lines(&self) -> Vec<String> {
        let text = self.text();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    fn wait_for(&self, needle: &str, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_for_eof(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.eof.get().is_none() && Instant::now() < end {
            thread::sleep(POLL_INTERVAL);
        }
    }
}
