//! The pairing payload carried by the QR code, and the one-time token inside it.
//!
//! `deskhand://pair?v=1&id=<desktop id>&addr=<ip:port,…>&relay=<url>&token=<secret>&name=<name>&exp=<unix s>`
//!
//! Also the phone's pairing request as the desktop reads it ([`PairRequest::read`]): the only
//! bytes a device that is not paired yet can make the desktop parse.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, DocId};

/// Scheme and path of a pairing URI.
pub const PAIR_URI_PREFIX: &str = "deskhand://pair?";
/// Payload version written and read by this build.
pub const PAIR_PAYLOAD_VERSION: u32 = 1;

/// Why a pairing payload was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not a Deskhand pairing code at all.
    #[error("not a Deskhand pairing code (it should start with {PAIR_URI_PREFIX})")]
    NotDeskhand,
    /// Written by a newer app.
    #[error(
        "pairing code version {0} is not supported (this build reads version {PAIR_PAYLOAD_VERSION})"
    )]
    Version(String),
    /// A field is missing or malformed.
    #[error("pairing code field {field:?} is missing or malformed")]
    Field {
        /// The field.
        field: &'static str,
    },
}

/// The one-time secret of a pairing code. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingToken([u8; 16]);

impl PairingToken {
    /// A token from 16 random bytes supplied by the caller.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// Hex, for the URI only.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Compares in time independent of where the tokens differ.
    pub fn ct_eq(&self, other: &PairingToken) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for PairingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingToken(hidden)")
    }
}

/// Constant-time equality of two byte strings of equal length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What the QR code says.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingPayload {
    /// The desktop's device (endpoint) id.
    pub desktop: DeviceId,
    /// Direct addresses to dial.
    pub addrs: Vec<SocketAddr>,
    /// Relay URL, if the desktop uses one.
    pub relay: Option<String>,
    /// The one-time secret.
    pub token: PairingToken,
    /// The desktop's name.
    pub name: String,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

impl fmt::Debug for PairingPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingPayload")
            .field("desktop", &self.desktop)
            .field("addrs", &self.addrs)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl PairingPayload {
    /// The URI encoded in the QR code.
    pub fn to_uri(&self) -> String {
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        let mut s = format!(
            "{PAIR_URI_PREFIX}v={PAIR_PAYLOAD_VERSION}&id={}&addr={}",
            self.desktop,
            pct(&addrs.join(","))
        );
        if let Some(r) = &self.relay {
            s.push_str("&relay=");
            s.push_str(&pct(r));
        }
        s.push_str(&format!(
            "&token={}&name={}&exp={}",
            self.token.to_hex(),
            pct(&self.name),
            self.expires_at
        ));
        s
    }

    /// Parses a scanned or pasted URI.
    pub fn parse(uri: &str) -> Result<Self, PayloadError> {
        let query = uri
            .trim()
            .strip_prefix(PAIR_URI_PREFIX)
            .ok_or(PayloadError::NotDeskhand)?;
        let mut fields = std::collections::HashMap::new();
        for part in query.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            fields.insert(k, v);
        }
        let get = |field: &'static str| {
            fields
                .get(field)
                .copied()
                .ok_or(PayloadError::Field { field })
        };
        let v = get("v")?;
        if v != PAIR_PAYLOAD_VERSION.to_string() {
            return Err(PayloadError::Version(v.chars().take(8).collect()));
        }
        let desktop = get("id")?
            .parse()
            .map_err(|_| PayloadError::Field { field: "id" })?;
        let addr_text = unpct(get("addr")?).ok_or(PayloadError::Field { field: "addr" })?;
        let addrs = addr_text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| PayloadError::Field { field: "addr" }))
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        let relay = match fields.get("relay") {
            Some(r) if !r.is_empty() => {
                Some(unpct(r).ok_or(PayloadError::Field { field: "relay" })?)
            }
            _ => None,
        };
        let mut token = [0u8; 16];
        hex::decode_to_slice(get("token")?, &mut token)
            .map_err(|_| PayloadError::Field { field: "token" })?;
        let name = unpct(get("name")?).ok_or(PayloadError::Field { field: "name" })?;
        let expires_at = get("exp")?
            .parse()
            .map_err(|_| PayloadError::Field { field: "exp" })?;
        if addrs.is_empty() && relay.is_none() {
            return Err(PayloadError::Field { field: "addr" });
        }
        Ok(Self {
            desktop,
            addrs,
            relay,
            token: PairingToken(token),
            name,
            expires_at,
        })
    }
}

