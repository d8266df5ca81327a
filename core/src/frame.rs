//! Versioned, length-prefixed wire frames of the sync protocol.
//!
//! ```text
//! frame   := length:u32be body            (length = body length, at most MAX_FRAME_LEN)
//! body    := version:u8 (=1) kind:u8 payload
//! Hello   := kind 1, protocol:u16be, has_doc:u8, [doc_id:16], n:u16be, n × head:32,
//!            [wall_clock_ms:u64be]  (the sender's wall clock, Unix ms; absent = not told)
//! Sync    := kind 2, an Automerge sync message (rest of the body)
//! Ping    := kind 3, nonce:u64be
//! Pong    := kind 4, nonce:u64be
//! Goodbye := kind 5, code:u16be, reason: UTF-8 (rest of the body, at most 1 KiB)
//! Signatures := kind 6, n:u16be, n × (change hash:32, ed25519 signature:64)
//! Catalog := kind 7, the catalog's wire form (`crate::catalog::Catalog::encode`)
//! ```
//!
//! Protocol 2 (`deskhand/sync/2`) sends a `Signatures` frame right before each `Sync` frame that
//! carries changes: the signatures that prove who wrote them ([`crate::authorship`]). A session
//! keeps the signatures it received until the next `Sync` frame.
//!
//! Protocol 3 (`deskhand/sync/3`) syncs several documents over one connection, one QUIC
//! bi-stream each, with the same frames. The first stream the phone opens carries the
//! workspace's document; every further stream opens with a `Hello` whose `doc_id` names the
//! document it syncs (a week's conversation document), which the desktop checks is one of
//! this workspace's before it answers.
//!
//! Protocol 4 (`deskhand/sync/4`) is protocol 3 with the workspace split: the first stream
//! carries the root document, and the desktop opens a unidirectional stream on which it sends
//! `Catalog` frames, the weeks it holds with their heads digests and counts, again whenever they
//! change in a way the phone does not already see on a week's stream.

use automerge::ChangeHash;

use crate::DocId;
use crate::authorship::ChangeSignature;

/// Version byte of every frame body this build writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// The sync protocol version carried in [`Hello`] (the `N` of ALPN `deskhand/sync/N`).
pub const PROTOCOL_VERSION: u16 = 4;
/// Largest body accepted; a larger length prefix is refused before anything is buffered.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;
const MAX_REASON_LEN: usize = 1024;
const MAX_HEADS: usize = 4096;
/// Most signatures one [`Frame::Signatures`] may carry (one per actor of the changes it goes with).
pub const MAX_SIGNATURES: usize = 16_384;

const KIND_HELLO: u8 = 1;
const KIND_SYNC: u8 = 2;
const KIND_PING: u8 = 3;
const KIND_PONG: u8 = 4;
const KIND_GOODBYE: u8 = 5;
const KIND_SIGNATURES: u8 = 6;
const KIND_CATALOG: u8 = 7;

/// First frame each side sends on a sync stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the sender speaks.
    pub protocol: u16,
    /// The workspace document the sender holds, if it holds one yet.
    pub doc_id: Option<DocId>,
    /// The sender's current heads.
    pub heads: Vec<ChangeHash>,
    /// The sender's wall clock when it wrote the hello (Unix milliseconds), so a phone learns
    /// its offset to the desktop's clock. `None` when the hello ends after the heads (a peer of
    /// a build before this field; it is written whenever it is `Some`).
    pub wall_clock_ms: Option<u64>,
}

/// One frame on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens the session.
    Hello(Hello),
    /// An encoded Automerge sync message.
    Sync(Vec<u8>),
    /// Liveness probe.
    Ping(u64),
    /// Answer to a [`Frame::Ping`].
    Pong(u64),
    /// The sender ends the session and says why.
    Goodbye {
        /// Machine-readable reason (see [`crate::session::close_code`]).
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
    /// Signatures of the changes in the next [`Frame::Sync`] (protocol 2).
    Signatures(Vec<ChangeSignature>),
    /// The desktop's catalog of conversation documents ([`crate::catalog::Catalog::encode`]),
    /// sent on the connection's catalog stream, never on a document's (protocol 4).
    Catalog(Vec<u8>),
}

