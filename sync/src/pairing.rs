//! Pairing over `deskhand/pair/1`: the desktop's one-time codes and the phone's side.
//!
//! One request and one answer, each a `u32be` length and a JSON body (at most 4 KiB):
//! request `{"v":1,"token":hex,"name":…,"platform":…}`; answer
//! `{"ok":true,"doc_id":…,"desktop_name":…,"now_ms":…}` or `{"ok":false,"code":…,"error":…,"now_ms":…}`
//! (`now_ms`: the desktop's wall clock, Unix ms; absent from older desktops).
//!
//! Only the desktop's clock decides whether a code has expired: the phone never refuses a code
//! on its own clock, which may be wrong.
//! QUIC-TLS has already proved both keys; the token proves the phone saw the QR code.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskhand_core::pairing::{
    MAX_PAIR_MESSAGE, PairAnswer, PairRequest, ReadPairAnswer, ReadPairRequest, ct_eq,
};
use deskhand_core::{DeviceId, PAIR_ALPN, PairingPayload, PairingToken};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::endpoint::device_id;
use crate::gate::PeerGate;
use crate::presence::now_unix_ms;
use crate::store::{Store, WriteOp};

const MAX_MESSAGE: usize = MAX_PAIR_MESSAGE;
/// Failed attempts one source may make per window; past that its failures are answered
/// `rate_limited` and are no longer logged and audited one by one. A valid code is accepted from
/// any source at any time: it is 128 random bits, so guessing is not the threat, and a limit that
/// could refuse it would let anyone who knows the address keep pairing shut.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources the limiter remembers at most (each with at most [`MAX_FAILURES`] instants).
const MAX_SOURCES: usize = 4096;

/// Why pairing failed, as the phone's user is told.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairError {
    /// The desktop refused the code.
    #[error("the desktop refused pairing: {message}")]
    Refused {
        /// Machine-readable code: `unknown`, `used`, `expired`, `rate_limited`, `bad_request`.
        code: String,
        /// What the desktop said.
        message: String,
    },
    /// The desktop could not be reached.
    #[error("cannot reach the desktop at {addrs}: {reason}")]
    Unreachable {
        /// Addresses tried.
        addrs: String,
        /// Why.
        reason: String,
    },
    /// This phone already has another home desktop.
    #[error("this phone is already paired with {name} ({id}); forget it first")]
    AlreadyPaired {
        /// Its name.
        name: String,
        /// Its id (short).
        id: String,
    },
    /// Local storage failed.
    #[error("{0}")]
    Storage(String),
    /// Only a phone pairs with a desktop.
    #[error("only a phone can pair with a desktop")]
    WrongRole,
}

/// What a successful pairing tells the phone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Paired {
    /// The workspace document id, when the desktop has one.
    pub doc_id: Option<deskhand_core::DocId>,
    /// The desktop's wall clock when it answered (Unix ms), when it said.
    pub desktop_clock_ms: Option<i64>,
}

/// A stored pairing code (only the hash of its token is kept).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    #[serde(default)]
    pub(crate) used_at: Option<i64>,
    #[serde(default)]
    pub(crate) used_by: Option<String>,
}

/// Where a pairing attempt came from: the endpoint id its connection proved, and the IP address
/// it came from (IPv6 by its /64 prefix, which one host or one LAN usually holds whole).
/// Endpoint ids cost nothing to make, so a stranger is also known by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The remote endpoint id.
    Endpoint(DeviceId),
    /// The remote IP address (IPv6: the /64 prefix; IPv4-mapped IPv6 as IPv4).
    Ip(IpAddr),
}

impl Source {
    pub(crate) fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Ip(IpAddr::V4(v4)),
                None => Self::Ip(IpAddr::V6(std::net::Ipv6Addr::from_bits(
                    v6.to_bits() & !((1u128 << 64) - 1),
                ))),
            },
        }
    }
}