/// Largest pairing request or answer body, in bytes (each travels as a `u32be` length and JSON).
pub const MAX_PAIR_MESSAGE: usize = 4096;
/// Pairing request version written and read by this build.
pub const PAIR_REQUEST_VERSION: u32 = 1;

/// The phone's pairing request as it travels: `{"v":1,"token":hex,"name":…,"platform":…}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRequest {
    /// Request version ([`PAIR_REQUEST_VERSION`]).
    pub v: u32,
    /// The one-time token of the QR code, 32 hex digits.
    pub token: String,
    /// The phone's device name, as its user typed it.
    pub name: String,
    /// The phone's platform (`ios`, `android`, `terminal`, …).
    pub platform: String,
}

impl fmt::Debug for PairRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairRequest")
            .field("v", &self.v)
            .field("name", &self.name)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// A pairing request as the desktop takes it: every field made safe to store and show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPairRequest {
    /// The token, `None` when it is not 32 hex digits (then it matches no code).
    pub token: Option<PairingToken>,
    /// The device name, cleaned by [`clean_device_name`].
    pub name: String,
    /// The platform: ASCII letters and digits only, at most 16.
    pub platform: String,
}

/// Why a pairing request was refused before its token was looked at (answered `bad_request`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairRequestError {
    /// The body is longer than [`MAX_PAIR_MESSAGE`].
    #[error("pairing request of {0} bytes is over the {MAX_PAIR_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// Not the JSON object of a pairing request.
    #[error("malformed pairing request: {0}")]
    Malformed(String),
    /// Written by a newer app.
    #[error("pairing protocol version {0} is not supported")]
    Version(u32),
}

impl PairRequest {
    /// Reads the body of a pairing request as a phone sent it (at most [`MAX_PAIR_MESSAGE`]
    /// bytes of JSON). Any bytes give a request or an error, never a panic.
    pub fn read(body: &[u8]) -> Result<ReadPairRequest, PairRequestError> {
        if body.len() > MAX_PAIR_MESSAGE {
            return Err(PairRequestError::TooLarge(body.len()));
        }
        let req: PairRequest =
            serde_json::from_slice(body).map_err(|e| PairRequestError::Malformed(e.to_string()))?;
        if req.v != PAIR_REQUEST_VERSION {
            return Err(PairRequestError::Version(req.v));
        }
        let mut token = [0u8; 16];
        let token = hex::decode_to_slice(&req.token, &mut token)
            .ok()
            .map(|()| PairingToken(token));
        let platform = req
            .platform
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        Ok(ReadPairRequest {
            token,
            name: clean_device_name(&req.name),
            platform,
        })
    }
}

/// The desktop's answer to a pairing request as it travels: `{"ok":true,"doc_id":hex,
/// "desktop_name":…,"now_ms":…}`, or `{"ok":false,"code":…,"error":…,"now_ms":…}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairAnswer {
    /// Whether the phone is now paired.
    pub ok: bool,
    /// Why not, for programs (`bad_request`, `expired`, `used`, `rate_limited`, …).
    #[serde(default)]
    pub code: String,
    /// Why not, for people.
    #[serde(default)]
    pub error: String,
    /// The workspace document id (32 hex digits), when the desktop has one.
    #[serde(default)]
    pub doc_id: Option<String>,
    /// The desktop's name.
    #[serde(default)]
    pub desktop_name: String,
    /// The desktop's wall clock when it answered (Unix ms).
    #[serde(default)]
    pub now_ms: Option<i64>,
}

