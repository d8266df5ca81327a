//! The hook through which a node vets a peer's changes, before and after they enter its document.

use std::collections::BTreeSet;

use automerge::{Automerge, Change, ChangeHash, ObjId, ReadDoc};
use autosurgeon::Hydrate;

use crate::DeviceId;
use crate::approval::Decision;
use crate::bounds::Limits;
use crate::schema::{Message, Role, Task, TaskStatus};

/// Why incoming changes were refused. The session that received them is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused changes from {peer}: {reason}")]
pub struct Refusal {
    /// The connected peer that sent them.
    pub peer: DeviceId,
    /// What was wrong, for the log and the device list.
    pub reason: String,
}

/// How the receiving device stands to a change's author.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The receiving device itself (its own changes coming back, e.g. after a restore).
    Local,
    /// A paired device that was not revoked.
    Paired,
    /// Any other device: unknown, or revoked.
    Stranger,
}

/// Who wrote a run of changes, and how that is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Author {
    /// The connected peer that delivered them.
    pub peer: DeviceId,
    /// The device their actor names (`None`: an actor id that names no device).
    pub device: Option<DeviceId>,
    /// Whether a signature of that device proves it wrote them ([`crate::authorship`]).
    pub proven: bool,
    /// How the receiver stands to that device.
    pub standing: Standing,
}

impl Author {
    /// The connected peer writing its own changes, proven (tests and simple callers).
    pub fn peer_itself(peer: DeviceId) -> Self {
        Self {
            peer,
            device: Some(peer),
            proven: true,
            standing: Standing::Paired,
        }
    }
}

/// What a peer's changes write, found by [`ChangeFilter::check`] and judged, once they are
/// applied, by [`ChangeFilter::judge`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Messages the changes insert, by the id of the operation that made them.
    messages: BTreeSet<(u64, String)>,
    /// Tasks the changes create, by id.
    new_tasks: BTreeSet<String>,
    /// Existing tasks whose cancel request the changes set, by id.
    cancels: BTreeSet<String>,
    /// Approvals under which the changes write the sender's decision, by id.
    decisions: BTreeSet<String>,
    /// Whether the changes write or clear the sender's push subscription.
    push: bool,
}

/// Decides whether a peer's new changes may enter the document.
///
/// The receiver calls, for one sync message and for each run of its new changes by one author
/// (in causal order, see [`crate::incoming::Incoming`]): [`Self::check`] with the run and the
/// document before it, then applies the run; once every run is applied it calls
/// [`Self::judge`] for each with the document as it now is. If any call refuses, the receiver
/// returns its document to what it was before the message and closes the session.
pub trait ChangeFilter: Send + Sync {
    /// Bounds on what one message may make the receiver decode ([`crate::bounds`]).
    fn limits(&self) -> Limits {
        Limits::FROM_DESKTOP
    }
    /// Where the changes write, before they are applied: `Ok` with what to judge afterwards,
    /// `Err` to refuse the whole message (nothing is applied).
    fn check(&self, author: &Author, doc: &Automerge, new: &[Change]) -> Result<Touched, Refusal>;
    /// What the changes wrote, read with the typed schema from the document after they were
    /// applied (so Automerge's own rules decide which value won): `Err` to refuse them.
    fn judge(&self, _author: &Author, _doc: &Automerge, _touched: &Touched) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Accepts everything: phones trust what their desktop relays (its changes still pass the
/// header and size checks of [`crate::incoming`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl ChangeFilter for AcceptAll {
    fn check(&self, _: &Author, _: &Automerge, _: &[Change]) -> Result<Touched, Refusal> {
        Ok(Touched::default())
    }
}

/// The largest message text or task prompt a phone may write, in bytes of UTF-8. Longer text is
/// refused by the phone API before it is written and by the desktop if it arrives anyway.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// The longest id (message, task) a phone may write, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// The desktop's rules for what a phone may write (DESIGN.md, "Identity and trust").
///
/// Every change the desktop does not already have must be proven by its author's signature
/// ([`crate::authorship`]), whichever peer delivered it. A change of the desktop itself (lost
/// in a restore, handed back by a phone) is taken as it is. A change of a paired, unrevoked
/// phone may only: add a user message authored by that phone, add a queued task created by it,
/// set `cancel_requested_by` to it on an existing task, add or rewrite its own decision on
/// an approval, and write or clear the Web Push subscription in its own device entry
/// (`devices/<phone>/push`, checked by [`crate::PushSubscription::check`]: RFC 8291 §3 key
/// lengths, a P-256 point, an `https://` endpoint). Anything else — an unsigned change, a change of a device that is not paired or
/// was revoked, task status, events, results, another device's decision, the desktop section,
/// deleting or editing messages — refuses the whole sync message.
///
/// Two steps: [`ChangeFilter::check`] walks the operations to find *where* they write (only the
/// places above, only scalar fields with known names, objects only where the schema has them);
/// [`ChangeFilter::judge`] then reads every object they wrote with the typed schema from the
/// document as it is after applying them, and checks the values: types, enums, sizes, and that
/// every author, creator and decision is the phone itself. Values are never judged from the
/// operations, whose winner Automerge decides by rules this filter would have to repeat.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhoneWriteRules;

#[derive(Clone, Debug)]
enum NewObj {
    Message,
    Task(String),
    Events,
    Decision,
    Push,
}

type ObjKey = (u64, automerge::ActorId);

impl ChangeFilter for PhoneWriteRules {
    fn limits(&self) -> Limits {
        Limits::FROM_PHONE
    }