/// The sources of the attempt on `conn`: its endpoint id and every IP address it has a path from.
fn sources_of(conn: &Connection, phone: DeviceId) -> Vec<Source> {
    let mut out = vec![Source::Endpoint(phone)];
    for path in conn.paths().iter() {
        if let iroh::TransportAddr::Ip(addr) = path.remote_addr() {
            let s = Source::ip(addr.ip());
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Failed pairing attempts per [`Source`], in a sliding window; bounded in memory.
#[derive(Default)]
pub(crate) struct Limiter {
    failures: HashMap<Source, VecDeque<Instant>>,
}

impl Limiter {
    fn prune(list: &mut VecDeque<Instant>, now: Instant) {
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            list.pop_front();
        }
    }

    /// How long until the most limited of `sources` may fail again, if any of them is over the
    /// limit now.
    fn limited(&mut self, sources: &[Source], now: Instant) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for s in sources {
            let Some(list) = self.failures.get_mut(s) else {
                continue;
            };
            Self::prune(list, now);
            if list.len() >= MAX_FAILURES
                && let Some(oldest) = list.front()
            {
                let w = FAILURE_WINDOW.saturating_sub(now.duration_since(*oldest));
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        wait
    }

    /// Counts a failure against every one of `sources` (each keeps its latest
    /// [`MAX_FAILURES`]), forgetting the stalest sources when the table is full.
    fn record(&mut self, sources: &[Source], now: Instant) {
        for s in sources {
            if !self.failures.contains_key(s) && self.failures.len() >= MAX_SOURCES {
                self.failures.retain(|_, l| {
                    Self::prune(l, now);
                    !l.is_empty()
                });
                if self.failures.len() >= MAX_SOURCES
                    && let Some(stalest) = self
                        .failures
                        .iter()
                        .min_by_key(|(_, l)| l.back().copied())
                        .map(|(k, _)| *k)
                {
                    self.failures.remove(&stalest);
                }
            }
            let list = self.failures.entry(*s).or_default();
            Self::prune(list, now);
            if list.len() >= MAX_FAILURES {
                list.pop_front();
            }
            list.push_back(now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.len()
    }
}

/// Why a presented code was refused, and whether to log and audit it (a source over its limit
/// is answered without either, so a stranger cannot flood the audit log).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) audit: bool,
}

/// The desktop's pairing codes and its attempt limiter.
#[derive(Default)]
pub(crate) struct Codes {
    pub(crate) tokens: HashMap<[u8; 32], TokenRecord>,
    limiter: Limiter,
}

fn token_hash(token: &PairingToken) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Codes {
    pub(crate) fn load(rows: &[(String, Vec<u8>)]) -> Self {
        let mut tokens = HashMap::new();
        for (k, v) in rows {
            let mut h = [0u8; 32];
            if hex::decode_to_slice(k, &mut h).is_ok()
                && let Ok(r) = serde_json::from_slice::<TokenRecord>(v)
            {
                tokens.insert(h, r);
            }
        }
        Self {
            tokens,
            limiter: Limiter::default(),
        }
    }

    /// Checks a presented token (`None`: not a token at all) from `sources`; on success marks
    /// it used and returns the record to persist. A valid, unused, unexpired code succeeds
    /// whatever the limiter says; a failure counts against each of `sources`.
    pub(crate) fn redeem(
        &mut self,
        token: Option<&PairingToken>,
        phone: &DeviceId,
        sources: &[Source],
        now_ms: i64,
        now: Instant,
    ) -> Result<([u8; 32], TokenRecord), Refused> {
        let expired;
        let failure = match token {
            None => ("unknown", "this pairing code is not valid for this desktop"),
            Some(token) => {
                let presented = token_hash(token);
                // Compare every stored hash in constant time; no early exit on a match.
                let mut found = None;
                for h in self.tokens.keys() {
                    if ct_eq(h, &presented) {
                        found = Some(*h);
                    }
                }
                match found.and_then(|h| self.tokens.get_mut(&h).map(|r| (h, r))) {
                    None => ("unknown", "this pairing code is not valid for this desktop"),
                    Some((_, r)) if r.used_at.is_some() => (
                        "used",
                        "this pairing code was already used; ask the desktop for a new one",
                    ),
                    Some((_, r)) if now_ms / 1000 > r.expires_at => {
                        let ago = now_ms / 1000 - r.expires_at;
                        expired = format!(
                            "this pairing code expired {ago} s ago by the desktop's clock; ask the desktop for a new one (`deskhand pair`)"
                        );
                        ("expired", expired.as_str())
                    }
                    Some((h, record)) => {
                        record.used_at = Some(now_ms);
                        record.used_by = Some(phone.to_string());
                        return Ok((h, record.clone()));
                    }
                }
            }
        };
        let limited = self.limiter.limited(sources, now);
        self.limiter.record(sources, now);
        Err(match limited {
            Some(wait) => Refused {
                code: "rate_limited",
                message: format!(
                    "too many failed pairing attempts; try again in {} s",
                    wait.as_secs() + 1
                ),
                audit: false,
            },
            None => Refused {
                code: failure.0,
                message: failure.1.into(),
                audit: true,
            },
        })
    }
}

/// Creates a fresh one-time code valid for `ttl`, kept in `codes` and queued to `store`.
pub(crate) fn new_code(
    codes: &mut Codes,
    store: &Store,
    ttl: Duration,
    token: PairingToken,
) -> TokenRecord {
    let now = now_unix_ms();
    let record = TokenRecord {
        created_at: now,
        expires_at: now / 1000 + ttl.as_secs() as i64,
        used_at: None,
        used_by: None,
    };
    let h = token_hash(&token);
    codes.tokens.insert(h, record.clone());
    if let Ok(json) = serde_json::to_vec(&record) {
        store.queue(WriteOp::PutPairingToken(hex::encode(h), json), None);
    }
    record
}

/// What the pairing handler may ask of the desktop: the gate's audit log, redeeming a one-time
/// code, admitting the phone, and what the answer tells it.
pub(crate) trait PairingHost: PeerGate {
    /// The desktop's one-time codes (and their per-source failure limits), locked.
    fn codes(&self) -> std::sync::MutexGuard<'_, Codes>;
    /// Admits `phone` with the code `redeemed` (its hash and record, now used): stores the code
    /// as used, adds the phone to the registry, and writes it into the workspace's device list;
    /// returns once all of it is durable.
    ///
    /// # Errors
    /// What could not be stored, for the phone's refusal.
    fn admit(
        self: Arc<Self>,
        phone: DeviceId,
        name: String,
        platform: String,
        redeemed: ([u8; 32], TokenRecord),
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// The workspace's id (if it has one), the desktop's name, and its clock (Unix ms).
    fn welcome(&self) -> (Option<String>, String, i64);
}

pub(crate) struct PairProtocol<H> {
    host: Arc<H>,
}

impl<H> Clone for PairProtocol<H> {
    fn clone(&self) -> Self {
        Self {
            host: self.host.clone(),
        }
    }
}

impl<H> std::fmt::Debug for PairProtocol<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairProtocol")
    }
}

impl<H: PairingHost> PairProtocol<H> {
    pub(crate) fn new(host: Arc<H>) -> Self {
        Self { host }
    }
}

async fn read_msg(recv: &mut iroh::endpoint::RecvStream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(format!(
            "message of {len} bytes is over the {MAX_MESSAGE}-byte limit"
        ));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    Ok(buf)
}

async fn write_msg(send: &mut iroh::endpoint::SendStream, body: &[u8]) -> Result<(), String> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    send.write_all(&out)
        .await
        .map_err(|e| format!("writing: {e}"))?;
    send.finish().map_err(|e| format!("writing: {e}"))
}

impl<H: PairingHost> ProtocolHandler for PairProtocol<H> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let phone = device_id(&conn.remote_id());
        let sources = sources_of(&conn, phone);
        let (mut send, mut recv) = conn.accept_bi().await?;
        let answer = match tokio::time::timeout(Duration::from_secs(10), read_msg(&mut recv)).await
        {
            Err(_) => refusal("bad_request", "no pairing request within 10 s".into()),
            Ok(Err(e)) => refusal("bad_request", e),
            Ok(Ok(body)) => match PairRequest::read(&body) {
                Err(e) => refusal("bad_request", e.to_string()),
                Ok(req) => self.handle(phone, &sources, req).await,
            },
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let _ = write_msg(&mut send, &body).await;
        // Let the answer arrive before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(())
    }
}

fn refusal(code: &str, error: String) -> PairAnswer {
    PairAnswer {
        ok: false,
        code: code.into(),
        error,
        doc_id: None,
        desktop_name: String::new(),
        now_ms: Some(now_unix_ms()),
    }
}

impl<H: PairingHost> PairProtocol<H> {
    async fn handle(
        &self,
        phone: DeviceId,
        sources: &[Source],
        req: ReadPairRequest,
    ) -> PairAnswer {
        let host = &self.host;
        let ReadPairRequest {
            token,
            name,
            platform,
        } = req;
        let redeemed = host.codes().redeem(
            token.as_ref(),
            &phone,
            sources,
            now_unix_ms(),
            Instant::now(),
        );
        let redeemed = match redeemed {
            Ok(r) => r,
            Err(refused) => {
                if refused.audit {
                    tracing::warn!(peer = %phone.short(), code = refused.code, "pairing refused");
                    host.audit("pairing_refused", &phone, refused.code);
                }
                return refusal(refused.code, refused.message);
            }
        };
        let admitted = host
            .clone()
            .admit(phone, name.clone(), platform, redeemed)
            .await;
        if let Err(e) = admitted {
            tracing::error!("pairing could not be stored: {e}");
            return refusal(
                "storage",
                format!("the desktop could not store the pairing: {e}"),
            );
        }
        host.audit("paired", &phone, &name);
        tracing::info!(peer = %phone.short(), %name, "paired a new device");
        let (doc_id, desktop_name, now_ms) = host.welcome();
        PairAnswer {
            ok: true,
            code: String::new(),
            error: String::new(),
            doc_id,
            desktop_name,
            now_ms: Some(now_ms),
        }
    }
}

/// The phone's side: dial the desktop on the pairing ALPN and redeem the code. Returns the
/// workspace id and the desktop's clock. [`crate::Node::pair`] wraps this and stores the desktop
/// as home. The code's expiry is not checked here: the phone's clock may be wrong, and the
/// desktop, whose clock decides, refuses an expired code with `code` `expired`.
pub async fn pair_with(
    endpoint: &iroh::Endpoint,
    payload: &PairingPayload,
    name: &str,
    platform: &str,
) -> Result<Paired, PairError> {
    let addrs: Vec<String> = payload.addrs.iter().map(|a| a.to_string()).collect();
    let unreachable = |reason: String| PairError::Unreachable {
        addrs: addrs.join(", "),
        reason,
    };
    let addr =
        crate::endpoint::peer_addr(&payload.desktop, &payload.addrs, payload.relay.as_deref())
            .map_err(|e| unreachable(e.to_string()))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, PAIR_ALPN))
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = PairRequest {
        v: deskhand_core::pairing::PAIR_REQUEST_VERSION,
        token: payload.token.to_hex(),
        name: name.into(),
        platform: platform.into(),
    };
    let body = serde_json::to_vec(&req).map_err(|e| PairError::Storage(e.to_string()))?;
    write_msg(&mut send, &body).await.map_err(unreachable)?;
    let answer = tokio::time::timeout(Duration::from_secs(10), read_msg(&mut recv))
        .await
        .map_err(|_| unreachable("the desktop did not answer the pairing request".into()))?
        .map_err(unreachable)?;
    conn.close(0u32.into(), b"paired");
    match PairAnswer::read(&answer, now_unix_ms()).map_err(|e| unreachable(e.to_string()))? {
        ReadPairAnswer::Refused { code, message } => Err(PairError::Refused { code, message }),
        ReadPairAnswer::Accepted {
            doc_id,
            desktop_clock_ms,
        } => Ok(Paired {
            doc_id,
            desktop_clock_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_with(token: &PairingToken, expires_at: i64) -> Codes {
        let mut c = Codes::default();
        c.tokens.insert(
            token_hash(token),
            TokenRecord {
                created_at: 0,
                expires_at,
                used_at: None,
                used_by: None,
            },
        );
        c
    }

    fn stranger(n: u8) -> (DeviceId, Vec<Source>) {
        let id = DeviceId::from_bytes([n; 32]);
        (
            id,
            vec![
                Source::Endpoint(id),
                Source::ip("192.0.2.7".parse().expect("ip")),
            ],
        )
    }

    #[test]
    fn strangers_failures_never_shut_out_a_valid_code() {
        let good = PairingToken::from_bytes([7; 16]);
        let bad = PairingToken::from_bytes([9; 16]);
        let mut codes = codes_with(&good, i64::MAX);
        let now = Instant::now();
        // A stranger fails far past the limit, with a fresh endpoint id each time, from one IP.
        let mut answers = Vec::new();
        for n in 0..20u8 {
            let (id, src) = stranger(n);
            answers.push(codes.redeem(Some(&bad), &id, &src, 0, now).unwrap_err());
        }
        assert!(
            answers[..MAX_FAILURES]
                .iter()
                .all(|r| r.code == "unknown" && r.audit)
        );
        assert!(
            answers[MAX_FAILURES..]
                .iter()
                .all(|r| r.code == "rate_limited" && !r.audit),
            "{answers:?}"
        );
        // The phone with the valid code pairs at once, even from the stranger's address.
        let phone = DeviceId::from_bytes([100; 32]);
        let (_, shared_ip) = stranger(0);
        let src = vec![Source::Endpoint(phone), shared_ip[1]];
        let (_, rec) = codes
            .redeem(Some(&good), &phone, &src, 0, now)
            .expect("valid code");
        assert_eq!(rec.used_by, Some(phone.to_string()));
        // A different source that mistypes is told what is wrong, not that it is limited.
        let other = DeviceId::from_bytes([101; 32]);
        let src = vec![
            Source::Endpoint(other),
            Source::ip("198.51.100.1".parse().expect("ip")),
        ];
        let r = codes.redeem(Some(&bad), &other, &src, 0, now).unwrap_err();
        assert_eq!(r.code, "unknown");
        let r = codes.redeem(None, &other, &src, 0, now).unwrap_err();
        assert_eq!(
            r.code, "unknown",
            "a malformed token fails like a wrong one"
        );
        // The stranger's limit ends with its window.
        let (id, src) = stranger(50);
        let later = now + FAILURE_WINDOW;
        assert_eq!(
            codes
                .redeem(Some(&bad), &id, &src, 0, later)
                .unwrap_err()
                .code,
            "unknown"
        );
    }

    #[test]
    fn used_and_expired_codes_are_refused_and_counted() {
        let good = PairingToken::from_bytes([7; 16]);
        let mut codes = codes_with(&good, 100);
        let now = Instant::now();
        let (id, src) = stranger(1);
        assert_eq!(
            codes
                .redeem(Some(&good), &id, &src, 101_000, now)
                .unwrap_err()
                .code,
            "expired"
        );
        codes
            .redeem(Some(&good), &id, &src, 1_000, now)
            .expect("valid");
        assert_eq!(
            codes
                .redeem(Some(&good), &id, &src, 1_000, now)
                .unwrap_err()
                .code,
            "used"
        );
    }

    #[test]
    fn the_limiter_table_stays_bounded() {
        let mut l = Limiter::default();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i));
            l.record(&[Source::ip(ip)], now + Duration::from_millis(u64::from(i)));
        }
        assert!(l.len() <= MAX_SOURCES, "{}", l.len());
        // Each source keeps at most MAX_FAILURES instants.
        let s = [Source::ip("192.0.2.1".parse().expect("ip"))];
        for _ in 0..100 {
            l.record(&s, now);
        }
        assert_eq!(l.failures.get(&s[0]).map(VecDeque::len), Some(MAX_FAILURES));
    }

    #[test]
    fn ipv6_sources_are_their_64_prefix_and_mapped_ipv4_is_ipv4() {
        let a = Source::ip("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = Source::ip("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        let c = Source::ip("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Source::ip("::ffff:192.0.2.1".parse().expect("ip")),
            Source::ip("192.0.2.1".parse().expect("ip"))
        );
    }
}
