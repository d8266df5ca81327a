//! Wake-up pushes that carry nothing: when an approval request is written or a task ends, every
//! paired phone that has a Web Push subscription in its own device entry
//! ([`deskhand_core::PushSubscription`], written and vetted by the phone's write rules) and is
//! not connected is sent one push whose plaintext is only [`PAYLOAD`] — "sync now". The phone
//! then syncs over iroh and builds its notification from the synced document; the push service
//! sees the endpoint, the time and the size of an encrypted record, never any text, id or count.
//!
//! The request (RFC 8030 §5): `POST` to the endpoint, body encrypted per RFC 8291 (one RFC 8188
//! `aes128gcm` record, by `web-push-native` on RustCrypto), headers `TTL`, `Urgency` (`high` for
//! an approval, `normal` for a result), `Content-Type: application/octet-stream`,
//! `Content-Encoding: aes128gcm`. No VAPID (RFC 8292) signature: UnifiedPush distributors do not
//! require one, and the crate's VAPID support pulls a large JWT library.
//!
//! Per phone: at most one push in flight and at most one per `min_interval`; events in between
//! are folded into the next push (with the highest urgency asked for). Redirects are not
//! followed. A failed push (network error, non-2xx answer) is retried with doubling backoff
//! [`RETRIES`] times; `404`/`410` means the subscription is gone: no more pushes to it until the
//! phone writes another (the phone owns its entry; the desktop never edits it). Logs name the
//! endpoint's host only: its path is a capability.
//!
//! Where a push may go is the desktop's rule, not the phone's: the endpoint is chosen by a
//! paired phone, so it must not make the desktop POST to itself or to link-local services
//! (a cloud metadata address, a router's admin page). A destination — a literal address in the
//! URL or every address its name resolves to — that is loopback, link-local, unspecified,
//! multicast or broadcast is refused ([`refused_destination`]); loopback only unless the host's
//! `push_to_loopback` allows it (a push server on the desktop itself). Addresses on the local
//! network are allowed: a self-hosted push server there is a normal setup. A refused
//! subscription is treated as gone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskhand_core::{DeviceId, PushSubscription, Workspace};
use deskhand_sync::Node;
use deskhand_sync::presence::Presence;
use tokio_util::sync::CancellationToken;

/// The whole plaintext of every push: "sync now", nothing of the request or the task.
pub const PAYLOAD: &[u8] = br#"{"v":1,"sync":true}"#;
/// `TTL` header: how long the push service keeps an undelivered push, in seconds (RFC 8030 §5.2).
pub const TTL_SECS: u64 = 3600;
/// Retries of a failed push (after the first try), with doubling backoff from [`FIRST_BACKOFF`].
pub const RETRIES: u32 = 3;
/// Wait before the first retry.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Time limit of one push request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a push is sent (RFC 8030 §5.3 `Urgency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// A task ended: `normal`.
    Normal,
    /// An approval request waits for a decision: `high`.
    High,
}

