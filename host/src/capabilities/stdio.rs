//! `wasi:cli` stdout and stderr: what a guest prints goes, a line at a time,
//! to `<state dir>/logs/<component>_stdout.txt` (or `_stderr.txt`, the file
//! names Spin uses) and into the host's structured log under the
//! component's name, so it is found both beside the app and in the
//! platform's log pipeline.

use std::collections::HashMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::HostSettings;
use crate::manifest::App;

/// A guest line longer than this is logged in pieces.
const MAX_LINE: usize = 16 * 1024;

/// Every component's two log files, opened at start-up.
pub struct AppState {
    logs: HashMap<String, (GuestOutput, GuestOutput)>,
}

impl AppState {
    /// Opens (appending) the log files of every component.
    pub fn configure(app: &App, settings: &HostSettings) -> anyhow::Result<Self> {
        let dir = settings.state_dir.join("logs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the log folder {}", dir.display()))?;
        let mut logs = HashMap::new();
        for id in app.components.keys() {
            let open = |stream: &'static str| -> anyhow::Result<GuestOutput> {
                let path = dir.join(format!("{id}_{stream}.txt"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Ok(GuestOutput {
                    component: id.clone().into(),
                    stream,
                    file: Arc::new(Mutex::new(file)),
                })
            };
            logs.insert(id.clone(), (open("stdout")?, open("stderr")?));
        }
        Ok(Self { logs })
    }

    /// Stdout and stderr for an instance of `component`.
    pub fn streams(&self, component: &str) -> Option<(GuestOutput, GuestOutput)> {
        self.logs.get(component).cloned()
    }
}

/// One component's stdout or stderr.
#[derive(Clone)]
pub struct GuestOutput {
    component: Arc<str>,
    stream: &'static str,
    file: Arc<Mutex<std::fs::File>>,
}

impl GuestOutput {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(target: "guest", component = %self.component, stream = self.stream, "{text}");
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A full disk must not fail the guest's request; the host log has it.
        let _ = writeln!(file, "{text}");
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Cuts what a guest writes into lines; a partial line waits for the rest
/// (or a flush).
struct LineWriter {
    output: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit_pending(&mut self) {
        if !self.pending.is_empty() {
            self.output.emit(&self.pending);
            self.pending.clear();
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for chunk in bytes.split_inclusive(|byte| *byte == b'\n') {
            self.pending.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.pending.len() >= MAX_LINE {
                self.emit_pending();
            }
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit_pending();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn guest_output_lands_in_the_component_log_a_line_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hello_stdout.txt");
        let output = GuestOutput {
            component: "hello".into(),
            stream: "stdout",
            file: Arc::new(Mutex::new(std::fs::File::create(&path).expect("create"))),
        };
        let mut writer = Box::into_pin(output.async_stream());
        writer
            .write_all(b"first line\nsecond ")
            .await
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "first line\n"
        );
        writer.write_all(b"half\n").await.expect("write");
        writer.write_all(b"unterminated").await.expect("write");
        drop(writer);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "first line\nsecond half\nunterminated\n"
        );
    }
}
