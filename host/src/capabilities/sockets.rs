//! `wasi:sockets`: TCP and UDP to the addresses `allowed_outbound_hosts`
//! allows, as in Spin.
//!
//! An entry allows a socket when its scheme is `*` (or `tcp` / `udp`), its
//! port matches and its host is `*`, the address, a range holding it
//! (`127.0.0.0/24`) or a name that resolves to it. A component with no
//! entries has no network at all. Sockets connect out and talk to allowed
//! peers only: nothing listens, and a bind is only the implicit one to an
//! ephemeral port. A refused address is the interface's `access-denied`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::allowed_hosts::AllowedHosts;

/// Each component's socket policy.
#[derive(Default)]
pub struct AppState {
    allowed: HashMap<String, Arc<AllowedHosts>>,
}

impl AppState {
    /// Keeps the allow-lists that open any network at all.
    pub fn configure(allowed_hosts: &crate::capabilities::allowed_hosts::ByComponent) -> Self {
        let allowed = allowed_hosts
            .iter()
            .filter(|(_, hosts)| !hosts.is_empty())
            .map(|(id, hosts)| (id.clone(), hosts.clone()))
            .collect();
        Self { allowed }
    }

    /// Opens the network of `component`'s instance as far as its entries
    /// allow; leaves it closed when it has none.
    pub fn configure_wasi(&self, component: &str, wasi: &mut WasiCtxBuilder) {
        let Some(allowed) = self.allowed.get(component).cloned() else {
            return;
        };
        wasi.allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |address, used| {
                let allowed = allowed.clone();
                Box::pin(async move { permits(&allowed, address, used).await })
            });
    }
}

/// Whether `address` may be used for `used`.
async fn permits(allowed: &AllowedHosts, address: SocketAddr, used: SocketAddrUse) -> bool {
    let scheme = match used {
        SocketAddrUse::TcpConnect => "tcp",
        SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => "udp",
        // The implicit bind of a client socket, to an ephemeral port.
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            return address.ip().is_unspecified() && address.port() == 0;
        }
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => return false,
    };
    let (ip, port) = (address.ip(), address.port());
    if allowed.allows(scheme, &ip.to_string(), Some(port)) {
        return true;
    }
    for name in allowed.names_for(scheme, port) {
        if let Ok(mut resolved) = tokio::net::lookup_host((name.as_str(), port)).await
            && resolved.any(|candidate| candidate.ip() == ip)
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).expect("valid entries")
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[tokio::test]
    async fn connects_follow_the_entries_and_nothing_listens() {
        let allowed = hosts(&[
            "*://127.0.0.1:7000",
            "*://10.1.0.0/16:*",
            "*://localhost:7100",
        ]);
        let connect = SocketAddrUse::TcpConnect;
        assert!(permits(&allowed, address("127.0.0.1:7000"), connect).await);
        assert!(!permits(&allowed, address("127.0.0.1:7001"), connect).await);
        assert!(!permits(&allowed, address("127.0.0.2:7000"), connect).await);
        assert!(permits(&allowed, address("10.1.200.3:443"), connect).await);
        assert!(permits(&allowed, address("127.0.0.1:7100"), connect).await);
        assert!(permits(&allowed, address("0.0.0.0:0"), SocketAddrUse::TcpBind).await);
        assert!(!permits(&allowed, address("0.0.0.0:8080"), SocketAddrUse::TcpBind).await);
        assert!(!permits(&allowed, address("0.0.0.0:0"), SocketAddrUse::TcpListen).await);
    }

    #[tokio::test]
    async fn an_http_only_entry_opens_no_socket() {
        let allowed = hosts(&["https://127.0.0.1:7000"]);
        assert!(
            !permits(
                &allowed,
                address("127.0.0.1:7000"),
                SocketAddrUse::TcpConnect
            )
            .await
        );
    }
}
