//! The hook through which a node vets a peer's changes before they enter its document.

use automerge::{Automerge, Change, ReadDoc};

use crate::DeviceId;

/// Why incoming changes were refused. The session that received them is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused changes from {peer}: {reason}")]
pub struct Refusal {
    /// The connected peer that sent them.
    pub peer: DeviceId,
    /// What was wrong, for the log and the device list.
    pub reason: String,
}

/// Decides whether a peer's new changes may enter the document.
///
/// `new` are the changes of one sync message that the receiver has not seen yet, in causal order
/// (see [`crate::incoming::Incoming`]); the document is the receiver's state before they are
/// applied.
pub trait ChangeFilter: Send + Sync {
    /// `Ok(())` to accept the whole message, `Err` to refuse it (nothing is applied).
    fn check(&self, peer: &DeviceId, doc: &Automerge, new: &[Change]) -> Result<(), Refusal>;
}

/// Accepts everything: phones trust what their desktop relays.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl ChangeFilter for AcceptAll {
    fn check(&self, _: &DeviceId, _: &Automerge, _: &[Change]) -> Result<(), Refusal> {
        Ok(())
    }
}

/// The desktop's rules for what a phone may write (DESIGN.md, "Identity and trust").
///
/// Every change the desktop does not already have must be authored by the connected phone's own
/// actor and may only: add a user message authored by itself, add a queued task created by
/// itself, set `cancel_requested_by` to itself on an existing task, and add its own decision to
/// an approval's `decisions`. Anything else — task status, events, results, another device's
/// decision, the desktop section, deleting or editing messages — refuses the whole sync message.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhoneWriteRules;

#[derive(Clone, Debug)]
enum NewObj {
    Message {
        author_ok: bool,
        role_ok: bool,
    },
    Task {
        id: String,
        creator_ok: bool,
        status_ok: bool,
    },
    Events,
    Decision,
}

type ObjKey = (u64, automerge::ActorId);

