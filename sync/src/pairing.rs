//! Pairing over `deskhand/pair/1`: the desktop's one-time codes and the phone's side.
//!
//! One request and one answer, each a `u32be` length and a JSON body (at most 4 KiB):
//! request `{"v":1,"token":hex,"name":…,"platform":…}`; answer
//! `{"ok":true,"doc_id":…,"desktop_name":…}` or `{"ok":false,"code":…,"error":…}`.
//! QUIC-TLS has already proved both keys; the token proves the phone saw the QR code.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deskhand_core::pairing::ct_eq;
use deskhand_core::schema::{DeviceEntry, Workspace};
use deskhand_core::{DeviceId, PAIR_ALPN, PairingPayload, PairingToken};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::endpoint::device_id;
use crate::node::{PeerRecord, Shared};
use crate::presence::now_unix_ms;
use crate::store::WriteOp;

const MAX_MESSAGE: usize = 4096;
/// Failed attempts allowed per window before every attempt is refused for a while.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

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
    /// The code has expired (checked on the phone before dialling).
    #[error(
        "this pairing code expired {ago_s} s ago; ask the desktop for a new one (`deskhand pair`)"
    )]
    Expired {
        /// Seconds since expiry.
        ago_s: i64,
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

#[derive(Serialize, Deserialize)]
struct Request {
    v: u32,
    token: String,
    name: String,
    platform: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    code: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    doc_id: Option<String>,
    #[serde(default)]
    desktop_name: String,
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

/// The desktop's pairing codes and its attempt limiter.
#[derive(Default)]
pub(crate) struct Codes {
    pub(crate) tokens: HashMap<[u8; 32], TokenRecord>,
    failures: VecDeque<Instant>,
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
            failures: VecDeque::new(),
        }
    }

    /// Checks a presented token; on success marks it used and returns the record to persist.
    fn redeem(
        &mut self,
        token: &PairingToken,
        phone: &DeviceId,
        now_ms: i64,
        now: Instant,
    ) -> Result<([u8; 32], TokenRecord), (&'static str, String)> {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= MAX_FAILURES {
            let wait = self
                .failures
                .front()
                .map(|t| {
                    FAILURE_WINDOW
                        .saturating_sub(now.duration_since(*t))
                        .as_secs()
                        + 1
                })
                .unwrap_or(60);
            return Err((
                "rate_limited",
                format!("too many failed pairing attempts; try again in {wait} s"),
            ));
        }
        let presented = token_hash(token);
        // Compare every stored hash in constant time; no early exit on a match.
        let mut found = None;
        for h in self.tokens.keys() {
            if ct_eq(h, &presented) {
                found = Some(*h);
            }
        }
        let fail = |me: &mut Self, code, msg: String| {
            me.failures.push_back(now);
            Err((code, msg))
        };
        let Some(h) = found else {
            return fail(
                self,
                "unknown",
                "this pairing code is not valid for this desktop".into(),
            );
        };
        let Some(record) = self.tokens.get_mut(&h) else {
            return fail(
                self,
                "unknown",
                "this pairing code is not valid for this desktop".into(),
            );
        };
        if record.used_at.is_some() {
            return fail(
                self,
                "used",
                "this pairing code was already used; ask the desktop for a new one".into(),
            );
        }
        if now_ms / 1000 > record.expires_at {
            return fail(
                self,
                "expired",
                "this pairing code has expired; ask the desktop for a new one".into(),
            );
        }
        record.used_at = Some(now_ms);
        record.used_by = Some(phone.to_string());
        Ok((h, record.clone()))
    }
}

/// Creates a fresh one-time code valid for `ttl`.
pub(crate) fn new_code(shared: &Shared, ttl: Duration, token: PairingToken) -> TokenRecord {
    let now = now_unix_ms();
    let record = TokenRecord {
        created_at: now,
        expires_at: now / 1000 + ttl.as_secs() as i64,
        used_at: None,
        used_by: None,
    };
    let h = token_hash(&token);
    shared.codes().tokens.insert(h, record.clone());
    if let Ok(json) = serde_json::to_vec(&record) {
        shared
            .store()
            .queue(WriteOp::PutPairingToken(hex::encode(h), json), None);
    }
    record
}

#[derive(Clone)]
pub(crate) struct PairProtocol {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PairProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairProtocol")
    }
}

