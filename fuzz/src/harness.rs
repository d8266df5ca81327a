//! What each fuzz target runs: the bytes libFuzzer makes go through the code a peer's bytes
//! reach, and what must hold afterwards is asserted (a failed assertion is a finding, like a
//! panic, a timeout or running out of memory).
//!
//! This file is shared: the fuzz crate compiles it as `deskhand_fuzz::harness`, and
//! deskhand-core's `fuzz_regressions` test includes it to run every kept input (the seed corpus
//! in `fuzz/seeds/<target>/` and the crashers in `fuzz/regressions/<target>/`) in the normal
//! suite. It uses only deskhand-core and Automerge.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};
use deskhand_core::approval::Approval;
use deskhand_core::authorship::SignatureBook;
use deskhand_core::frame::{Frame, FrameDecoder, Hello, PROTOCOL_VERSION};
use deskhand_core::ids::ApprovalId;
use deskhand_core::pairing::{
    MAX_CLOCK_OFFSET_MS, PAIR_URI_PREFIX, PairAnswer, PairRequest, PairingPayload, ReadPairAnswer,
};
use deskhand_core::schema::{DesktopInfo, ExecutorState, SchemaError, TaskUpdate};
use deskhand_core::session::{SessionOutput, SyncSession};
use deskhand_core::trust::{AcceptAll, ChangeFilter, PhoneWriteRules, Standing};
use deskhand_core::{
    DeviceId, DeviceKey, DocId, Message, Risk, Role, Task, TaskId, TaskStatus, Verdict, Workspace,
};

/// A fuzzed function: any bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// The targets, by name (the names of `fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", frames),
    ("pair_request", pair_request),
    ("pair_answer", pair_answer),
    ("qr_payload", qr_payload),
    ("sync_message", sync_message),
    ("blob_request", blob_request),
    ("catalog", catalog),
];