impl ChangeFilter for PhoneWriteRules {
    fn check(&self, peer: &DeviceId, doc: &Automerge, changes: &[Change]) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            peer: *peer,
            reason,
        };
        let actor = peer.actor_id();
        let me = peer.to_string();
        let mut new_objs: std::collections::HashMap<ObjKey, NewObj> = Default::default();
        for change in changes {
            if change.actor_id() != &actor {
                let who = DeviceId::from_actor(change.actor_id())
                    .map(|d| d.short())
                    .unwrap_or_else(|| change.actor_id().to_hex_string());
                return Err(refuse(format!(
                    "a change written under another device's identity ({who}); a phone may only send its own changes"
                )));
            }
            let expanded = change.decode();
            let start = expanded.start_op.get();
            for (i, op) in expanded.operations.iter().enumerate() {
                let opid = (start + i as u64, expanded.actor_id.clone());
                check_op(doc, &me, op, opid, &mut new_objs).map_err(refuse)?;
            }
        }
        for obj in new_objs.values() {
            match obj {
                NewObj::Message {
                    author_ok: false, ..
                } => {
                    return Err(refuse(
                        "a message whose author is not the sending phone".into(),
                    ));
                }
                NewObj::Message { role_ok: false, .. } => {
                    return Err(refuse("a message whose role is not \"user\"".into()));
                }
                NewObj::Task {
                    id,
                    creator_ok: false,
                    ..
                } => {
                    return Err(refuse(format!(
                        "task {id} is not created_by the sending phone"
                    )));
                }
                NewObj::Task {
                    id,
                    status_ok: false,
                    ..
                } => {
                    return Err(refuse(format!("task {id} does not start as \"queued\"")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn prop_str(p: &automerge::Prop) -> String {
    match p {
        automerge::Prop::Map(k) => k.clone(),
        automerge::Prop::Seq(i) => i.to_string(),
    }
}

fn check_op(
    doc: &Automerge,
    me: &str,
    op: &automerge::legacy::Op,
    opid: ObjKey,
    new_objs: &mut std::collections::HashMap<ObjKey, NewObj>,
) -> Result<(), String> {
    use automerge::legacy::OpType;
    use automerge::legacy::{Key, ObjectId};
    use automerge::{ObjType, ScalarValue};

    let key = match &op.key {
        Key::Map(k) => Some(k.to_string()),
        Key::Seq(_) => None,
    };
    let put_str =
        |want: &str| matches!(&op.action, OpType::Put(ScalarValue::Str(s)) if s.as_str() == want);
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
        let Some(obj) = new_objs.get_mut(&k) else {
            return Err("internal: lost a new object".into());
        };
        match obj {
            NewObj::Message { author_ok, role_ok } => match field.as_str() {
                "author" if is_scalar => *author_ok = put_str(me),
                "role" if is_scalar => *role_ok = put_str("user"),
                "id" | "text" | "created_at" | "task_id" if is_scalar => {}
                _ => return Err(denied(&format!("a message field {field:?}"))),
            },
            NewObj::Task {
                id,
                creator_ok,
                status_ok,
            } => match field.as_str() {
                "created_by" if is_scalar => *creator_ok = put_str(me),
                "status" if is_scalar => *status_ok = put_str("queued"),
                "id" if is_scalar => {
                    if !put_str(id) {
                        return Err(format!("task {id} carries a different id inside"));
                    }
                }
                "prompt" | "created_at" if is_scalar => {}
                "claimed_by" | "cancel_requested_by" | "started_at" | "finished_at" | "result"
                    if matches!(op.action, OpType::Put(ScalarValue::Null)) => {}
                "events" if matches!(op.action, OpType::Make(ObjType::List)) => {
                    new_objs.insert(opid, NewObj::Events);
                }
                _ => return Err(denied(&format!("tasks/{id}/{field} on a new task"))),
            },
            NewObj::Events => return Err(denied("task events")),
            NewObj::Decision => match field.as_str() {
                "verdict" | "at" | "signature" if is_scalar => {}
                _ => return Err(denied(&format!("a decision field {field:?}"))),
            },
        }
        return Ok(());
    }

    let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
    let field = key.clone().unwrap_or_default();
    match (path_refs.as_slice(), &op.action) {
        (["messages"], OpType::Make(ObjType::Map)) if op.insert => {
            new_objs.insert(
                opid,
                NewObj::Message {
                    author_ok: false,
                    role_ok: false,
                },
            );
            Ok(())
        }
        (["messages"], _) => Err(denied("an edit or deletion of existing messages")),
        (["tasks"], OpType::Make(ObjType::Map)) if key.is_some() => {
            let tasks = match doc.get(automerge::ROOT, "tasks") {
                Ok(Some((_, id))) => id,
                _ => return Err("a task before the workspace exists".into()),
            };
            if matches!(doc.get(&tasks, field.as_str()), Ok(Some(_))) {
                return Err(denied(&format!("a replacement of existing task {field}")));
            }
            new_objs.insert(
                opid,
                NewObj::Task {
                    id: field,
                    creator_ok: false,
                    status_ok: false,
                },
            );
            Ok(())
        }
        (["tasks", task], _) if field == "cancel_requested_by" => {
            if put_str(me) {
                Ok(())
            } else {
                Err(format!(
                    "a cancel request on task {task} in another device's name"
                ))
            }
        }
        (["approvals", _, "decisions"], OpType::Make(ObjType::Map)) if field == me => {
            new_objs.insert(opid, NewObj::Decision);
            Ok(())
        }
        // A phone may change its mind: it rewrites its own decision (the desktop acts on the
        // decisions it has when it resolves; a later change to a resolved request is ignored).
        (["approvals", _, "decisions", who], OpType::Put(_))
            if *who == me && matches!(field.as_str(), "verdict" | "at" | "signature") =>
        {
            Ok(())
        }
        (["approvals", approval, "decisions"], _) => Err(denied(&format!(
            "a decision on approval {approval} under another device's key"
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
    use automerge::sync::SyncDoc;
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
        let incoming =
            crate::incoming::Incoming::read(desk_doc, changes.iter().map(|c| c.as_slice()))
                .expect("readable changes");
        let _ = desk_doc.generate_sync_message(&mut automerge::sync::State::new());
        PhoneWriteRules.check(&phone, desk_doc, incoming.new_changes())
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
        let desktop = check(&d, phone, &mut p.clone(), |tx| {
            Workspace::set_heartbeat(tx, 5)
        });
        assert!(desktop.unwrap_err().reason.contains("desktop/heartbeat_at"));
        let mut forged = p.fork().with_actor(desk.actor_id());
        let actor = check(&d, phone, &mut forged, |tx| {
            Workspace::append_message(tx, &msg(desk, Role::User))
        });
        assert!(
            actor
                .unwrap_err()
                .reason
                .contains("another device's identity")
        );
    }

    #[test]
    fn a_forged_change_inside_a_whole_document_is_refused() {
        // A phone whose offline writes outnumber the document sends its whole document; every
        // change in it that the desktop lacks is vetted like a single one.
        let (desk, phone, d, p) = setup();
        let mut honest = p.clone();
        for i in 0..5 {
            honest
                .transact::<_, _, SchemaError>(|tx| {
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
        let incoming = crate::incoming::Incoming::read(&d, [honest.save().as_slice()]).unwrap();
        assert_eq!(incoming.new_changes().len(), 5);
        PhoneWriteRules
            .check(&phone, &d, incoming.new_changes())
            .unwrap();
        let mut forged = honest.fork().with_actor(desk.actor_id());
        forged
            .transact::<_, _, SchemaError>(|tx| Workspace::set_heartbeat(tx, 9))
            .unwrap();
        let mut sent = honest.clone();
        sent.merge(&mut forged).unwrap();
        let incoming = crate::incoming::Incoming::read(&d, [sent.save().as_slice()]).unwrap();
        let refusal = PhoneWriteRules
            .check(&phone, &d, incoming.new_changes())
            .unwrap_err();
        assert!(
            refusal.reason.contains("another device's identity"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn decisions_only_under_the_phones_own_key() {
        use crate::approval::{Approval, Resolution, Risk, Verdict};
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
}
