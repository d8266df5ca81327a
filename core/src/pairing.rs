//! The pairing payload carried by the QR code, and the one-time token inside it.
//!
//! `deskhand://pair?v=1&id=<desktop id>&addr=<ip:port,…>&relay=<url>&token=<secret>&name=<name>&exp=<unix s>`

use std::fmt;
use std::net::SocketAddr;

use crate::DeviceId;

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
