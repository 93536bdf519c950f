//! The hello function as a native axum server, for `benches/run`: the same
//! route and the same body as `functions/hello`, with no WebAssembly in the
//! way, so that its requests/s are the ceiling Spindle is compared with.
//!
//! `native-hello [ADDR]` (default `127.0.0.1:0`) prints `Serving http://ADDR`
//! once it listens, like `spindle up`, and stops on Ctrl-C or SIGTERM.

use anyhow::Context;
use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use tokio::net::TcpListener;

/// The hello function's route table: `/hello/...` like `spin.toml`'s route.
fn app() -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/hello/{*rest}", get(hello))
}

/// The body `functions/hello` answers with.
async fn hello(uri: Uri) -> String {
    format!("Hello from Spindle! You asked for {}\n", uri.path())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    println!("Serving http://{}", listener.local_addr()?);
    axum::serve(listener, app())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler at start-up");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}