    fn check(
        &self,
        author: &Author,
        doc: &Automerge,
        changes: &[Change],
    ) -> Result<Touched, Refusal> {
        let refuse = |reason: String| Refusal {
            peer: author.peer,
            reason,
        };
        let Some(device) = author.device else {
            return Err(refuse(
                "a change whose actor names no device (an actor id of the wrong length)".into(),
            ));
        };
        if !author.proven {
            return Err(refuse(format!(
                "a change of device {} without its signature; every change must be signed by the device that wrote it",
                device.short()
            )));
        }
        match author.standing {
            Standing::Local => return Ok(Touched::default()),
            Standing::Stranger => {
                return Err(refuse(format!(
                    "a change of device {}, which is not paired with this desktop or was revoked",
                    device.short()
                )));
            }
            Standing::Paired => {}
        }
        let me = device.to_string();
        let mut new_objs: std::collections::HashMap<ObjKey, NewObj> = Default::default();
        let mut touched = Touched::default();
        for change in changes {
            if !device.owns_actor(change.actor_id()) {
                return Err(refuse(format!(
                    "a change under another actor than its author's ({})",
                    device.short()
                )));
            }
            // Automerge's decoder trusts the change's actor indices (a flipped byte makes it
            // panic): a change it cannot expand is refused like any undecodable one.
            let expanded = crate::incoming::guarded(|| change.decode())
                .map_err(|e| refuse(format!("an undecodable change: {e}")))?;
            let start = expanded.start_op.get();
            for (i, op) in expanded.operations.iter().enumerate() {
                let opid = (start + i as u64, expanded.actor_id.clone());
                check_op(
                    doc,
                    change.deps(),
                    &me,
                    op,
                    opid,
                    &mut new_objs,
                    &mut touched,
                )
                .map_err(refuse)?;
            }
        }
        Ok(touched)
    }

    fn judge(&self, author: &Author, doc: &Automerge, touched: &Touched) -> Result<(), Refusal> {
        let (Some(device), Standing::Paired) = (author.device, author.standing) else {
            return Ok(());
        };
        judge_phone_writes(&device, doc, touched).map_err(|reason| Refusal {
            peer: author.peer,
            reason,
        })
    }
}

fn judge_phone_writes(peer: &DeviceId, doc: &Automerge, t: &Touched) -> Result<(), String> {
    let me = peer.to_string();
    let text_ok = |what: &str, s: &str| -> Result<(), String> {
        if s.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "{what} of {} bytes (the limit is {MAX_TEXT_BYTES})",
                s.len()
            ));
        }
        Ok(())
    };
    let id_ok = |what: &str, s: &str| -> Result<(), String> {
        if s.is_empty() || s.len() > MAX_ID_BYTES || s.chars().any(char::is_control) {
            return Err(format!(
                "{what} id {:?} (ids are 1 to {MAX_ID_BYTES} bytes, no control characters)",
                crate::schema::clip(s, 40)
            ));
        }
        Ok(())
    };
    for (counter, actor) in &t.messages {
        let obj = doc
            .import_obj(&format!("{counter}@{actor}"))
            .map_err(|_| "a message that is not in the document after all".to_owned())?;
        let m = Message::read_map(doc, &obj)
            .map_err(|e| format!("a message that is not a valid message: {e}"))?;
        if m.author != me {
            return Err("a message whose author is not the sending phone".into());
        }
        if m.role != Role::User {
            return Err("a message whose role is not \"user\"".into());
        }
        id_ok("a message", m.id.as_str())?;
        if let Some(task) = &m.task_id {
            id_ok("a message's task", task.as_str())?;
        }
        text_ok("a message", &m.text)?;
    }
    // A root document (schema 2) holds no conversation: its collections are looked up only
    // when the changes wrote into them.
    let collection = |key: &str| crate::schema::root_obj(doc, key).map_err(|e| e.to_string());
    let tasks = if t.new_tasks.is_empty() && t.cancels.is_empty() {
        automerge::ROOT
    } else {
        collection("tasks")?
    };
    for id in &t.new_tasks {
        let task: Task = autosurgeon::hydrate_prop(doc, &tasks, id.as_str())
            .map_err(|e| format!("task {id} is not a valid task: {e}"))?;
        id_ok("a task", id)?;
        if task.id.as_str() != id {
            return Err(format!("task {id} carries a different id inside"));
        }
        if task.created_by != me {
            return Err(format!("task {id} is not created_by the sending phone"));
        }
        if task.status != TaskStatus::Queued {
            return Err(format!("task {id} does not start as \"queued\""));
        }
        if task.claimed_by.is_some()
            || task.received_at.is_some()
            || task.started_at.is_some()
            || task.finished_at.is_some()
            || task.result.is_some()
            || !task.events.is_empty()
            || task.cancel_requested_by.as_ref().is_some_and(|c| *c != me)
        {
            return Err(format!(
                "task {id} arrives with fields only the desktop writes (claim, times, events, result)"
            ));
        }
        text_ok("a task prompt", &task.prompt)?;
    }
    for id in &t.cancels {
        let task_obj = match doc.get(&tasks, id.as_str()) {
            Ok(Some((automerge::Value::Object(_), o))) => o,
            _ => {
                return Err(format!(
                    "a cancel request on task {id}, which does not exist"
                ));
            }
        };
        match doc.get(&task_obj, "cancel_requested_by") {
            Ok(Some((automerge::Value::Scalar(v), _))) if v.as_str() == Some(me.as_str()) => {}
            _ => {
                return Err(format!(
                    "a cancel request on task {id} in another device's name"
                ));
            }
        }
    }
    let approvals = if t.decisions.is_empty() {
        automerge::ROOT
    } else {
        collection("approvals")?
    };
    for id in &t.decisions {
        let decision = (|| -> Result<Decision, String> {
            let a = object_at(doc, &approvals, id).ok_or("no such approval")?;
            let d = object_at(doc, &a, "decisions").ok_or("no decisions")?;
            let own = object_at(doc, &d, &me).ok_or("no decision of the phone's")?;
            Decision::hydrate_map(doc, &own).map_err(|e| e.to_string())
        })()
        .map_err(|e| format!("a decision on approval {id} that is not a valid decision: {e}"))?;
        if decision.signature.len() != 128
            || !decision.signature.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!(
                "a decision on approval {id} whose signature is not 64 bytes of hex"
            ));
        }
    }
    if t.push {
        match crate::schema::Workspace::push_subscription(doc, peer) {
            Ok(None) => {}
            Ok(Some(sub)) => sub
                .check()
                .map_err(|e| format!("a push subscription that is not valid: {e}"))?,
            Err(e) => {
                return Err(format!(
                    "a push subscription that is not valid: {}",
                    crate::schema::clip(&e.to_string(), 120)
                ));
            }
        }
    }
    Ok(())
}