/// A pairing answer as a phone takes it: every field checked or made safe to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPairAnswer {
    /// Paired.
    Accepted {
        /// The workspace document id, when the desktop has one.
        doc_id: Option<DocId>,
        /// The desktop's wall clock when it answered (Unix ms); `None` when it did not say or
        /// said something further than [`MAX_CLOCK_OFFSET_MS`] from this device's `now_ms`.
        desktop_clock_ms: Option<i64>,
    },
    /// Refused.
    Refused {
        /// Why, for programs: ASCII letters, digits and `_`, at most 32.
        code: String,
        /// Why, for people: no control or format characters, at most 300 characters.
        message: String,
    },
}

/// Why a pairing answer could not be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairAnswerError {
    /// The body is longer than [`MAX_PAIR_MESSAGE`].
    #[error("pairing answer of {0} bytes is over the {MAX_PAIR_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// Not the JSON object of a pairing answer, or a field is wrong.
    #[error("malformed pairing answer: {0}")]
    Malformed(String),
}

/// How far apart two devices' clocks may plausibly be, in ms (100 years). A peer's clock said
/// to be further off than this is taken as unknown, which keeps every sum of a time and an
/// offset far from overflow.
pub const MAX_CLOCK_OFFSET_MS: i64 = 100 * 365 * 86_400_000;

impl PairAnswer {
    /// Reads the body of a pairing answer as the desktop sent it (at most
    /// [`MAX_PAIR_MESSAGE`] bytes of JSON), `now_ms` being this device's wall clock. Any bytes
    /// give an answer or an error, never a panic.
    pub fn read(body: &[u8], now_ms: i64) -> Result<ReadPairAnswer, PairAnswerError> {
        if body.len() > MAX_PAIR_MESSAGE {
            return Err(PairAnswerError::TooLarge(body.len()));
        }
        let a: PairAnswer =
            serde_json::from_slice(body).map_err(|e| PairAnswerError::Malformed(e.to_string()))?;
        if !a.ok {
            let code: String = a
                .code
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(32)
                .collect();
            return Ok(ReadPairAnswer::Refused {
                code,
                message: safe_line(&a.error, &['\t', '\n'], 300).trim().to_owned(),
            });
        }
        let doc_id = match a.doc_id {
            None => None,
            Some(d) => Some(d.parse::<DocId>().map_err(|e| {
                PairAnswerError::Malformed(format!("doc_id is not a workspace id: {e}"))
            })?),
        };
        let desktop_clock_ms = a.now_ms.filter(|d| {
            d.checked_sub(now_ms)
                .is_some_and(|o| o.unsigned_abs() <= MAX_CLOCK_OFFSET_MS.unsigned_abs())
        });
        Ok(ReadPairAnswer::Accepted {
            doc_id,
            desktop_clock_ms,
        })
    }
}

/// A device name as a phone sent it, made safe to store and show: no control or format
/// characters (see [`crate::terminal::is_unsafe`]; tabs become spaces), no surrounding blanks,
/// at most 64 characters; an empty result becomes `phone`.
pub fn clean_device_name(name: &str) -> String {
    match safe_line(name, &['\t'], 64).trim() {
        "" => "phone".to_owned(),
        t => t.to_owned(),
    }
}

/// `text` with each of `spaced` made a space, then without control or format characters
/// ([`crate::terminal::is_unsafe`]), cut to `max` characters.
fn safe_line(text: &str, spaced: &[char], max: usize) -> String {
    text.chars()
        .map(|c| if spaced.contains(&c) { ' ' } else { c })
        .filter(|c| !crate::terminal::is_unsafe(*c))
        .take(max)
        .collect()
}

fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b'['
            | b']' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unpct(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let h = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn a_pairing_answer_is_read_checked_and_made_safe_to_show() {
        let ok = br#"{"ok":true,"doc_id":"00112233445566778899aabbccddeeff","desktop_name":"studio","now_ms":1764000360000}"#;
        assert_eq!(
            PairAnswer::read(ok, NOW),
            Ok(ReadPairAnswer::Accepted {
                doc_id: Some("00112233445566778899aabbccddeeff".parse().unwrap()),
                desktop_clock_ms: Some(NOW + 360_000),
            })
        );
        let refused =
            br#"{"ok":false,"code":"expired\u202e!","error":" this code \u202eexpired\u0007\nagain ","now_ms":1}"#;
        assert_eq!(
            PairAnswer::read(refused, NOW),
            Ok(ReadPairAnswer::Refused {
                code: "expired".into(),
                message: "this code expired again".into(),
            })
        );
        // A clock further off than a century is not believed; the pairing still stands.
        for far in [i64::MIN, i64::MAX, NOW + MAX_CLOCK_OFFSET_MS + 1] {
            let body = format!(r#"{{"ok":true,"now_ms":{far}}}"#);
            assert_eq!(
                PairAnswer::read(body.as_bytes(), NOW),
                Ok(ReadPairAnswer::Accepted {
                    doc_id: None,
                    desktop_clock_ms: None
                })
            );
        }
        assert!(matches!(
            PairAnswer::read(br#"{"ok":true,"doc_id":"../etc"}"#, NOW),
            Err(PairAnswerError::Malformed(m)) if m.contains("doc_id")
        ));
        assert!(matches!(
            PairAnswer::read(b"<html>", NOW),
            Err(PairAnswerError::Malformed(_))
        ));
        assert_eq!(
            PairAnswer::read(&[b' '; MAX_PAIR_MESSAGE + 1], NOW),
            Err(PairAnswerError::TooLarge(MAX_PAIR_MESSAGE + 1))
        );
    }

    fn sample(name: String) -> PairingPayload {
        PairingPayload {
            desktop: DeviceId::from_bytes([4; 32]),
            addrs: vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:9".parse().unwrap(),
            ],
            relay: Some("https://relay.example/x?y=1&z".into()),
            token: PairingToken([9; 16]),
            name,
            expires_at: 1_790_000_000,
        }
    }

    proptest! {
        #[test]
        fn payload_round_trips(name in "\\PC{0,40}") {
            let p = sample(name);
            prop_assert_eq!(PairingPayload::parse(&p.to_uri()), Ok(p));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = PairingPayload::parse(&s);
            let _ = PairingPayload::parse(&format!("{PAIR_URI_PREFIX}{s}"));
        }
    }

    #[test]
    fn pair_requests_are_read_safely() {
        let ok = br#"{"v":1,"token":"09090909090909090909090909090909","name":" Ann\u202e\tphone ","platform":"i-OS!"}"#;
        let r = PairRequest::read(ok).unwrap();
        assert_eq!(r.token, Some(PairingToken([9; 16])));
        assert_eq!(r.name, "Ann phone");
        assert_eq!(r.platform, "iOS");
        let bad_token = br#"{"v":1,"token":"xyz","name":"","platform":""}"#;
        let r = PairRequest::read(bad_token).unwrap();
        assert_eq!((r.token, r.name.as_str()), (None, "phone"));
        assert_eq!(
            PairRequest::read(br#"{"v":2,"token":"","name":"","platform":""}"#),
            Err(PairRequestError::Version(2))
        );
        assert!(matches!(
            PairRequest::read(b"[1,2"),
            Err(PairRequestError::Malformed(_))
        ));
        assert_eq!(
            PairRequest::read(&[b' '; MAX_PAIR_MESSAGE + 1]),
            Err(PairRequestError::TooLarge(MAX_PAIR_MESSAGE + 1))
        );
    }

    #[test]
    fn names_lose_control_and_format_characters() {
        assert_eq!(clean_device_name("Ann's phone"), "Ann's phone");
        assert_eq!(
            clean_device_name("\x1b[31mevil\u{202e}txt.exe\r\n[agent]"),
            "[31meviltxt.exe[agent]"
        );
        assert_eq!(clean_device_name("  \u{200b} "), "phone");
        assert_eq!(clean_device_name(&"x".repeat(100)).chars().count(), 64);
        assert_eq!(clean_device_name("a\tb"), "a b");
    }

    #[test]
    fn token_is_not_printed() {
        let p = sample("desk".into());
        assert!(!format!("{p:?}").contains(&p.token.to_hex()));
        assert!(p.token.ct_eq(&PairingToken([9; 16])));
        assert!(!p.token.ct_eq(&PairingToken([8; 16])));
        assert_eq!(
            PairingPayload::parse("https://x"),
            Err(PayloadError::NotDeskhand)
        );
    }
}