/// Why bytes from a peer were not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix exceeds the decoder's limit ([`MAX_FRAME_LEN`] at most).
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    /// The body's version byte is not one this build reads.
    #[error("frame version {0} is not supported (this build speaks version {FRAME_VERSION})")]
    UnsupportedVersion(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body is shorter or longer than its kind requires, or its fields are invalid.
    #[error("malformed {kind} frame: {why}")]
    Malformed {
        /// Frame kind name.
        kind: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl Frame {
    /// Short name of the frame kind, for logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Sync(_) => "sync",
            Frame::Ping(_) => "ping",
            Frame::Pong(_) => "pong",
            Frame::Goodbye { .. } => "goodbye",
            Frame::Signatures(_) => "signatures",
            Frame::Catalog(_) => "catalog",
        }
    }

    /// Appends the encoded frame (length prefix included) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(FRAME_VERSION);
        match self {
            Frame::Hello(h) => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&h.protocol.to_be_bytes());
                match &h.doc_id {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(id.as_bytes());
                    }
                    None => out.push(0),
                }
                let n = h.heads.len().min(MAX_HEADS);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for head in &h.heads[..n] {
                    out.extend_from_slice(head.as_ref());
                }
                if let Some(ms) = h.wall_clock_ms {
                    out.extend_from_slice(&ms.to_be_bytes());
                }
            }
            Frame::Sync(bytes) => {
                out.push(KIND_SYNC);
                out.extend_from_slice(bytes);
            }
            Frame::Ping(n) => {
                out.push(KIND_PING);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Pong(n) => {
                out.push(KIND_PONG);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Goodbye { code, reason } => {
                out.push(KIND_GOODBYE);
                out.extend_from_slice(&code.to_be_bytes());
                let mut cut = reason.len().min(MAX_REASON_LEN);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.extend_from_slice(&reason.as_bytes()[..cut]);
            }
            Frame::Signatures(sigs) => {
                out.push(KIND_SIGNATURES);
                let n = sigs.len().min(MAX_SIGNATURES);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for s in &sigs[..n] {
                    out.extend_from_slice(s.hash.as_ref());
                    out.extend_from_slice(&s.signature);
                }
            }
            Frame::Catalog(bytes) => {
                out.push(KIND_CATALOG);
                out.extend_from_slice(bytes);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The encoded frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one frame body (without its length prefix).
    pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
        let (&version, rest) = body.split_first().ok_or(FrameError::Malformed {
            kind: "any",
            why: "empty body",
        })?;
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let (&kind, p) = rest.split_first().ok_or(FrameError::Malformed {
            kind: "any",
            why: "missing kind",
        })?;
        match kind {
            KIND_HELLO => decode_hello(p).map(Frame::Hello),
            KIND_SYNC => Ok(Frame::Sync(p.to_vec())),
            KIND_PING | KIND_PONG => {
                let name = if kind == KIND_PING { "ping" } else { "pong" };
                let n: [u8; 8] = p.try_into().map_err(|_| FrameError::Malformed {
                    kind: name,
                    why: "nonce must be 8 bytes",
                })?;
                let n = u64::from_be_bytes(n);
                Ok(if kind == KIND_PING {
                    Frame::Ping(n)
                } else {
                    Frame::Pong(n)
                })
            }
            KIND_GOODBYE => {
                let bad = |why| FrameError::Malformed {
                    kind: "goodbye",
                    why,
                };
                if p.len() < 2 {
                    return Err(bad("missing code"));
                }
                if p.len() - 2 > MAX_REASON_LEN {
                    return Err(bad("reason too long"));
                }
                let code = u16::from_be_bytes([p[0], p[1]]);
                let reason =
                    String::from_utf8(p[2..].to_vec()).map_err(|_| bad("reason is not UTF-8"))?;
                Ok(Frame::Goodbye { code, reason })
            }
            KIND_SIGNATURES => decode_signatures(p).map(Frame::Signatures),
            KIND_CATALOG => Ok(Frame::Catalog(p.to_vec())),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

fn decode_hello(p: &[u8]) -> Result<Hello, FrameError> {
    let bad = |why| FrameError::Malformed { kind: "hello", why };
    let mut r = Reader(p);
    let protocol = u16::from_be_bytes(r.take::<2>().ok_or(bad("missing protocol"))?);
    let doc_id = match r.take::<1>().ok_or(bad("missing doc flag"))?[0] {
        0 => None,
        1 => Some(DocId::from_bytes(
            r.take::<16>().ok_or(bad("short doc id"))?,
        )),
        _ => return Err(bad("doc flag must be 0 or 1")),
    };
    let n = u16::from_be_bytes(r.take::<2>().ok_or(bad("missing head count"))?) as usize;
    if n > MAX_HEADS {
        return Err(bad("too many heads"));
    }
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        heads.push(ChangeHash(r.take::<32>().ok_or(bad("short head"))?));
    }
    let wall_clock_ms = match r.0.len() {
        0 => None,
        8 => r.take::<8>().map(u64::from_be_bytes),
        _ => return Err(bad("trailing bytes (the wall clock is 8 bytes)")),
    };
    Ok(Hello {
        protocol,
        doc_id,
        heads,
        wall_clock_ms,
    })
}

fn decode_signatures(p: &[u8]) -> Result<Vec<ChangeSignature>, FrameError> {
    let bad = |why| FrameError::Malformed {
        kind: "signatures",
        why,
    };
    let mut r = Reader(p);
    let n = u16::from_be_bytes(r.take::<2>().ok_or(bad("missing count"))?) as usize;
    if n > MAX_SIGNATURES {
        return Err(bad("too many signatures"));
    }
    if r.0.len() != n * 96 {
        return Err(bad("length does not match the count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let hash = ChangeHash(r.take::<32>().ok_or(bad("short hash"))?);
        let signature = r.take::<64>().ok_or(bad("short signature"))?;
        out.push(ChangeSignature { hash, signature });
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.0.len() < N {
            return None;
        }
        let (head, tail) = self.0.split_at(N);
        self.0 = tail;
        head.try_into().ok()
    }
}

/// Incremental decoder: feed it whatever the stream delivered, take whole frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder taking frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// An empty decoder taking frame bodies up to `max_len` bytes (capped at [`MAX_FRAME_LEN`]);
    /// a longer length prefix is an error before any of the body is buffered.
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many more bytes the next frame needs before [`Self::next_frame`] can return it.
    pub fn needed(&self) -> usize {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return 4 - avail.len();
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        (4 + len).saturating_sub(avail.len())
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of step and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge(len, self.max_len));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode_body(&avail[4..4 + len]);
        self.pos += 4 + len;
        if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let hello = (
            any::<u16>(),
            proptest::option::of(any::<[u8; 16]>()),
            proptest::collection::vec(any::<[u8; 32]>(), 0..8),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(protocol, doc, heads, wall_clock_ms)| {
                Frame::Hello(Hello {
                    protocol,
                    doc_id: doc.map(DocId::from_bytes),
                    heads: heads.into_iter().map(ChangeHash).collect(),
                    wall_clock_ms,
                })
            });
        prop_oneof![
            hello,
            proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Frame::Sync),
            any::<u64>().prop_map(Frame::Ping),
            any::<u64>().prop_map(Frame::Pong),
            (any::<u16>(), "\\PC{0,200}")
                .prop_map(|(code, reason)| Frame::Goodbye { code, reason }),
            proptest::collection::vec(
                (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()),
                0..4
            )
            .prop_map(|v| Frame::Signatures(
                v.into_iter()
                    .map(|(h, a, b)| {
                        let mut signature = [0u8; 64];
                        signature[..32].copy_from_slice(&a);
                        signature[32..].copy_from_slice(&b);
                        ChangeSignature {
                            hash: ChangeHash(h),
                            signature,
                        }
                    })
                    .collect()
            )),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frames in proptest::collection::vec(arb_frame(), 1..6), split in 1usize..64) {
            let mut wire = Vec::new();
            for f in &frames { f.encode_into(&mut wire); }
            // Deliver in arbitrary chunk sizes: the decoder must reassemble exactly.
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                dec.push(chunk);
                while let Some(f) = dec.next_frame().unwrap() { got.push(f); }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(dec.buffered(), 0);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            for _ in 0..64 {
                match dec.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = Frame::decode_body(&bytes);
        }

        #[test]
        fn corrupted_frames_never_panic(frame in arb_frame(), idx in any::<usize>(), byte in any::<u8>()) {
            let mut wire = frame.encode();
            let i = idx % wire.len();
            wire[i] = byte;
            let mut dec = FrameDecoder::new();
            dec.push(&wire);
            let _ = dec.next_frame();
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new();
        dec.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge(u32::MAX as usize, MAX_FRAME_LEN))
        );
    }

    #[test]
    fn hello_carries_the_wall_clock_at_its_end() {
        let h = Hello {
            protocol: PROTOCOL_VERSION,
            doc_id: None,
            heads: vec![],
            wall_clock_ms: Some(1_764_480_000_123),
        };
        let wire = Frame::Hello(h.clone()).encode();
        // length, version, kind, protocol (2), no doc (1), 0 heads (2), then the clock.
        assert_eq!(&wire[wire.len() - 8..], &1_764_480_000_123u64.to_be_bytes());
        let body = &wire[4..];
        assert_eq!(Frame::decode_body(body), Ok(Frame::Hello(h)));
        // Without the clock (an older peer) it still decodes; a partial clock does not.
        let short = &body[..body.len() - 8];
        let Ok(Frame::Hello(old)) = Frame::decode_body(short) else {
            panic!("an old hello must decode");
        };
        assert_eq!(old.wall_clock_ms, None);
        assert!(Frame::decode_body(&body[..body.len() - 3]).is_err());
    }

    #[test]
    fn unknown_version_and_kind_are_named() {
        assert_eq!(
            Frame::decode_body(&[9, 1]),
            Err(FrameError::UnsupportedVersion(9))
        );
        assert_eq!(
            Frame::decode_body(&[1, 77]),
            Err(FrameError::UnknownKind(77))
        );
    }
}
