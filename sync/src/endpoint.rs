//! Building the iroh endpoint from configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use deskhand_core::{DeviceId, DeviceKey};
use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode, SecretKey};

/// Which iroh relay forwards encrypted packets when a direct path fails.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RelaySetting {
    /// No relay: direct addresses only (tests, CI, local networks).
    #[default]
    Off,
    /// n0's public relays.
    Default,
    /// A self-hosted relay.
    Url(String),
}

impl std::str::FromStr for RelaySetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "default" => Ok(Self::Default),
            url if url.starts_with("https://") || url.starts_with("http://") => {
                Ok(Self::Url(url.to_owned()))
            }
            other => Err(format!(
                "relay must be off, default or an http(s) URL, not {other:?}"
            )),
        }
    }
}

/// Network settings of a node.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Address the endpoint binds (port 0 picks one).
    pub listen: SocketAddr,
    /// Relay choice.
    pub relay: RelaySetting,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            relay: RelaySetting::Off,
        }
    }
}

/// Why the endpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Bad relay URL.
    #[error("invalid relay URL {url:?}: {reason}")]
    RelayUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Could not bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Binds an endpoint whose key is the device key. Nothing but the configured relay (if any) and
/// the peers it dials is ever contacted: no DNS or pkarr lookups, no port mapping.
pub async fn bind(
    key: &DeviceKey,
    net: &NetConfig,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    let relay_mode = match &net.relay {
        RelaySetting::Off => RelayMode::Disabled,
        RelaySetting::Default => RelayMode::Default,
        RelaySetting::Url(url) => {
            RelayMode::custom([url.parse().map_err(|e: iroh::RelayUrlParseError| {
                EndpointError::RelayUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                }
            })?])
        }
    };
    let bind_err = |reason: String| EndpointError::Bind {
        addr: net.listen,
        reason,
    };
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.secret_bytes()))
        .clear_ip_transports()
        .bind_addr(net.listen)
        .map_err(|e| bind_err(e.to_string()))?
        .relay_mode(relay_mode)
        .clear_address_lookup()
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .alpns(alpns)
        .bind()
        .await
        .map_err(|e| bind_err(e.to_string()))
}

/// The addresses a peer can dial us on. When bound to an unspecified address iroh leaves
/// loopback out, so it is added here (it is what same-machine peers and tests use).
pub fn direct_addrs(ep: &Endpoint) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in ep.bound_sockets() {
        if s.ip().is_unspecified() {
            let lo = if s.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            };
            out.push(SocketAddr::new(lo, s.port()));
        } else {
            out.push(s);
        }
    }
    for a in ep.addr().ip_addrs() {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

/// The iroh address of `peer` at `addrs`.
pub fn peer_addr(
    peer: &DeviceId,
    addrs: &[SocketAddr],
) -> Result<EndpointAddr, iroh::KeyParsingError> {
    let key = iroh::PublicKey::from_bytes(peer.as_bytes())?;
    Ok(addrs
        .iter()
        .fold(EndpointAddr::new(key), |a, s| a.with_ip_addr(*s)))
}

/// Our device id from an iroh public key.
pub fn device_id(key: &iroh::PublicKey) -> DeviceId {
    DeviceId::from_bytes(*key.as_bytes())
}