impl Urgency {
    fn header(self) -> &'static str {
        match self {
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

#[derive(Default)]
struct PhoneState {
    /// A worker for this phone is running (sending or waiting out the interval).
    in_flight: bool,
    /// What is waiting to be sent (folded events).
    pending: Option<Urgency>,
    /// When the last push was sent.
    last_sent: Option<Instant>,
    /// The subscription that answered 404/410: not used again.
    gone: Option<PushSubscription>,
}

struct Inner {
    node: Arc<Node>,
    client: reqwest::Client,
    min_interval: Duration,
    allow_loopback: bool,
    phones: Mutex<HashMap<DeviceId, PhoneState>>,
    workers: Mutex<tokio::task::JoinSet<()>>,
    cancel: CancellationToken,
}

/// Sends the wake-up pushes of one desktop. Cheap to clone; [`Pusher::shutdown`] stops it.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

/// The pusher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the push client: {0}")]
pub struct PushSetupError(String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pusher {
    /// A pusher for `node`'s paired phones, at most one push per phone per `min_interval`
    /// (the host's `push_min_interval_ms`, 10 s by default). `allow_loopback` (the host's
    /// `push_to_loopback`, off by default) lets pushes go to a server on this machine.
    pub fn new(
        node: Arc<Node>,
        min_interval: Duration,
        allow_loopback: bool,
    ) -> Result<Self, PushSetupError> {
        crate::model::sse::install_crypto();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            // No proxy: the destination rule is checked on the addresses actually dialled.
            .no_proxy()
            .dns_resolver(AllowedDestinations { allow_loopback })
            .build()
            .map_err(|e| PushSetupError(e.without_url().to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                client,
                min_interval,
                allow_loopback,
                phones: Mutex::new(HashMap::new()),
                workers: Mutex::new(tokio::task::JoinSet::new()),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Something a phone should see happened: wakes every paired, unrevoked phone that has a
    /// usable subscription and is not connected now. Returns at once; sending happens on the
    /// pusher's own tasks.
    pub fn notify(&self, urgency: Urgency) {
        if self.inner.cancel.is_cancelled() {
            return;
        }
        for peer in self.inner.node.peers() {
            if peer.record.revoked_at.is_some()
                || matches!(peer.presence, Presence::Connected { .. })
            {
                continue;
            }
            if self.inner.usable(&peer.id).is_none() {
                continue;
            }
            let mut phones = lock(&self.inner.phones);
            let st = phones.entry(peer.id).or_default();
            st.pending = st.pending.max(Some(urgency));
            if st.in_flight {
                continue;
            }
            st.in_flight = true;
            drop(phones);
            let inner = self.inner.clone();
            let id = peer.id;
            lock(&self.inner.workers).spawn(async move { inner.worker(id).await });
        }
    }

    /// Stops sending: workers are cancelled (a push under way is abandoned) and awaited.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let mut workers = std::mem::take(&mut *lock(&self.inner.workers));
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
}

impl Inner {
    /// The phone's subscription when it has a valid one that has not been found gone.
    fn usable(&self, id: &DeviceId) -> Option<PushSubscription> {
        let sub = self
            .node
            .read(|d| Workspace::push_subscription(d, id))
            .ok()
            .flatten()?;
        // The phone's write rules checked it when it arrived; checked again, as it is used.
        sub.check().ok()?;
        let phones = lock(&self.phones);
        if phones.get(id).and_then(|s| s.gone.as_ref()) == Some(&sub) {
            return None;
        }
        Some(sub)
    }

    fn connected(&self, id: &DeviceId) -> bool {
        self.node
            .peers()
            .iter()
            .any(|p| p.id == *id && matches!(p.presence, Presence::Connected { .. }))
    }

    async fn worker(self: Arc<Self>, id: DeviceId) {
        loop {
            let wait = {
                let phones = lock(&self.phones);
                phones
                    .get(&id)
                    .and_then(|s| s.last_sent)
                    .map(|t| self.min_interval.saturating_sub(t.elapsed()))
                    .unwrap_or_default()
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let urgency = {
                let mut phones = lock(&self.phones);
                let st = phones.entry(id).or_default();
                match st.pending.take() {
                    Some(u) => u,
                    None => {
                        st.in_flight = false;
                        return;
                    }
                }
            };
            // It may have connected meanwhile: it syncs by itself then.
            if self.connected(&id) {
                continue;
            }
            let Some(sub) = self.usable(&id) else {
                continue;
            };
            let outcome = self.send_with_retries(&id, &sub, urgency).await;
            let mut phones = lock(&self.phones);
            let st = phones.entry(id).or_default();
            st.last_sent = Some(Instant::now());
            if outcome == Outcome::Gone {
                st.gone = Some(sub);
                st.pending = None;
            }
        }
    }

    async fn send_with_retries(
        &self,
        id: &DeviceId,
        sub: &PushSubscription,
        urgency: Urgency,
    ) -> Outcome {
        let host = sub.endpoint_host();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::select! {
                    _ = self.cancel.cancelled() => return Outcome::Failed,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff *= 2;
            }
            match self.send(sub, urgency).await {
                Ok(status) if status.is_success() => {
                    tracing::info!(phone = %id.short(), host = %host, status = status.as_u16(), urgency = urgency.header(), "wake-up push sent");
                    return Outcome::Sent;
                }
                Ok(status) if status.as_u16() == 404 || status.as_u16() == 410 => {
                    tracing::warn!(phone = %id.short(), host = %host, status = status.as_u16(),
                        "the push subscription is gone; no more pushes to it until the phone writes a new one");
                    return Outcome::Gone;
                }
                Ok(status) => {
                    tracing::warn!(phone = %id.short(), host = %host, status = status.as_u16(), attempt, "the push service refused a wake-up push");
                }
                Err(SendError::Destination(why)) => {
                    tracing::warn!(phone = %id.short(), host = %host,
                        "not sending wake-up pushes to this phone's push endpoint: {why}");
                    return Outcome::Gone;
                }
                Err(SendError::Other(e)) => {
                    tracing::warn!(phone = %id.short(), host = %host, attempt, "a wake-up push failed: {e}");
                }
            }
        }
        Outcome::Failed
    }

    /// One POST. Errors are shown without the URL (reqwest's own text would include it).
    async fn send(
        &self,
        sub: &PushSubscription,
        urgency: Urgency,
    ) -> Result<reqwest::StatusCode, SendError> {
        let (Ok(url), Ok(ua_public), Ok(auth)) =
            (sub.endpoint_url(), sub.ua_public(), sub.auth_secret())
        else {
            return Err(SendError::Other("the subscription is not valid".into()));
        };
        // The URL parser normalised the host (`http://2130706433/` is `127.0.0.1`).
        let literal = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(why) = literal.and_then(|ip| refused_destination(ip, self.allow_loopback)) {
            return Err(SendError::Destination(why));
        }
        let ua_public = web_push_native::p256::PublicKey::from_sec1_bytes(&ua_public)
            .map_err(|_| SendError::Other("the subscription's key is not a P-256 point".into()))?;
        let auth = web_push_native::Auth::clone_from_slice(&auth);
        let body = web_push_native::encrypt(PAYLOAD.to_vec(), &ua_public, &auth)
            .map_err(|e| SendError::Other(format!("encrypting: {e}")))?;
        let response = self
            .client
            .post(url)
            .header("TTL", TTL_SECS.to_string())
            .header("Urgency", urgency.header())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::header::CONTENT_ENCODING, "aes128gcm")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // The resolver's refusal comes back as the request's source error.
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(d) = s.downcast_ref::<DestinationRefused>() {
                        return SendError::Destination(d.0.clone());
                    }
                    source = s.source();
                }
                SendError::Other(e.without_url().to_string())
            })?;
        Ok(response.status())
    }
}

/// Why one POST was not made or failed.
#[derive(Debug)]
enum SendError {
    /// The endpoint's address is one pushes are never sent to: the subscription is not used.
    Destination(String),
    /// Anything else (network, TLS, encryption): retried.
    Other(String),
}

/// Why a push is not sent to `ip`, or `None` when it may be: loopback (unless
/// `allow_loopback`), unspecified, link-local (`169.254.0.0/16`, `fe80::/10`; RFC 3927, RFC 4291
/// §2.5.6), multicast and the IPv4 broadcast address. An IPv4-mapped IPv6 address is judged as
/// the IPv4 address it carries.
pub fn refused_destination(ip: IpAddr, allow_loopback: bool) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let kind = match ip {
        _ if ip.is_loopback() && allow_loopback => return None,
        _ if ip.is_loopback() => {
            return Some(format!(
                "{ip} is this machine (set push_to_loopback = true in config.toml to allow a push server here)"
            ));
        }
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V4(v4) if v4.is_broadcast() => "broadcast",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "link-local",
        _ => return None,
    };
    Some(format!("{ip} is a {kind} address"))
}

/// The resolver's refusal: every address of the endpoint's name is refused.
#[derive(Debug)]
struct DestinationRefused(String);

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DestinationRefused {}

/// The push client's resolver: the system's, with refused destinations removed, so the rule
/// holds for the address actually dialled (no second lookup to race).
struct AllowedDestinations {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for AllowedDestinations {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let kept: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match refused_destination(a.ip(), allow_loopback) {
                    Some(w) => {
                        why.get_or_insert(w);
                        false
                    }
                    None => true,
                })
                .collect();
            match (kept.is_empty(), why) {
                (true, Some(why)) => Err(Box::new(DestinationRefused(format!(
                    "{host} resolves only to refused addresses: {why}"
                )))
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    Gone,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_says_only_sync_now() {
        let v: serde_json::Value = serde_json::from_slice(PAYLOAD).unwrap();
        assert_eq!(v, serde_json::json!({"v": 1, "sync": true}));
        assert!(Urgency::High > Urgency::Normal);
    }

    #[test]
    fn pushes_never_go_to_this_machine_or_link_local_services_unless_loopback_is_allowed() {
        let refused = |ip: &str, allow| refused_destination(ip.parse().unwrap(), allow);
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.251",
            "ff02::fb",
            "255.255.255.255",
        ] {
            assert!(refused(ip, false).is_some(), "{ip} allowed");
        }
        let why = refused("127.0.0.1", false).unwrap();
        assert!(why.contains("push_to_loopback"), "{why}");
        assert!(
            refused("169.254.169.254", false)
                .unwrap()
                .contains("link-local")
        );
        // Loopback only by the host's setting; the rest stays refused.
        assert_eq!(refused("127.0.0.1", true), None);
        assert_eq!(refused("::ffff:127.0.0.1", true), None);
        assert!(refused("169.254.169.254", true).is_some());
        // Public and local-network addresses are allowed (a self-hosted push server on the LAN).
        for ip in [
            "93.184.216.34",
            "192.168.1.20",
            "10.0.0.7",
            "2001:db8::1",
            "fd00::5",
        ] {
            assert_eq!(refused(ip, false), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_this_machine_is_refused_by_the_resolver() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match (AllowedDestinations {
            allow_loopback: false,
        })
        .resolve(name)
        .await
        {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<DestinationRefused>().is_some(), "{err}");
        assert!(
            err.to_string()
                .contains("localhost resolves only to refused addresses")
        );
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = (AllowedDestinations {
            allow_loopback: true,
        })
        .resolve(name)
        .await
        .unwrap()
        .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
