//! A TCP proxy a test can cut: in front of a real server (PostgreSQL, for
//! one), it carries connections until cut, then drops the open ones and
//! refuses new ones until restored, as a network partition would look.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops when dropped.
pub struct TcpProxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    severed: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Proxies a free local port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let upstream = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(AtomicBool::new(false));
        let (severed, _) = watch::channel(0);
        let task = tokio::spawn(carry(listener, upstream, cut.clone(), severed.clone()));
        TcpProxy {
            address,
            cut,
            severed,
            task,
        }
    }

    /// `127.0.0.1:PORT`, where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every carried connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.severed.send_modify(|generation| *generation += 1);
    }

    /// Carries connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(
    listener: TcpListener,
    upstream: String,
    cut: Arc<AtomicBool>,
    severed: watch::Sender<u64>,
) {
    while let Ok((mut client, _)) = listener.accept().await {
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        let mut severed = severed.subscribe();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = severed.changed() => {}
            }
        });
    }
}
