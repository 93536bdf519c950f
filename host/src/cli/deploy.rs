//! `spindle deploy`: sends a new version of one component to a running host.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::manifest;

/// Replaces one component of a running host, without a restart.
#[derive(Args, Debug)]
pub struct DeployCommand {
    /// The component to replace.
    pub component: String,

    /// The app's manifest, where the component's wasm path is found.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    pub manifest: PathBuf,

    /// The wasm to deploy. Default: the component's `source` in the manifest.
    #[arg(long)]
    pub source: Option<PathBuf>,

    /// The host's operations listener.
    #[arg(long, default_value = "http://127.0.0.1:3001", env = "SPINDLE_OPS_URL")]
    pub ops: String,

    /// The host's deploy token.
    #[arg(long, env = "SPINDLE_DEPLOY_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl DeployCommand {
    /// Uploads the wasm and reports what the host answered.
    pub fn run(self) -> anyhow::Result<()> {
        let source = match &self.source {
            Some(source) => source.clone(),
            None => {
                let app = manifest::load(&self.manifest)?;
                let Some(component) = app.components.get(&self.component) else {
                    bail!(
                        "no component `{}` in {}",
                        self.component,
                        self.manifest.display()
                    );
                };
                component.source.clone()
            }
        };
        let wasm =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (status, body) = runtime.block_on(self.upload(wasm))?;
        if !status.is_success() {
            bail!("{} refused the deploy ({status}): {body}", self.ops);
        }
        println!("Deployed {}: {body}", self.component);
        Ok(())
    }

    async fn upload(&self, wasm: Vec<u8>) -> anyhow::Result<(http::StatusCode, String)> {
        let url = format!(
            "{}/components/{}",
            self.ops.trim_end_matches('/'),
            self.component
        );
        let request = http::Request::put(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(Full::new(bytes::Bytes::from(wasm)))
            .with_context(|| format!("building a request to {url}"))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = client
            .request(request)
            .await
            .with_context(|| format!("sending the component to {url}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the host's answer")?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
