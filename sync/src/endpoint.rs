//! Building the iroh endpoint from configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use deskhand_core::{DeviceId, DeviceKey};
use iroh::endpoint::presets;
use iroh::{Endpoint, EndpointAddr, NetReportConfig, RelayMode, SecretKey};
pub use iroh_mdns_address_lookup::MdnsAddressLookup;

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

impl RelaySetting {
    /// The relay URL a peer should use to reach us through this setting, before the endpoint
    /// has chosen a home relay: the configured URL, or the first of n0's public relays. `None`
    /// when off.
    pub fn fallback_url(&self) -> Option<String> {
        match self {
            Self::Off => None,
            Self::Url(u) => Some(u.clone()),
            Self::Default => RelayMode::Default
                .relay_map()
                .urls::<Vec<_>>()
                .into_iter()
                .map(|u| u.to_string())
                .min(),
        }
    }
}

/// Network settings of a node. The defaults are the offline ones tests use: loopback, a fresh
/// port, no relay, no local-network discovery.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Address the endpoint binds (port 0 picks one, or the remembered one: see `keep_port`).
    pub listen: SocketAddr,
    /// Relay choice. A phone also uses the relay its desktop named (pairing code, document).
    pub relay: RelaySetting,
    /// Local-network discovery with mDNS: a desktop announces its addresses, a phone looks its
    /// desktop up (and announces nothing).
    pub mdns: bool,
    /// When `listen`'s port is 0: bind the port this node bound the last time (remembered in its
    /// database), falling back to a fresh one if that port is taken; then remember the port
    /// bound. A desktop keeps its address across restarts this way.
    pub keep_port: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            relay: RelaySetting::Off,
            mdns: false,
            keep_port: false,
        }
    }
}

impl NetConfig {
    /// Binds `listen` (port 0: see `keep_port`).
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
    /// Sets the relay.
    pub fn with_relay(mut self, relay: RelaySetting) -> Self {
        self.relay = relay;
        self
    }
    /// Turns local-network discovery (mDNS) on or off.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }
    /// Keeps the port across restarts (see the field).
    pub fn with_keep_port(mut self, on: bool) -> Self {
        self.keep_port = on;
        self
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

/// A relay URL as iroh takes it.
pub fn relay_url(url: &str) -> Result<iroh::RelayUrl, EndpointError> {
    url.parse()
        .map_err(|e: iroh::RelayUrlParseError| EndpointError::RelayUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Binds an endpoint whose key is the device key. Nothing but the configured relay (if any),
/// the local network (mDNS, when on) and the peers it dials is ever contacted: no DNS or pkarr
/// lookups, no port mapping.
pub async fn bind(
    key: &DeviceKey,
    net: &NetConfig,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, EndpointError> {
    Ok(bind_as(key, net, alpns, true, false).await?.0)
}

/// [`bind`], saying whether this endpoint announces itself on the local network when mDNS is on
/// (a desktop does; a phone only looks its desktop up), and whether a relay can be added later
/// ([`Endpoint::insert_relay`]) when `net.relay` is off: an empty relay map then, which contacts
/// nothing until a relay is inserted (a phone pairing with a desktop that names one). A failure
/// to start mDNS (no multicast) is logged, not fatal: direct addresses and the relay still work.
/// Returns the endpoint and, when mDNS runs, a handle to it (to follow what it sees).
pub async fn bind_as(
    key: &DeviceKey,
    net: &NetConfig,
    alpns: Vec<Vec<u8>>,
    advertise: bool,
    relay_on_demand: bool,
) -> Result<(Endpoint, Option<MdnsAddressLookup>), EndpointError> {
    let relay_mode = match &net.relay {
        RelaySetting::Off if relay_on_demand => RelayMode::Custom(iroh::RelayMap::empty()),
        RelaySetting::Off => RelayMode::Disabled,
        RelaySetting::Default => RelayMode::Default,
        RelaySetting::Url(url) => RelayMode::custom([relay_url(url)?]),
    };
    let bind_err = |reason: String| EndpointError::Bind {
        addr: net.listen,
        reason,
    };
    let ep = Endpoint::builder(presets::Minimal)
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
        .map_err(|e| bind_err(e.to_string()))?;
    let mut handle = None;
    if net.mdns {
        let mdns = MdnsAddressLookup::builder()
            .advertise(advertise)
            .build(ep.id());
        match (mdns, ep.address_lookup()) {
            (Ok(mdns), Ok(services)) => {
                handle = Some(mdns.clone());
                services.add(mdns);
            }
            (Err(e), _) => tracing::warn!("local-network discovery (mDNS) is off: {e}"),
            (_, Err(e)) => tracing::warn!("local-network discovery (mDNS) is off: {e}"),
        }
    }
    Ok((ep, handle))
}

/// Adds `url` to the relays `ep` uses (an endpoint bound with a relay map, possibly empty).
pub async fn add_relay(ep: &Endpoint, url: &str) -> Result<(), EndpointError> {
    let url = relay_url(url)?;
    if !ep.addr().relay_urls().any(|u| *u == url) {
        ep.insert_relay(url.clone(), std::sync::Arc::new(url.into()))
            .await;
    }
    Ok(())
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

/// The iroh address of `peer` at `addrs`, and through `relay` when given (an unparsable relay
/// URL is left out: the direct addresses may still work).
pub fn peer_addr(
    peer: &DeviceId,
    addrs: &[SocketAddr],
    relay: Option<&str>,
) -> Result<EndpointAddr, iroh::KeyParsingError> {
    let key = iroh::PublicKey::from_bytes(peer.as_bytes())?;
    let addr = addrs
        .iter()
        .fold(EndpointAddr::new(key), |a, s| a.with_ip_addr(*s));
    Ok(match relay.and_then(|r| relay_url(r).ok()) {
        Some(url) => addr.with_relay_url(url),
        None => addr,
    })
}

/// Our device id from an iroh public key.
pub fn device_id(key: &iroh::PublicKey) -> DeviceId {
    DeviceId::from_bytes(*key.as_bytes())
}