impl PairProtocol {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
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

impl ProtocolHandler for PairProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let phone = device_id(&conn.remote_id());
        let (mut send, mut recv) = conn.accept_bi().await?;
        let answer = match tokio::time::timeout(Duration::from_secs(10), read_msg(&mut recv)).await
        {
            Err(_) => refusal("bad_request", "no pairing request within 10 s".into()),
            Ok(Err(e)) => refusal("bad_request", e),
            Ok(Ok(body)) => match serde_json::from_slice::<Request>(&body) {
                Err(e) => refusal("bad_request", format!("malformed pairing request: {e}")),
                Ok(req) => self.handle(phone, req).await,
            },
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let _ = write_msg(&mut send, &body).await;
        // Let the answer arrive before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(())
    }
}

fn refusal(code: &str, error: String) -> Answer {
    Answer {
        ok: false,
        code: code.into(),
        error,
        doc_id: None,
        desktop_name: String::new(),
    }
}

impl PairProtocol {
    async fn handle(&self, phone: DeviceId, req: Request) -> Answer {
        let shared = &self.shared;
        if req.v != 1 {
            return refusal(
                "bad_request",
                format!("pairing protocol version {} is not supported", req.v),
            );
        }
        let mut token = [0u8; 16];
        if hex::decode_to_slice(&req.token, &mut token).is_err() {
            shared.codes().failures.push_back(Instant::now());
            return refusal(
                "unknown",
                "this pairing code is not valid for this desktop".into(),
            );
        }
        let name: String = req
            .name
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let platform: String = req
            .platform
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        let redeemed = shared.codes().redeem(
            &PairingToken::from_bytes(token),
            &phone,
            now_unix_ms(),
            Instant::now(),
        );
        let (h, record) = match redeemed {
            Ok(r) => r,
            Err((code, msg)) => {
                tracing::warn!(peer = %phone.short(), code, "pairing refused");
                shared.audit("pairing_refused", &phone, code);
                return refusal(code, msg);
            }
        };
        let persist = async {
            let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            shared
                .store()
                .write(WriteOp::PutPairingToken(hex::encode(h), json))
                .await
                .map_err(|e| e.to_string())?;
            let now = now_unix_ms();
            let rec = PeerRecord {
                name: name.clone(),
                platform: platform.clone(),
                paired_at: now,
                revoked_at: None,
                last_seen: None,
                addrs: vec![],
            };
            shared
                .put_peer(phone, rec)
                .await
                .map_err(|e| e.to_string())?;
            let entry = DeviceEntry {
                name: name.clone(),
                platform: platform.clone(),
                paired_at: now,
                revoked_at: None,
            };
            crate::node::write_change(shared, |tx| Workspace::put_device(tx, &phone, &entry))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        if let Err(e) = persist.await {
            tracing::error!("pairing could not be stored: {e}");
            return refusal(
                "storage",
                format!("the desktop could not store the pairing: {e}"),
            );
        }
        shared.audit("paired", &phone, &name);
        tracing::info!(peer = %phone.short(), %name, "paired a new device");
        let doc_id = shared.lock_doc().doc_id.map(|d| d.to_string());
        Answer {
            ok: true,
            code: String::new(),
            error: String::new(),
            doc_id,
            desktop_name: shared.desktop_name(),
        }
    }
}

/// The phone's side: dial the desktop on the pairing ALPN and redeem the code. Returns the
/// workspace id. [`crate::Node::pair`] wraps this and stores the desktop as home.
pub async fn pair_with(
    endpoint: &iroh::Endpoint,
    payload: &PairingPayload,
    name: &str,
    platform: &str,
) -> Result<Option<String>, PairError> {
    let now_s = now_unix_ms() / 1000;
    if now_s > payload.expires_at {
        return Err(PairError::Expired {
            ago_s: now_s - payload.expires_at,
        });
    }
    let addrs: Vec<String> = payload.addrs.iter().map(|a| a.to_string()).collect();
    let unreachable = |reason: String| PairError::Unreachable {
        addrs: addrs.join(", "),
        reason,
    };
    let addr = crate::endpoint::peer_addr(&payload.desktop, &payload.addrs)
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, PAIR_ALPN))
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = Request {
        v: 1,
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
    let answer: Answer = serde_json::from_slice(&answer)
        .map_err(|e| unreachable(format!("malformed answer: {e}")))?;
    if !answer.ok {
        return Err(PairError::Refused {
            code: answer.code,
            message: answer.error,
        });
    }
    Ok(answer.doc_id)
}