/// Structured choices read from the fuzzer's bytes; past the end every read gives 0.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        i64::from_be_bytes(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    /// A short string: a length byte, then that many bytes (lossy UTF-8).
    fn text(&mut self) -> String {
        let n = usize::from(self.u8() % 48);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// frames

/// Frames: a byte stream through [`FrameDecoder`] (with a limit the input chooses), once whole
/// and once in pieces. Must hold: splitting the stream changes nothing; every frame decoded
/// encodes back to the same frame; no panic, no allocation beyond the limit.
pub fn frames(data: &[u8]) {
    let mut b = Bytes(data);
    let max = 1 + usize::from(b.u16()) * 16;
    let piece = usize::from(b.u8()) + 1;
    let stream = b.rest();
    let whole = decode_stream(stream, max, stream.len().max(1));
    let pieces = decode_stream(stream, max, piece);
    assert_eq!(
        whole, pieces,
        "splitting the stream changed what it decodes to"
    );
    let _ = Frame::decode_body(stream);
}

fn decode_stream(
    stream: &[u8],
    max: usize,
    piece: usize,
) -> (Vec<Frame>, Option<deskhand_core::FrameError>) {
    let mut d = FrameDecoder::with_max_len(max);
    let mut out = Vec::new();
    for p in stream.chunks(piece) {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let encoded = f.encode();
                    assert!(encoded.len() - 4 <= max, "a frame over the decoder's limit");
                    assert_eq!(
                        Frame::decode_body(&encoded[4..]).as_ref(),
                        Ok(&f),
                        "a decoded frame does not encode back to itself"
                    );
                    out.push(f);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

// ---------------------------------------------------------------------------------------------
// pairing

/// The pairing request body as the desktop reads it. Must hold: a request that is read has a
/// safe, bounded name and platform.
pub fn pair_request(data: &[u8]) {
    match PairRequest::read(data) {
        Ok(r) => {
            assert!(!r.name.is_empty() && r.name.chars().count() <= 64);
            assert!(
                !r.name.chars().any(deskhand_core::terminal::is_unsafe),
                "an unsafe character in {:?}",
                r.name
            );
            assert_eq!(r.name, r.name.trim());
            assert!(r.platform.len() <= 16);
            assert!(r.platform.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The desktop's answer to a pairing request, as the phone reads it. Must hold: a refusal's
/// code and message are safe to show (no control or format characters, bounded); an accepted
/// answer's clock is within [`MAX_CLOCK_OFFSET_MS`] of the phone's, whatever the phone's clock.
pub fn pair_answer(data: &[u8]) {
    for now in [1_764_000_000_000_i64, 0, i64::MIN, i64::MAX] {
        match PairAnswer::read(data, now) {
            Ok(ReadPairAnswer::Refused { code, message }) => {
                assert!(code.len() <= 32);
                assert!(code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                assert!(message.chars().count() <= 300);
                assert!(
                    !message.chars().any(deskhand_core::terminal::is_unsafe),
                    "an unsafe character in {message:?}"
                );
            }
            Ok(ReadPairAnswer::Accepted {
                doc_id,
                desktop_clock_ms,
            }) => {
                if let Some(d) = doc_id {
                    assert_eq!(d.to_string().parse(), Ok(d));
                }
                if let Some(c) = desktop_clock_ms {
                    let offset = c.checked_sub(now).expect("an offset that fits");
                    assert!(offset.unsigned_abs() <= MAX_CLOCK_OFFSET_MS.unsigned_abs());
                    // What the phone computes with it must not overflow.
                    let _ = now.checked_add(offset).expect("a time that fits");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// The QR payload (as scanned, and with the Deskhand prefix put in front so the fuzzer reaches
/// the fields). Must hold: a payload that parses writes a URI that parses back to itself.
pub fn qr_payload(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for uri in [text.to_string(), format!("{PAIR_URI_PREFIX}{text}")] {
        if let Ok(p) = PairingPayload::parse(&uri) {
            let again = p.to_uri();
            assert_eq!(
                PairingPayload::parse(&again),
                Ok(p),
                "{uri:?} parses, but its re-encoding {again:?} does not parse back to it"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// blob requests

/// A blob hash as a phone asks for it and as the document names it. Must hold: what parses is 32
/// bytes and prints back to the same hash.
pub fn blob_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(hash) = deskhand_core::schema::parse_blob_hash(&text) {
        let hex = deskhand_core::schema::blob_hash_hex(&hash);
        assert_eq!(deskhand_core::schema::parse_blob_hash(&hex), Some(hash));
        assert_eq!(hex, text.trim().to_ascii_lowercase());
    }
}

// ---------------------------------------------------------------------------------------------
// the sync message path

/// Who writes a run of changes in the structured form of [`sync_message`].
#[derive(Clone, Copy)]
enum Writer {
    /// The connected phone, under its own actor.
    Phone,
    /// Another device, not paired (its changes relayed by the phone).
    Stranger,
    /// The phone writing under the desktop's actor.
    AsDesktop,
}

/// How a run of changes is signed.
#[derive(Clone, Copy)]
enum Signing {
    /// By its writer's key.
    Own,
    /// Not at all.
    None,
    /// By the phone's key, whatever the actor says.
    PhoneKey,
}

struct Fixture {
    desk: DeviceKey,
    phone: DeviceKey,
    stranger: DeviceKey,
    doc_id: DocId,
    /// The desktop's document: its skeleton, a message and a task of the phone, the task running
    /// and waiting for an approval.
    desk_doc: Automerge,
    /// `desk_doc` read with the typed schema.
    desk_workspace: Workspace,
    /// The phone's replica of it.
    phone_doc: Automerge,
    phone_book: SignatureBook,
    task: TaskId,
    approval: ApprovalId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let desk = DeviceKey::from_secret_bytes([1; 32]);
        let phone = DeviceKey::from_secret_bytes([2; 32]);
        let stranger = DeviceKey::from_secret_bytes([3; 32]);
        let d = desk.device_id();
        let p = phone.device_id();
        let mut desk_doc = Automerge::new().with_actor(d.actor_id());
        desk_doc
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::init(
                    tx,
                    &DesktopInfo {
                        id: d.to_string(),
                        name: "desk".into(),
                        os: "linux".into(),
                        heartbeat_at: 1,
                        executor: ExecutorState::Idle,
                    },
                )
            })
            .unwrap();
        let mut phone_doc = desk_doc.fork().with_actor(p.session_actor([1; 8]));
        let mut phone_book = SignatureBook::new();
        let task = TaskId::from_random([5; 16]);
        let r = phone_doc
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::append_message(tx, &message(&p, "m1", Role::User, "hello"))?;
                Workspace::add_task(tx, &Task::queued(task.clone(), "list ~", &p, 2))
            })
            .unwrap();
        phone_book.sign_local(&phone_doc, &phone, r.hash.unwrap());
        desk_doc.merge(&mut phone_doc).unwrap();
        let approval = ApprovalId::from_random([6; 16]);
        let a = Approval::new(
            approval.clone(),
            task.clone(),
            "trash",
            "{\"path\":\"~/x\"}",
            "Move ~/x to the trash",
            Risk::Medium,
            3,
            i64::MAX / 2,
            &d,
        );
        desk_doc
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::update_task(tx, &task, &TaskUpdate::status(TaskStatus::Running))?;
                Workspace::put_approval(tx, &a)?;
                Workspace::append_message(tx, &message(&d, "m2", Role::Agent, "working"))
            })
            .unwrap();
        phone_doc.merge(&mut desk_doc).unwrap();
        Fixture {
            desk_workspace: Workspace::read(&desk_doc).unwrap(),
            desk,
            phone,
            stranger,
            doc_id: DocId::from_bytes([9; 16]),
            desk_doc,
            phone_doc,
            phone_book,
            task,
            approval,
        }
    })
}

fn message(author: &DeviceId, id: &str, role: Role, text: &str) -> Message {
    Message {
        id: deskhand_core::MessageId::from_random([id.len() as u8; 16]),
        author: author.to_string(),
        role,
        text: text.into(),
        created_at: 1,
        task_id: None,
    }
}

/// The sync message path, as the desktop runs it for a paired phone: frames through a
/// [`SyncSession`] and its `apply` with [`PhoneWriteRules`].
///
/// The first byte chooses the form. Raw (`0`): a valid hello, then the rest is the phone's frame
/// stream, cut by [`FrameDecoder`] with the desktop's limit. Structured (anything else): the
/// input is a list of edits the phone makes to its replica (schema writes and raw Automerge
/// operations on the workspace's objects, by the phone, by a stranger or under the desktop's
/// actor, signed right, not at all or by the wrong key), then a few bytes of the phone's sync
/// frames flipped; the two sessions then sync as they do over the network.
///
/// Must hold, whatever is sent: nothing panics; the desktop's document still saves and loads
/// and reads as a workspace; a refused message leaves it as it was; and what was accepted is
/// only what a phone may write — the desktop's section, devices, existing messages, tasks'
/// progress and other devices' decisions are unchanged, new messages are the phone's user
/// messages, new tasks are queued tasks created by the phone, no approval is added.
pub fn sync_message(data: &[u8]) {
    sync_message_outcome(data);
}

/// What the desktop made of one [`sync_message`] input.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Why the desktop ended the session, if it did (a refusal, a protocol error).
    pub ended: Option<String>,
    /// Messages the desktop's document gained.
    pub new_messages: usize,
    /// Tasks it gained.
    pub new_tasks: usize,
    /// Whether its document changed at all.
    pub changed: bool,
}

/// [`sync_message`], telling what happened (for the tests that check the seeds reach the rules).
pub fn sync_message_outcome(data: &[u8]) -> SyncOutcome {
    let f = fixture();
    let mut b = Bytes(data);
    let mut desk_doc = f.desk_doc.clone();
    let before = &f.desk_workspace;
    let mut ended = None;
    if b.u8() == 0 {
        raw_stream(f, &mut desk_doc, b.rest(), &mut ended);
    } else {
        structured(f, &mut desk_doc, &mut b, &mut ended);
    }
    let saved = desk_doc.save();
    let loaded = Automerge::load(&saved).expect("the desktop's document no longer loads");
    assert_eq!(loaded.get_heads(), desk_doc.get_heads());
    let after = Workspace::read(&desk_doc).expect("the desktop's document is no workspace");
    only_what_a_phone_may_write(f, before, &after);
    SyncOutcome {
        ended,
        new_messages: after.messages.len() - before.messages.len(),
        new_tasks: after.tasks.len() - before.tasks.len(),
        changed: desk_doc.get_heads() != f.desk_doc.get_heads(),
    }
}

fn standing(d: &DeviceId) -> Standing {
    let f = fixture();
    if *d == f.desk.device_id() {
        Standing::Local
    } else if *d == f.phone.device_id() {
        Standing::Paired
    } else {
        Standing::Stranger
    }
}

/// The desktop's side of one frame from the phone; `false` once the session has ended.
fn desk_receives(
    s: &mut SyncSession,
    doc: &mut Automerge,
    frame: Frame,
    out: &mut Vec<Frame>,
    ended: &mut Option<String>,
) -> bool {
    let book = SignatureBook::new();
    let outs = match s.on_frame(frame, 0, doc, &book, 0) {
        Ok(o) => o,
        Err(e) => {
            *ended = Some(e.to_string());
            return false;
        }
    };
    for o in outs {
        match o {
            SessionOutput::Send(f) => out.push(f),
            SessionOutput::Received(p) => {
                let heads = doc.get_heads();
                match s.apply(p, doc, &book, &PhoneWriteRules, &standing, 0) {
                    Ok(more) => out.extend(more.into_iter().filter_map(sent)),
                    Err(e) => {
                        if matches!(e, deskhand_core::SessionError::Refused(_)) {
                            assert_eq!(
                                doc.get_heads(),
                                heads,
                                "a refused message left changes: {e}"
                            );
                        }
                        *ended = Some(e.to_string());
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
    true
}

fn sent(o: SessionOutput) -> Option<Frame> {
    match o {
        SessionOutput::Send(f) => Some(f),
        _ => None,
    }
}

fn raw_stream(f: &Fixture, desk_doc: &mut Automerge, stream: &[u8], ended: &mut Option<String>) {
    let mut s = SyncSession::new(f.phone.device_id(), Some(f.doc_id), None, 0);
    let _ = s.start(desk_doc);
    let hello = Frame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        doc_id: Some(f.doc_id),
        heads: f.phone_doc.get_heads(),
        wall_clock_ms: None,
    });
    let mut out = Vec::new();
    if !desk_receives(&mut s, desk_doc, hello, &mut out, ended) {
        return;
    }
    let mut decoder = FrameDecoder::with_max_len(PhoneWriteRules.limits().max_frame_bytes);
    decoder.push(stream);
    while let Ok(Some(frame)) = decoder.next_frame() {
        if !desk_receives(&mut s, desk_doc, frame, &mut out, ended) {
            return;
        }
    }
}

const KEYS: &[&str] = &[
    "id",
    "author",
    "role",
    "text",
    "created_at",
    "task_id",
    "prompt",
    "created_by",
    "status",
    "claimed_by",
    "cancel_requested_by",
    "events",
    "result",
    "decisions",
    "verdict",
    "at",
    "signature",
    "resolution",
    "name",
    "executor",
    "schema_version",
    "messages",
    "tasks",
    "approvals",
    "desktop",
    "devices",
    "kind",
    "blob",
    "hash",
];

fn structured(
    f: &Fixture,
    desk_doc: &mut Automerge,
    b: &mut Bytes<'_>,
    ended: &mut Option<String>,
) {
    let mut phone_doc = f.phone_doc.clone();
    let mut book = f.phone_book.clone();
    let phone_actor = phone_doc.get_actor().clone();
    let runs = 1 + b.u8() % 4;
    for _ in 0..runs {
        if b.is_empty() {
            break;
        }
        let w = b.u8();
        let writer = match w % 8 {
            6 => Writer::Stranger,
            7 => Writer::AsDesktop,
            _ => Writer::Phone,
        };
        let signing = match (w >> 3) % 8 {
            6 => Signing::None,
            7 => Signing::PhoneKey,
            _ => Signing::Own,
        };
        let (actor, own_key) = match writer {
            Writer::Phone => (phone_actor.clone(), &f.phone),
            Writer::Stranger => (f.stranger.device_id().session_actor([2; 8]), &f.stranger),
            // The phone does not hold the desktop's key: "its own" signature is the phone's.
            Writer::AsDesktop => (f.desk.device_id().actor_id(), &f.phone),
        };
        phone_doc.set_actor(actor);
        let edits = 1 + b.u8() % 8;
        let r = phone_doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let mut objs = known_objects(f, tx);
            for _ in 0..edits {
                edit(f, tx, &mut objs, b);
            }
            Ok(())
        });
        let Ok(r) = r else { continue };
        let Some(hash) = r.hash else { continue };
        let key = match signing {
            Signing::Own => Some(own_key),
            Signing::None => None,
            Signing::PhoneKey => Some(&f.phone),
        };
        if let Some(key) = key {
            book.sign_local(&phone_doc, key, hash);
        }
    }
    phone_doc.set_actor(phone_actor);
    // Bytes of the phone's frames to flip: (frame number, position, xor).
    let mut flips = Vec::new();
    for _ in 0..(b.u8() % 4) {
        flips.push((usize::from(b.u8() % 8), usize::from(b.u16()), b.u8().max(1)));
    }
    pump(f, desk_doc, &mut phone_doc, &book, &flips, ended);
}

/// The objects edits may write to: the workspace's, looked up in the phone's replica.
fn known_objects(f: &Fixture, tx: &Transaction<'_>) -> Vec<ObjId> {
    let mut objs = vec![ROOT];
    let get = |obj: &ObjId, key: &str| match tx.get(obj, key) {
        Ok(Some((automerge::Value::Object(_), id))) => Some(id),
        _ => None,
    };
    for k in ["messages", "tasks", "approvals", "desktop", "devices"] {
        if let Some(o) = get(&ROOT, k) {
            objs.push(o);
        }
    }
    if let Some(tasks) = get(&ROOT, "tasks")
        && let Some(t) = get(&tasks, f.task.as_str())
    {
        objs.push(t.clone());
        if let Some(e) = get(&t, "events") {
            objs.push(e);
        }
    }
    if let Some(approvals) = get(&ROOT, "approvals")
        && let Some(a) = get(&approvals, f.approval.as_str())
    {
        objs.push(a.clone());
        if let Some(d) = get(&a, "decisions") {
            objs.push(d);
        }
    }
    if let Some(m) = get(&ROOT, "messages")
        && let Ok(Some((automerge::Value::Object(_), first))) = tx.get(&m, 0)
    {
        objs.push(first);
    }
    objs
}

fn scalar(f: &Fixture, b: &mut Bytes<'_>) -> ScalarValue {
    let me = f.phone.device_id().to_string();
    match b.u8() % 12 {
        0 => ScalarValue::Str(me.into()),
        1 => ScalarValue::Str(f.desk.device_id().to_string().into()),
        2 => ScalarValue::Str(f.stranger.device_id().to_string().into()),
        3 => ScalarValue::Str(
            [
                "user", "agent", "system", "queued", "running", "done", "approve", "deny",
            ][usize::from(b.u8() % 8)]
            .into(),
        ),
        4 => ScalarValue::Int(b.i64()),
        5 => ScalarValue::Uint(b.i64() as u64),
        6 => ScalarValue::Boolean(b.u8() & 1 == 1),
        7 => ScalarValue::Null,
        8 => ScalarValue::Bytes(b.text().into_bytes()),
        9 => ScalarValue::counter(b.i64()),
        10 => ScalarValue::F64(f64::from(b.u16())),
        _ => ScalarValue::Str(b.text().into()),
    }
}

fn prop_key(b: &mut Bytes<'_>, f: &Fixture) -> String {
    match b.u8() % 8 {
        0 => f.phone.device_id().to_string(),
        1 => f.task.as_str().to_owned(),
        2 => b.text(),
        _ => KEYS[usize::from(b.u8()) % KEYS.len()].to_owned(),
    }
}

fn obj_type(b: &mut Bytes<'_>) -> ObjType {
    match b.u8() % 4 {
        0 => ObjType::List,
        1 => ObjType::Text,
        _ => ObjType::Map,
    }
}

/// One edit on the phone's replica: a schema write as the phone API makes it, or a raw
/// operation. Automerge's errors (a key on a list, an index past the end) are ignored.
fn edit(f: &Fixture, tx: &mut Transaction<'_>, objs: &mut Vec<ObjId>, b: &mut Bytes<'_>) {
    let me = f.phone.device_id();
    let op = b.u8();
    let obj = objs[usize::from(b.u8()) % objs.len()].clone();
    let len = tx.length(&obj);
    let index = usize::from(b.u8()) % (len + 1);
    let _ = match op % 12 {
        0 => {
            let author = match b.u8() % 4 {
                0 => f.desk.device_id(),
                _ => me,
            };
            let role = [Role::User, Role::Agent, Role::System][usize::from(b.u8() % 3)];
            let text = b.text();
            let mut m = message(&author, "x", role, &text);
            m.id = deskhand_core::MessageId::from_random([b.u8(); 16]);
            Workspace::append_message(tx, &m).map_err(|_| ())
        }
        1 => {
            let by = match b.u8() % 4 {
                0 => f.stranger.device_id(),
                _ => me,
            };
            let id = TaskId::from_random([b.u8(); 16]);
            let prompt = b.text();
            let mut t = Task::queued(id, prompt, &by, 4);
            if b.u8().is_multiple_of(4) {
                t.status = TaskStatus::Done;
            }
            Workspace::add_task(tx, &t).map_err(|_| ())
        }
        2 => {
            let by = match b.u8() % 4 {
                0 => f.desk.device_id(),
                _ => me,
            };
            Workspace::request_cancel(tx, &f.task, &by).map_err(|_| ())
        }
        3 => {
            let approval = Workspace::approval(tx, &f.approval).ok().flatten();
            match approval {
                Some(a) => {
                    let verdict = if b.u8() & 1 == 0 {
                        Verdict::Approve
                    } else {
                        Verdict::Deny
                    };
                    let (signer, by) = match b.u8() % 4 {
                        0 => (&f.stranger, me),
                        1 => (&f.phone, f.stranger.device_id()),
                        _ => (&f.phone, me),
                    };
                    let d = a.sign(signer, &f.desk.device_id(), verdict, 5);
                    Workspace::put_decision(tx, &f.approval, &by, &d).map_err(|_| ())
                }
                None => Ok(()),
            }
        }
        4 | 5 => {
            let k = prop_key(b, f);
            let v = scalar(f, b);
            tx.put(&obj, k.as_str(), v).map_err(|_| ())
        }
        6 => {
            let k = prop_key(b, f);
            let t = obj_type(b);
            tx.put_object(&obj, k.as_str(), t)
                .map(|o| objs.push(o))
                .map_err(|_| ())
        }
        7 => {
            let v = scalar(f, b);
            tx.insert(&obj, index, v).map_err(|_| ())
        }
        8 => {
            let t = obj_type(b);
            tx.insert_object(&obj, index, t)
                .map(|o| objs.push(o))
                .map_err(|_| ())
        }
        9 => {
            if b.u8() & 1 == 0 {
                let k = prop_key(b, f);
                tx.delete(&obj, k.as_str()).map_err(|_| ())
            } else {
                tx.delete(&obj, index).map_err(|_| ())
            }
        }
        10 => {
            let k = prop_key(b, f);
            let by = b.i64();
            tx.increment(&obj, k.as_str(), by).map_err(|_| ())
        }
        _ => {
            let text = b.text();
            let del = isize::from(b.u8() % 4);
            tx.splice_text(&obj, index, del, &text).map_err(|_| ())
        }
    };
}

/// The two sessions sync until quiet (at most a few rounds); the phone's frames pass through
/// `flips` first.
fn pump(
    f: &Fixture,
    desk_doc: &mut Automerge,
    phone_doc: &mut Automerge,
    book: &SignatureBook,
    flips: &[(usize, usize, u8)],
    ended: &mut Option<String>,
) {
    let mut sd = SyncSession::new(f.phone.device_id(), Some(f.doc_id), None, 0);
    let mut sp = SyncSession::new(f.desk.device_id(), Some(f.doc_id), None, 0);
    let mut to_desk: Vec<Frame> = sp.start(phone_doc).into_iter().filter_map(sent).collect();
    let mut to_phone: Vec<Frame> = sd.start(desk_doc).into_iter().filter_map(sent).collect();
    let mut n = 0;
    for _ in 0..8 {
        if to_desk.is_empty() && to_phone.is_empty() {
            return;
        }
        for frame in std::mem::take(&mut to_desk) {
            let frame = flip(frame, n, flips);
            n += 1;
            let Some(frame) = frame else { return };
            if !desk_receives(&mut sd, desk_doc, frame, &mut to_phone, ended) {
                return;
            }
        }
        for frame in std::mem::take(&mut to_phone) {
            let outs = match sp.on_frame(frame, 0, phone_doc, book, 0) {
                Ok(o) => o,
                Err(_) => return,
            };
            for o in outs {
                match o {
                    SessionOutput::Send(fr) => to_desk.push(fr),
                    SessionOutput::Received(p) => {
                        match sp.apply(p, phone_doc, book, &AcceptAll, &|_| Standing::Paired, 0) {
                            Ok(more) => to_desk.extend(more.into_iter().filter_map(sent)),
                            Err(_) => return,
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The frame with the flips meant for frame number `n` applied (re-decoded as the desktop would
/// read it; `None` when it no longer decodes).
fn flip(frame: Frame, n: usize, flips: &[(usize, usize, u8)]) -> Option<Frame> {
    let mine: Vec<_> = flips.iter().filter(|(i, _, _)| *i == n).collect();
    if mine.is_empty() {
        return Some(frame);
    }
    let mut bytes = frame.encode();
    for (_, pos, x) in mine {
        // Never the length prefix: a frame cut short is the frames target's business.
        let body = bytes.len() - 4;
        if body > 0 {
            bytes[4 + pos % body] ^= x;
        }
    }
    Frame::decode_body(&bytes[4..]).ok()
}

fn only_what_a_phone_may_write(f: &Fixture, before: &Workspace, after: &Workspace) {
    let me = f.phone.device_id().to_string();
    assert_eq!(after.schema_version, before.schema_version);
    assert_eq!(after.desktop, before.desktop, "the desktop section changed");
    assert_eq!(after.devices, before.devices, "the devices changed");
    assert_eq!(
        after.skipped, before.skipped,
        "objects that do not match the schema"
    );
    for m in &before.messages {
        assert!(
            after.messages.contains(m),
            "message {} changed or went",
            m.id
        );
    }
    for m in &after.messages {
        if !before.messages.iter().any(|o| o.id == m.id) {
            assert_eq!(m.author, me, "a new message not by the phone: {m:?}");
            assert_eq!(m.role, Role::User, "a new message not of a user: {m:?}");
        }
    }
    for (id, t) in &before.tasks {
        let now = after.tasks.get(id).expect("a task went");
        let mut expect = t.clone();
        expect.cancel_requested_by = now.cancel_requested_by.clone();
        assert_eq!(now, &expect, "a task changed beyond its cancel request");
        if now.cancel_requested_by != t.cancel_requested_by {
            assert_eq!(now.cancel_requested_by.as_deref(), Some(me.as_str()));
        }
    }
    for (id, t) in &after.tasks {
        if !before.tasks.contains_key(id) {
            assert_eq!(t.created_by, me, "a new task not by the phone");
            assert_eq!(t.status, TaskStatus::Queued);
            assert!(t.claimed_by.is_none() && t.events.is_empty() && t.result.is_none());
        }
    }
    assert_eq!(
        after.approvals.keys().collect::<Vec<_>>(),
        before.approvals.keys().collect::<Vec<_>>(),
        "approvals added or removed"
    );
    for (id, a) in &before.approvals {
        let now = &after.approvals[id];
        let mut expect = a.clone();
        match now.decisions.get(&me) {
            Some(d) => expect.decisions.insert(me.clone(), d.clone()),
            None => expect.decisions.remove(&me),
        };
        assert_eq!(
            now, &expect,
            "an approval changed beyond the phone's decision"
        );
    }
}

/// A peer's catalog of week documents, `Catalog::decode` (issue 16: what the desktop announces
/// on a connection's catalog stream). Must hold: a catalog that decodes is the one canonical encoding of itself (so
/// two devices never disagree on what was announced), within the week bound; and choosing what
/// to sync from it, against itself and against nothing, ends with each week at most once.
pub fn catalog(data: &[u8]) {
    use deskhand_core::catalog::{Catalog, MAX_CATALOG_WEEKS, choose};
    let Ok(c) = Catalog::decode(data) else {
        return;
    };
    assert!(c.len() <= MAX_CATALOG_WEEKS);
    assert_eq!(c.encode(), data, "decoding is not canonical");
    let none = Catalog::default();
    let fresh = choose(&c, &none, 50);
    assert_eq!(fresh.now.len() + fresh.later.len(), c.len());
    let mut all: Vec<_> = fresh.now.iter().chain(&fresh.later).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), c.len(), "a week chosen twice");
    assert_eq!(choose(&c, &c, 50), Default::default());
    let offline = choose(&none, &c, 50);
    assert_eq!(offline.now.len(), c.len());
    assert!(offline.later.is_empty());
}
