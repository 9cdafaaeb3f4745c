//! Networks: the default bridge, and where a container on it reaches this host.

use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};

use super::{Engine, InfraError};

impl Engine {
    /// Puts the container on the default bridge network, for a phase that may reach out
    /// (the dependency phase); [`Engine::disconnect_all`] takes it off again.
    pub async fn connect_bridge(&self, id: &str) -> Result<(), InfraError> {
        self.docker
            .connect_network(
                "bridge",
                NetworkConnectRequest {
                    container: id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| InfraError::docker("connect to network bridge", e))
    }

    /// Where a container on the default bridge reaches this host: the bridge's gateway.
    /// A daemon that has just created its bridge reports the subnet without a `Gateway`
    /// (seen on Docker 20.10 with an empty data root), so the IPAM answer is tried first,
    /// then the IPv4 address of the bridge's interface on this host (the name from the
    /// network's `com.docker.network.bridge.name`, else `docker0`). Only meaningful when
    /// the daemon runs on this host.
    pub async fn bridge_host_address(&self) -> Result<std::net::Ipv4Addr, InfraError> {
        let net = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| InfraError::docker("inspect network bridge", e))?;
        let ipam: Vec<String> = net
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .collect();
        if let Some(ip) = ipam
            .iter()
            .find_map(|g| g.parse::<std::net::Ipv4Addr>().ok())
        {
            return Ok(ip);
        }
        let iface = net
            .options
            .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
            .unwrap_or_else(|| "docker0".into());
        if let Some(ip) = interface_ipv4(&iface) {
            return Ok(ip);
        }
        Err(InfraError(format!(
            "no address for Docker's bridge: the daemon's network `bridge` names no IPv4 gateway ({}), \
             and interface {iface} has no IPv4 address on this host\n  fix: run the daemon on this host with its default bridge, \
             or give it one with `--bip` (daemon.json \"bip\")",
            if ipam.is_empty() { "none at all".to_string() } else { ipam.join(", ") }
        )))
    }

    /// Takes the container off every network, before phases that must not reach out.
    pub async fn disconnect_all(&self, id: &str) -> Result<(), InfraError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| InfraError::docker("inspect the build container", e))?;
        let nets = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for name in nets.keys().filter(|n| n.as_str() != "none") {
            self.docker
                .disconnect_network(
                    name,
                    NetworkDisconnectRequest {
                        container: id.to_string(),
                        force: Some(true),
                    },
                )
                .await
                .map_err(|e| InfraError::docker(&format!("disconnect from network {name}"), e))?;
        }
        Ok(())
    }
}

/// The first IPv4 address of network interface `name` on this host, from getifaddrs(3).
pub fn interface_ipv4(name: &str) -> Option<std::net::Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we free below with freeifaddrs;
    // every node is only read while the list is alive.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut node = head;
    while !node.is_null() && found.is_none() {
        // SAFETY: `node` is a non-null element of the list getifaddrs returned.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family we check
        // before reading it as sockaddr_in.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if ifname.to_bytes() == name.as_bytes() && family == libc::AF_INET {
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod interface_tests {
    #[test]
    fn loopback_has_its_address_and_a_missing_interface_none() {
        assert_eq!(
            super::interface_ipv4("lo"),
            Some(std::net::Ipv4Addr::LOCALHOST)
        );
        assert_eq!(super::interface_ipv4("no-such-if0"), None);
    }
}