fn object_at(doc: &Automerge, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((automerge::Value::Object(_), o))) => Some(o),
        _ => None,
    }
}

fn prop_str(p: &automerge::Prop) -> String {
    match p {
        automerge::Prop::Map(k) => k.clone(),
        automerge::Prop::Seq(i) => i.to_string(),
    }
}

/// Field names a phone may put on its own new objects (all scalars).
const MESSAGE_FIELDS: &[&str] = &["id", "author", "role", "text", "created_at", "task_id"];
const TASK_FIELDS: &[&str] = &[
    "id",
    "prompt",
    "created_by",
    "created_at",
    "received_at",
    "status",
    "claimed_by",
    "cancel_requested_by",
    "started_at",
    "finished_at",
    "result",
];
const DECISION_FIELDS: &[&str] = &["verdict", "at", "signature"];
const PUSH_FIELDS: &[&str] = &["endpoint", "p256dh", "auth"];

fn check_op(
    doc: &Automerge,
    deps: &[ChangeHash],
    me: &str,
    op: &automerge::legacy::Op,
    opid: ObjKey,
    new_objs: &mut std::collections::HashMap<ObjKey, NewObj>,
    touched: &mut Touched,
) -> Result<(), String> {
    use automerge::ObjType;
    use automerge::legacy::OpType;
    use automerge::legacy::{ElementId, Key, ObjectId};

    let key = match &op.key {
        Key::Map(k) => Some(k.to_string()),
        Key::Seq(_) => None,
    };
    let is_scalar = matches!(&op.action, OpType::Put(_));
    let denied = |what: &str| format!("{what}, which a phone may not write");

    let (target_key, path): (Option<ObjKey>, Vec<String>) = match &op.obj {
        ObjectId::Root => (None, vec![]),
        ObjectId::Id(id) => {
            let k = (id.counter(), id.actor().clone());
            if new_objs.contains_key(&k) {
                (Some(k), vec![])
            } else {
                let exid = doc
                    .import_obj(&format!("{}@{}", id.counter(), id.actor().to_hex_string()))
                    .map_err(|_| "a change to an object this desktop does not have".to_owned())?;
                doc.object_type(&exid)
                    .map_err(|_| "a change to an object this desktop does not have".to_owned())?;
                let path = doc
                    .parents(&exid)
                    .map_err(|e| format!("an object whose place is unknown: {e}"))?
                    .path()
                    .iter()
                    .map(|(_, p)| prop_str(p))
                    .collect();
                (None, path)
            }
        }
    };

    if let Some(k) = target_key {
        let field = key.clone().unwrap_or_default();
        let Some(obj) = new_objs.get(&k) else {
            return Err("internal: lost a new object".into());
        };
        let allowed = match obj {
            NewObj::Message => is_scalar && MESSAGE_FIELDS.contains(&field.as_str()),
            NewObj::Task(_) if field == "events" => {
                if matches!(op.action, OpType::Make(ObjType::List)) {
                    new_objs.insert(opid, NewObj::Events);
                    return Ok(());
                }
                false
            }
            NewObj::Task(_) => is_scalar && TASK_FIELDS.contains(&field.as_str()),
            NewObj::Events => false,
            NewObj::Decision => is_scalar && DECISION_FIELDS.contains(&field.as_str()),
            NewObj::Push => is_scalar && PUSH_FIELDS.contains(&field.as_str()),
        };
        if !allowed {
            let what = match obj {
                NewObj::Message => format!("a message field {field:?}"),
                NewObj::Task(id) => format!("tasks/{id}/{field} on a new task"),
                NewObj::Events => "task events".into(),
                NewObj::Decision => format!("a decision field {field:?}"),
                NewObj::Push => format!("a push subscription field {field:?}"),
            };
            return Err(denied(&what));
        }
        return Ok(());
    }

    let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
    let field = key.clone().unwrap_or_default();
    match (path_refs.as_slice(), &op.action) {
        (["messages"], OpType::Make(ObjType::Map)) if op.insert => {
            // A message goes after the conversation's last message as the phone saw it; the
            // head of a list that was not empty would put it before everything said so far.
            if matches!(op.key, Key::Seq(ElementId::Head)) {
                let list = crate::schema::root_obj(doc, "messages").map_err(|e| e.to_string())?;
                if doc.length_at(&list, deps) > 0 {
                    return Err(denied(
                        "a message inserted before the start of the conversation",
                    ));
                }
            }
            new_objs.insert(opid.clone(), NewObj::Message);
            touched.messages.insert((opid.0, opid.1.to_hex_string()));
            Ok(())
        }
        (["messages"], _) => Err(denied("an edit or deletion of existing messages")),
        (["tasks"], OpType::Make(ObjType::Map)) if key.is_some() => {
            let tasks = crate::schema::root_obj(doc, "tasks")
                .map_err(|_| "a task before the workspace exists".to_owned())?;
            if matches!(doc.get(&tasks, field.as_str()), Ok(Some(_))) {
                return Err(denied(&format!("a replacement of existing task {field}")));
            }
            new_objs.insert(opid, NewObj::Task(field.clone()));
            touched.new_tasks.insert(field);
            Ok(())
        }
        (["tasks", task], OpType::Put(_)) if field == "cancel_requested_by" => {
            touched.cancels.insert((*task).to_owned());
            Ok(())
        }
        (["approvals", approval, "decisions"], OpType::Make(ObjType::Map)) if field == me => {
            new_objs.insert(opid, NewObj::Decision);
            touched.decisions.insert((*approval).to_owned());
            Ok(())
        }
        // A phone may change its mind: it rewrites its own decision (the desktop acts on the
        // decisions it has when it resolves; a later change to a resolved request is ignored).
        (["approvals", approval, "decisions", who], OpType::Put(_))
            if *who == me && DECISION_FIELDS.contains(&field.as_str()) =>
        {
            touched.decisions.insert((*approval).to_owned());
            Ok(())
        }
        (["approvals", approval, "decisions"], _) => Err(denied(&format!(
            "a decision on approval {approval} under another device's key"
        ))),
        // Its own push subscription: made, cleared, or a field rewritten.
        (["devices", who], OpType::Make(ObjType::Map)) if *who == me && field == "push" => {
            new_objs.insert(opid, NewObj::Push);
            touched.push = true;
            Ok(())
        }
        (["devices", who], OpType::Delete) if *who == me && field == "push" => {
            touched.push = true;
            Ok(())
        }
        (["devices", who, "push"], OpType::Put(_))
            if *who == me && PUSH_FIELDS.contains(&field.as_str()) =>
        {
            touched.push = true;
            Ok(())
        }
        (["devices", who, ..], _) if *who != me => Err(denied(&format!(
            "devices/{}/{field}, the entry of another device",
            crate::schema::clip(who, 16)
        ))),
        _ => {
            let mut place = path.join("/");
            if !field.is_empty() {
                if !place.is_empty() {
                    place.push('/');
                }
                place.push_str(&field);
            }
            if place.is_empty() {
                place = "the document root".into();
            }
            Err(denied(&place))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Message, Role, SchemaError, Task, Workspace};
    use automerge::transaction::Transactable;

    fn setup() -> (DeviceId, DeviceId, Automerge, Automerge) {
        let desk = DeviceId::from_bytes([1; 32]);
        let phone = DeviceId::from_bytes([2; 32]);
        let mut d = crate::testing::desktop_doc(desk);
        d.transact::<_, _, SchemaError>(|tx| Workspace::add_task(tx, &task(desk, "t0")))
            .unwrap();
        let mut p = Automerge::new().with_actor(phone.actor_id());
        p.merge(&mut d.clone()).unwrap();
        (desk, phone, d, p)
    }

    fn task(by: DeviceId, id: &str) -> Task {
        Task::queued(id.into(), "list ~", &by, 1)
    }

    /// What the phone would send the desktop after `f`, as sync-message chunks.
    fn check(
        desk_doc: &Automerge,
        phone: DeviceId,
        phone_doc: &mut Automerge,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), SchemaError>,
    ) -> Result<(), Refusal> {
        let before = phone_doc.get_heads();
        phone_doc.transact::<_, _, SchemaError>(f).unwrap();
        let changes: Vec<Vec<u8>> = phone_doc
            .get_changes(&before)
            .into_iter()
            .map(|mut c| c.bytes().to_vec())
            .collect();
        vet(desk_doc, phone, &changes)
    }

    /// The desktop's whole pipeline on one message's chunks, on a copy of its document: read and
    /// check headers, check placement, apply, judge.
    fn vet(desk_doc: &Automerge, phone: DeviceId, chunks: &[Vec<u8>]) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            peer: phone,
            reason,
        };
        let mut d = desk_doc.clone();
        let incoming = crate::incoming::Incoming::read(
            &d,
            chunks.iter().map(|c| c.as_slice()),
            PhoneWriteRules.limits(),
            Vec::new(),
        )
        .map_err(|e| refuse(e.to_string()))?;
        // The phone can sign only its own changes: any other actor's stay unproven. (The
        // session splits a message into runs by author; one author per message here.)
        let author = match incoming
            .new_changes()
            .iter()
            .find(|c| !phone.owns_actor(c.actor_id()))
        {
            Some(c) => Author {
                peer: phone,
                device: DeviceId::from_actor(c.actor_id()),
                proven: false,
                standing: Standing::Paired,
            },
            None => Author::peer_itself(phone),
        };
        let touched = PhoneWriteRules.check(&author, &d, incoming.new_changes())?;
        incoming.apply(&mut d).map_err(|e| refuse(e.to_string()))?;
        PhoneWriteRules.judge(&author, &d, &touched)
    }

    /// Re-encodes `c` with its header or operations altered, as a crafted peer would send it.
    fn craft(c: &Change, f: impl FnOnce(&mut automerge::ExpandedChange)) -> Vec<u8> {
        let mut e = c.decode();
        f(&mut e);
        Change::from(e).raw_bytes().to_vec()
    }

    /// `n` user messages `m0…` by `phone`, one change each.
    fn append_messages(doc: &mut Automerge, phone: DeviceId, n: usize) {
        for i in 0..n {
            doc.transact::<_, _, SchemaError>(|tx| {
                Workspace::append_message(
                    tx,
                    &Message {
                        id: format!("m{i}").into(),
                        ..msg(phone, Role::User)
                    },
                )
            })
            .unwrap();
        }
    }

    fn msg(author: DeviceId, role: Role) -> Message {
        Message {
            id: "m".into(),
            author: author.to_string(),
            role,
            text: "hi".into(),
            created_at: 1,
            task_id: None,
        }
    }

    #[test]
    fn honest_phone_writes_are_accepted() {
        let (_, phone, d, mut p) = setup();
        check(&d, phone, &mut p.clone(), |tx| {
            Workspace::append_message(tx, &msg(phone, Role::User))
        })
        .unwrap();
        check(&d, phone, &mut p.clone(), |tx| {
            Workspace::add_task(tx, &task(phone, "t1"))
        })
        .unwrap();
        check(&d, phone, &mut p, |tx| {
            let tasks = tx.get(automerge::ROOT, "tasks")?.map(|(_, id)| id).unwrap();
            let t0 = tx.get(&tasks, "t0")?.map(|(_, id)| id).unwrap();
            tx.put(&t0, "cancel_requested_by", phone.to_string())?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn forged_writes_are_refused_with_a_reason() {
        let (desk, phone, d, p) = setup();
        let status = check(&d, phone, &mut p.clone(), |tx| {
            let tasks = tx.get(automerge::ROOT, "tasks")?.map(|(_, id)| id).unwrap();
            let t0 = tx.get(&tasks, "t0")?.map(|(_, id)| id).unwrap();
            tx.put(&t0, "status", "done")?;
            Ok(())
        })
        .unwrap_err();
        assert!(
            status.reason.contains("tasks/t0/status"),
            "{}",
            status.reason
        );
        let other_author = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::append_message(tx, &msg(desk, Role::User))
        });
        assert!(other_author.unwrap_err().reason.contains("author"));
        let agent = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::append_message(tx, &msg(phone, Role::Agent))
        });
        assert!(agent.unwrap_err().reason.contains("role"));
        // Only the desktop notes when it saw a task: a phone cannot order its task first.
        let early = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::add_task(
                tx,
                &Task {
                    received_at: Some(0),
                    ..task(phone, "t-early")
                },
            )
        });
        assert!(
            early
                .unwrap_err()
                .reason
                .contains("only the desktop writes"),
            "a phone's task with received_at"
        );
        let late = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::mark_received(tx, &"t0".into(), 5)
        });
        assert!(late.unwrap_err().reason.contains("tasks/t0/received_at"));
        let desktop = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_heartbeat(tx, 5)
        });
        assert!(desktop.unwrap_err().reason.contains("desktop/heartbeat_at"));
        // Where the desktop can be reached is the desktop's to say: a phone could otherwise
        // point every other phone at an address of its choosing.
        let addrs = crate::schema::DesktopAddrs {
            addrs: vec!["10.9.9.9:1".parse().unwrap()],
            relay: Some("https://relay.example/".into()),
        };
        let moved = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_desktop_addrs(tx, &addrs)
        });
        assert!(moved.unwrap_err().reason.contains("desktop/"));
        let relay_only = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_desktop_addrs(
                tx,
                &crate::schema::DesktopAddrs {
                    addrs: Vec::new(),
                    relay: addrs.relay.clone(),
                },
            )
        });
        assert!(relay_only.unwrap_err().reason.contains("desktop/relay"));
        let mut forged = p.fork().with_actor(desk.actor_id());
        let actor = check(&d, phone, &mut forged, |tx| {
            Workspace::append_message(tx, &msg(desk, Role::User))
        });
        assert!(actor.unwrap_err().reason.contains("without its signature"));
    }

    #[test]
    fn a_forged_change_inside_a_whole_document_is_refused() {
        // A phone whose offline writes outnumber the document sends its whole document; every
        // change in it that the desktop lacks is vetted like a single one.
        let (desk, phone, d, p) = setup();
        let mut honest = p.clone();
        append_messages(&mut honest, phone, 5);
        vet(&d, phone, &[honest.save()]).unwrap();
        let mut forged = honest.fork().with_actor(desk.actor_id());
        forged
            .transact::<_, _, SchemaError>(|tx| Workspace::set_heartbeat(tx, 9))
            .unwrap();
        let mut sent = honest.clone();
        sent.merge(&mut forged).unwrap();
        let refusal = vet(&d, phone, &[sent.save()]).unwrap_err();
        assert!(
            refusal.reason.contains("without its signature"),
            "{}",
            refusal.reason
        );
    }

    type WithApproval = (
        DeviceId,
        DeviceId,
        Automerge,
        Automerge,
        crate::approval::Approval,
        crate::DeviceKey,
        crate::approval::Decision,
    );

    /// The desktop's document with approval `ap1`, the phone's copy, and the phone's signed
    /// approve.
    fn with_an_approval() -> WithApproval {
        use crate::approval::{Approval, Risk, Verdict};
        let (desk, phone, mut d, _) = setup();
        let req = Approval::new(
            "ap1".into(),
            "t0".into(),
            "trash",
            "{}",
            "Move x to the trash",
            Risk::Medium,
            1,
            100,
            &desk,
        );
        d.transact::<_, _, SchemaError>(|tx| Workspace::put_approval(tx, &req))
            .unwrap();
        let mut p = Automerge::new().with_actor(phone.actor_id());
        p.merge(&mut d.clone()).unwrap();
        let key = crate::DeviceKey::from_secret_bytes([9; 32]);
        let decision = req.sign(&key, &desk, Verdict::Approve, 5);
        (desk, phone, d, p, req, key, decision)
    }

    #[test]
    fn decisions_only_under_the_phones_own_key() {
        use crate::approval::{Resolution, Verdict};
        let (desk, phone, d, mut p, req, key, decision) = with_an_approval();
        check(&d, phone, &mut p.clone(), |tx| {
            Workspace::put_decision(tx, &req.id, &phone, &decision)
        })
        .unwrap();
        // Changing its mind rewrites its own decision: allowed.
        let mut decided = p.clone();
        decided
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::put_decision(tx, &req.id, &phone, &decision)
            })
            .unwrap();
        let mut d2 = d.clone();
        d2.merge(&mut decided.clone()).unwrap();
        let deny = req.sign(&key, &desk, Verdict::Deny, 6);
        check(&d2, phone, &mut decided, |tx| {
            Workspace::put_decision(tx, &req.id, &phone, &deny)
        })
        .unwrap();
        let other = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::put_decision(tx, &req.id, &desk, &decision)
        });
        assert!(other.unwrap_err().reason.contains("another device's key"));
        let resolution = check(&d, phone, &mut p, |tx| {
            Workspace::set_resolution(
                tx,
                &req.id,
                &Resolution {
                    verdict: Verdict::Approve,
                    by: phone.to_string(),
                    at: 5,
                    reason: String::new(),
                    counted: None,
                },
            )
        });
        assert!(
            resolution
                .unwrap_err()
                .reason
                .contains("approvals/ap1/resolution")
        );
    }

    /// The phone writes one message; returns the desktop's document, the phone's, and the change.
    fn one_message(text: &str) -> (DeviceId, DeviceId, Automerge, Automerge, Change) {
        let (desk, phone, d, mut p) = setup();
        let before = p.get_heads();
        p.transact::<_, _, SchemaError>(|tx| {
            Workspace::append_message(
                tx,
                &Message {
                    text: text.into(),
                    ..msg(phone, Role::User)
                },
            )
        })
        .unwrap();
        let c = p.get_changes(&before).remove(0);
        (desk, phone, d, p, c)
    }

    #[test]
    fn red_team_1_a_second_change_below_its_dependency_is_refused_and_harmless() {
        // Change 1 creates a message as the phone; change 2, with start_op 1 (below change 1's
        // operations), re-puts `author` on that message with another device's id.
        let (desk, phone, d, _, c1) = one_message("hi");
        let msg_obj = {
            let e = c1.decode();
            let i = e
                .operations
                .iter()
                .position(|op| op.insert)
                .expect("the insert of the message map");
            automerge::legacy::OpId::new(e.start_op.get() + i as u64, &e.actor_id)
        };
        let c2 = craft(&c1, |e| {
            e.seq = 2;
            e.deps = vec![c1.hash()];
            e.start_op = std::num::NonZeroU64::new(1).unwrap();
            e.operations = vec![automerge::legacy::Op {
                action: automerge::legacy::OpType::Put(desk.to_string().into()),
                obj: automerge::legacy::ObjectId::Id(msg_obj.clone()),
                key: automerge::legacy::Key::Map("author".into()),
                pred: automerge::legacy::SortedVec::new(),
                insert: false,
            }];
        });
        let refusal = vet(&d, phone, &[c1.raw_bytes().to_vec(), c2]).unwrap_err();
        assert!(
            refusal.reason.contains("first operation counter"),
            "{}",
            refusal.reason
        );
        // The desktop's document is untouched by the attempt and still saves and loads.
        assert!(Automerge::load(&d.save()).is_ok());
    }

    #[test]
    fn red_team_1_a_bad_start_op_alone_is_refused() {
        let (_, phone, d, _, c1) = one_message("honest text");
        let low = craft(&c1, |e| e.start_op = std::num::NonZeroU64::new(1).unwrap());
        let r = vet(&d, phone, &[low]).unwrap_err();
        assert!(r.reason.contains("inconsistent"), "{}", r.reason);
        // A sequence number that skips, or a change that does not descend from the author's
        // previous one, is refused the same way.
        let skip = craft(&c1, |e| e.seq = 3);
        let r = vet(&d, phone, &[skip]).unwrap_err();
        assert!(r.reason.contains("number 3 of its author"), "{}", r.reason);
        vet(&d, phone, &[c1.raw_bytes().to_vec()]).unwrap();
    }

    #[test]
    fn a_change_that_jumps_its_operation_counters_ahead_is_refused() {
        // Red team 2 of the fixes: an honest cancel request whose first operation counter sits
        // just below 2^32. It passed the header checks, and the desktop's next write of its own
        // panicked inside Automerge (its counters are 32-bit internally), again after a restart.
        let (desk, phone, d, mut p) = setup();
        let before = p.get_heads();
        p.transact::<_, _, SchemaError>(|tx| {
            let tasks = tx.get(automerge::ROOT, "tasks")?.map(|(_, id)| id).unwrap();
            let t0 = tx.get(&tasks, "t0")?.map(|(_, id)| id).unwrap();
            tx.put(&t0, "cancel_requested_by", phone.to_string())?;
            Ok(())
        })
        .unwrap();
        let c = p.get_changes(&before).remove(0);
        for start in [
            u64::from(u32::MAX),
            u64::from(u32::MAX / 4),
            c.start_op().get() + 1,
        ] {
            let jump = craft(&c, |e| {
                e.start_op = std::num::NonZeroU64::new(start).unwrap()
            });
            let r = vet(&d, phone, &[jump]).unwrap_err();
            assert!(r.reason.contains("operation counter"), "{}", r.reason);
        }
        // The honest change is accepted, and the desktop writes after it.
        let mut d2 = d.clone();
        let incoming = crate::incoming::Incoming::read(
            &d2,
            [c.raw_bytes()],
            PhoneWriteRules.limits(),
            Vec::new(),
        )
        .unwrap();
        incoming.apply(&mut d2).unwrap();
        d2.transact::<_, _, SchemaError>(|tx| Workspace::add_task(tx, &task(desk, "t9")))
            .unwrap();
        assert!(Automerge::load(&d2.save()).is_ok());
    }

    #[test]
    fn red_team_6_wrong_types_are_refused() {
        let (_, phone, d, p) = setup();
        let r = check(&d, phone, &mut p.clone(), |tx| {
            let list = tx
                .get(automerge::ROOT, "messages")?
                .map(|(_, id)| id)
                .unwrap();
            let at = tx.length(&list);
            let m = tx.insert_object(&list, at, automerge::ObjType::Map)?;
            tx.put(&m, "id", "m9")?;
            tx.put(&m, "author", phone.to_string())?;
            tx.put(&m, "role", "user")?;
            tx.put(&m, "text", 42)?;
            tx.put(&m, "created_at", 1)?;
            Ok(())
        })
        .unwrap_err();
        assert!(r.reason.contains("not a valid message"), "{}", r.reason);
    }

    #[test]
    fn red_team_6_a_decision_that_is_not_a_verdict_is_refused() {
        let (_, phone, d, mut p, req, _, decision) = with_an_approval();
        let r = check(&d, phone, &mut p, |tx| {
            Workspace::put_decision(tx, &req.id, &phone, &decision)?;
            let a = tx
                .get(automerge::ROOT, "approvals")?
                .map(|(_, id)| id)
                .unwrap();
            let a = tx.get(&a, "ap1")?.map(|(_, id)| id).unwrap();
            let ds = tx.get(&a, "decisions")?.map(|(_, id)| id).unwrap();
            let mine = tx.get(&ds, phone.to_string())?.map(|(_, id)| id).unwrap();
            tx.put(&mine, "verdict", "maybe")?;
            Ok(())
        })
        .unwrap_err();
        assert!(r.reason.contains("not a valid decision"), "{}", r.reason);
    }

    #[test]
    fn red_team_7_oversized_text_is_refused() {
        let (_, phone, d, _, c) = one_message(&"x".repeat(MAX_TEXT_BYTES + 1));
        let r = vet(&d, phone, &[c.raw_bytes().to_vec()]).unwrap_err();
        assert!(r.reason.contains("the limit is"), "{}", r.reason);
        let (_, phone, d, _, c) = one_message(&"x".repeat(MAX_TEXT_BYTES));
        vet(&d, phone, &[c.raw_bytes().to_vec()]).unwrap();
    }

    #[test]
    fn red_team_10_a_message_at_the_head_of_a_conversation_is_refused() {
        let (_, phone, mut d, p) = setup();
        let mut first = p.clone();
        first
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::append_message(tx, &msg(phone, Role::User))
            })
            .unwrap();
        d.merge(&mut first.clone()).unwrap();
        let r = check(&d, phone, &mut first, |tx| {
            let list = tx
                .get(automerge::ROOT, "messages")?
                .map(|(_, id)| id)
                .unwrap();
            autosurgeon::reconcile_insert(
                tx,
                list,
                0,
                &Message {
                    id: "early".into(),
                    ..msg(phone, Role::User)
                },
            )?;
            Ok(())
        })
        .unwrap_err();
        assert!(r.reason.contains("before the start"), "{}", r.reason);
    }

    /// [`setup`] with display entries for the phone and a second phone (`[3; 32]`), as the
    /// desktop writes them at pairing.
    fn setup_with_entries() -> (DeviceId, DeviceId, Automerge, Automerge) {
        let (desk, phone, mut d, _) = setup();
        d.transact::<_, _, SchemaError>(|tx| {
            for id in [phone, DeviceId::from_bytes([3; 32])] {
                let entry = crate::schema::DeviceEntry {
                    name: "p".into(),
                    platform: "android".into(),
                    paired_at: 1,
                    revoked_at: None,
                };
                Workspace::put_device(tx, &id, &entry)?;
            }
            Ok(())
        })
        .unwrap();
        let mut p = Automerge::new().with_actor(phone.actor_id());
        p.merge(&mut d.clone()).unwrap();
        (desk, phone, d, p)
    }

    // RFC 8291 Appendix A's user-agent key and secret: a real point and 16 bytes.
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

    fn push_sub(endpoint: &str) -> crate::PushSubscription {
        crate::PushSubscription {
            endpoint: endpoint.into(),
            p256dh: UA_PUBLIC.into(),
            auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
        }
    }

    /// `devices/<id>` of the document being written.
    fn device_entry(
        tx: &mut automerge::transaction::Transaction<'_>,
        id: &DeviceId,
    ) -> Result<automerge::ObjId, automerge::AutomergeError> {
        let devices = tx
            .get(automerge::ROOT, "devices")?
            .map(|(_, id)| id)
            .unwrap();
        Ok(tx.get(&devices, id.to_string())?.map(|(_, id)| id).unwrap())
    }

    #[test]
    fn a_phone_writes_replaces_and_clears_its_own_push_subscription() {
        let (_, phone, d, mut p) = setup_with_entries();
        let first = push_sub("https://up.example.org/up/abc");
        check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_push_subscription(tx, &phone, &first)
        })
        .unwrap();
        // Replacing it (fields rewritten in place) and clearing it, against a desktop that
        // already holds the first one.
        p.transact::<_, _, SchemaError>(|tx| Workspace::set_push_subscription(tx, &phone, &first))
            .unwrap();
        let mut d2 = d.clone();
        d2.merge(&mut p.clone()).unwrap();
        assert_eq!(
            Workspace::push_subscription(&d2, &phone).unwrap(),
            Some(first.clone())
        );
        // The desktop renaming the device rewrites its own fields only: the subscription stays.
        d2.transact::<_, _, SchemaError>(|tx| {
            let entry = crate::schema::DeviceEntry {
                name: "renamed".into(),
                platform: "android".into(),
                paired_at: 1,
                revoked_at: Some(2),
            };
            Workspace::put_device(tx, &phone, &entry)
        })
        .unwrap();
        assert_eq!(
            Workspace::push_subscription(&d2, &phone).unwrap(),
            Some(first.clone())
        );
        // Readers of the device entry (older ones too) read it with the extra field.
        let read = Workspace::read(&d2).unwrap();
        assert_eq!(read.devices[&phone.to_string()].name, "renamed");
        assert!(read.skipped.is_empty(), "{:?}", read.skipped);
        check(&d2, phone, &mut p.clone(), |tx| {
            Workspace::set_push_subscription(tx, &phone, &push_sub("http://127.0.0.1:9/up"))
        })
        .unwrap();
        check(&d2, phone, &mut p, |tx| {
            Workspace::clear_push_subscription(tx, &phone)
        })
        .unwrap();
    }

    #[test]
    fn bad_push_subscriptions_are_refused_with_their_reason() {
        let (_, phone, d, p) = setup_with_entries();
        let refused = |sub: crate::PushSubscription| {
            check(&d, phone, &mut p.clone(), |tx| {
                Workspace::set_push_subscription(tx, &phone, &sub)
            })
            .unwrap_err()
            .reason
        };
        let short_key = refused(crate::PushSubscription {
            p256dh: UA_PUBLIC[..43].into(),
            ..push_sub("https://up.example.org/x")
        });
        assert!(
            short_key.contains("p256dh decodes to 32 bytes (it must be 65)"),
            "{short_key}"
        );
        let short_auth = refused(crate::PushSubscription {
            auth: "BTBZMqHH6r4".into(),
            ..push_sub("https://up.example.org/x")
        });
        assert!(short_auth.contains("auth decodes to"), "{short_auth}");
        let plain = refused(push_sub("http://up.example.org/x"));
        assert!(
            plain.contains("must be an https:// URL") && !plain.contains("/x"),
            "{plain}"
        );
        let lan = refused(push_sub("http://192.168.1.2/x"));
        assert!(lan.contains("https://"), "{lan}");
        // Into another phone's entry, whatever the subscription.
        let other = DeviceId::from_bytes([3; 32]);
        let r = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_push_subscription(tx, &other, &push_sub("https://up.example.org/x"))
        })
        .unwrap_err()
        .reason;
        assert!(r.contains("the entry of another device"), "{r}");
        let r = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::clear_push_subscription(tx, &other)
        });
        // Nothing to clear there: no operation, nothing refused; with one there, refused.
        assert!(r.is_ok());
        // Other fields of its own entry stay the desktop's.
        let r = check(&d, phone, &mut p.clone(), |tx| {
            let mine = device_entry(tx, &phone)?;
            tx.put(&mine, "name", "renamed")?;
            Ok(())
        })
        .unwrap_err()
        .reason;
        assert!(r.contains("/name, which a phone may not write"), "{r}");
        // A field the subscription does not have.
        let r = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_push_subscription(tx, &phone, &push_sub("https://up.example.org/x"))?;
            let mine = device_entry(tx, &phone)?;
            let push = tx.get(&mine, "push")?.map(|(_, id)| id).unwrap();
            tx.put(&push, "vapid", "x")?;
            Ok(())
        })
        .unwrap_err()
        .reason;
        assert!(r.contains("push subscription field"), "{r}");
    }

    #[test]
    fn clearing_another_phones_push_subscription_is_refused() {
        let (_, phone, mut d, _) = setup_with_entries();
        let other = DeviceId::from_bytes([3; 32]);
        let mut o = Automerge::new().with_actor(other.actor_id());
        o.merge(&mut d.clone()).unwrap();
        o.transact::<_, _, SchemaError>(|tx| {
            Workspace::set_push_subscription(tx, &other, &push_sub("https://up.example.org/o"))
        })
        .unwrap();
        d.merge(&mut o).unwrap();
        let mut p = Automerge::new().with_actor(phone.actor_id());
        p.merge(&mut d.clone()).unwrap();
        let r = check(&d, phone, &mut p, |tx| {
            Workspace::clear_push_subscription(tx, &other)
        })
        .unwrap_err()
        .reason;
        assert!(r.contains("the entry of another device"), "{r}");
    }

    #[test]
    fn a_cancel_in_another_devices_name_is_refused() {
        let (desk, phone, d, p) = setup();
        let r = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::request_cancel(tx, &"t0".into(), &desk)
        })
        .unwrap_err();
        assert!(r.reason.contains("another device's name"), "{}", r.reason);
    }

    mod mutated {
        use super::*;
        use proptest::prelude::*;

        /// An honest phone's message, task, cancel and decision, as the chunks it would send,
        /// one per change, and as a whole document.
        fn honest_material() -> (DeviceId, Automerge, Vec<Vec<u8>>, Vec<u8>) {
            let (_, phone, d, mut p) = setup();
            let before = p.get_heads();
            append_messages(&mut p, phone, 3);
            p.transact::<_, _, SchemaError>(|tx| Workspace::add_task(tx, &task(phone, "t1")))
                .unwrap();
            p.transact::<_, _, SchemaError>(|tx| {
                Workspace::request_cancel(tx, &"t0".into(), &phone)
            })
            .unwrap();
            let chunks = p
                .get_changes(&before)
                .into_iter()
                .map(|mut c| c.bytes().to_vec())
                .collect();
            (phone, d, chunks, p.save())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// Whatever a peer does to honest bytes — flip, cut, duplicate, reorder — the
            /// desktop's pipeline answers with a value, never a panic, and its document still
            /// saves and loads afterwards.
            #[test]
            fn mutated_changes_never_panic_the_desktop(
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                cut in proptest::option::of(any::<prop::sample::Index>()),
                pick in proptest::collection::vec(any::<prop::sample::Index>(), 1..6),
                whole in any::<bool>(),
            ) {
                let (phone, d, chunks, saved) = honest_material();
                let mut sent: Vec<Vec<u8>> = if whole {
                    vec![saved]
                } else {
                    pick.iter().map(|i| i.get(&chunks).clone()).collect()
                };
                let target = sent.len() - 1;
                let bytes = &mut sent[target];
                for (i, b) in &flips {
                    let at = i.index(bytes.len());
                    bytes[at] ^= b;
                }
                if let Some(c) = cut {
                    let at = c.index(bytes.len());
                    bytes.truncate(at);
                }
                let mut after = d.clone();
                let _ = vet(&after, phone, &sent);
                // `vet` works on a copy; apply for real what it accepts, like a desktop would.
                if vet(&d, phone, &sent).is_ok() {
                    let incoming = crate::incoming::Incoming::read(
                        &after,
                        sent.iter().map(|c| c.as_slice()),
                        PhoneWriteRules.limits(),
                        Vec::new(),
                    ).unwrap();
                    incoming.apply(&mut after).unwrap();
                }
                prop_assert!(Automerge::load(&after.save()).is_ok());
            }
        }
    }
}
