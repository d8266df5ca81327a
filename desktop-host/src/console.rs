//! What `deskhand serve` prints of the conversation as it arrives.
//!
//! A message can land anywhere in the list: an offline phone's message merges before the
//! desktop's later ones, and a crafted phone can insert at position 0. So the feed never indexes
//! by list position: it reads the changes since it last looked, finds the message maps they
//! inserted into `messages`, and prints each message once, by id, wherever it landed.
//! Everything printed passes through [`deskhand_core::terminal`].

use std::collections::HashSet;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc, Value};
use deskhand_core::schema::Message;
use deskhand_core::terminal;

/// Lines of a message's text the console shows; the rest is counted.
const SHOWN_LINES: usize = 4;

/// The console's view of the conversation: which messages it has printed.
#[derive(Debug)]
pub struct ConversationFeed {
    last_heads: Vec<ChangeHash>,
    printed: HashSet<String>,
}

impl ConversationFeed {
    /// A feed that starts after what `doc` holds now (history is not printed).
    pub fn new(doc: &Automerge) -> Self {
        Self {
            last_heads: doc.get_heads(),
            printed: HashSet::new(),
        }
    }

    /// A feed of a document that appeared after the start (a new week's conversation): every
    /// message in it is new.
    pub fn from_start() -> Self {
        Self {
            last_heads: Vec::new(),
            printed: HashSet::new(),
        }
    }

    /// The messages added to `doc` since the last call, in conversation order, each returned
    /// once over the feed's life (by message id), wherever in the list it was inserted. A
    /// message whose fields do not read as a message is skipped with a warning.
    pub fn new_messages(&mut self, doc: &Automerge) -> Vec<Message> {
        let changes = doc.get_changes(&self.last_heads);
        self.last_heads = doc.get_heads();
        let list = match doc.get(ROOT, "messages") {
            Ok(Some((Value::Object(ObjType::List), id))) => id,
            _ => return Vec::new(),
        };
        let list_id = list.to_string();
        let mut found: Vec<(usize, Message)> = Vec::new();
        for change in &changes {
            let ex = change.decode();
            let actor = ex.actor_id.to_hex_string();
            let start = ex.start_op.get();
            for (i, op) in ex.operations.iter().enumerate() {
                let into_list = match &op.obj {
                    ObjectId::Id(id) => {
                        format!("{}@{}", id.counter(), id.actor().to_hex_string()) == list_id
                    }
                    ObjectId::Root => false,
                };
                if !(into_list
                    && op.insert
                    && matches!(op.key, Key::Seq(_))
                    && matches!(op.action, OpType::Make(ObjType::Map)))
                {
                    continue;
                }
                let obj = format!("{}@{actor}", start + i as u64);
                let Ok(obj) = doc.import_obj(&obj) else {
                    continue;
                };
                match read_message(doc, &obj) {
                    Some((index, m)) => {
                        if self.printed.insert(m.id.to_string()) {
                            found.push((index, m));
                        }
                    }
                    None => tracing::warn!(
                        "a message in the conversation could not be read (wrong shape); not shown"
                    ),
                }
            }
        }
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().map(|(_, m)| m).collect()
    }
}

/// The message at `obj` (a map in `messages`) and its position now.
fn read_message(doc: &Automerge, obj: &ObjId) -> Option<(usize, Message)> {
    let path = doc.parents(obj).ok()?.path();
    let (list, Prop::Seq(index)) = path.last().cloned()? else {
        return None;
    };
    let m = autosurgeon::hydrate_prop(doc, &list, index).ok()?;
    Some((index, m))
}

/// One message as the console prints it: `[role] author: text`, the author's first 10
/// characters, at most [`SHOWN_LINES`] lines of text with every continuation line marked, and
/// every character a peer could use to fake output escaped.
pub fn message_line(m: &Message) -> String {
    let author: String = m.author.chars().take(10).collect();
    let head = format!("[{}] {}: ", m.role, terminal::line(&author));
    let total = m.text.split('\n').count();
    let mut text: String = m
        .text
        .split('\n')
        .take(SHOWN_LINES)
        .collect::<Vec<_>>()
        .join("\n");
    if total > SHOWN_LINES {
        text.push_str(&format!("\n… ({} more lines)", total - SHOWN_LINES));
    }
    format!("{head}{}", terminal::block(&text, "    │ "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use deskhand_core::schema::{DesktopInfo, ExecutorState, Role, SchemaError, Workspace};
    use deskhand_core::{DeviceId, MessageId};

    fn msg(id: &str, author: &DeviceId, text: &str) -> Message {
        Message {
            id: MessageId::from(id),
            author: author.to_string(),
            role: Role::User,
            text: text.into(),
            created_at: 1,
            task_id: None,
        }
    }

    fn desktop_doc(desk: &DeviceId) -> Automerge {
        let mut doc = Automerge::new().with_actor(desk.actor_id());
        doc.transact::<_, _, SchemaError>(|tx| {
            Workspace::init(
                tx,
                &DesktopInfo {
                    id: desk.to_string(),
                    name: "d".into(),
                    os: "linux".into(),
                    heartbeat_at: 0,
                    executor: ExecutorState::Idle,
                },
            )?;
            for i in 0..3 {
                Workspace::append_message(tx, &msg(&format!("old{i}"), desk, &format!("old {i}")))?;
            }
            Ok(())
        })
        .expect("document");
        doc
    }

    /// Inserts `m` at `index` of the conversation, as a crafted phone would.
    fn insert_at(doc: &mut Automerge, index: usize, m: &Message) {
        doc.transact::<_, _, SchemaError>(|tx| {
            let list = tx
                .get(ROOT, "messages")?
                .map(|(_, id)| id)
                .ok_or(SchemaError::Uninitialised)?;
            autosurgeon::reconcile_insert(tx, list, index, m)?;
            Ok(())
        })
        .expect("insert");
    }

    #[test]
    fn a_message_inserted_at_the_front_is_printed_once_and_nothing_old_again() {
        let desk = DeviceId::from_bytes([1; 32]);
        let phone = DeviceId::from_bytes([2; 32]);
        let mut doc = desktop_doc(&desk);
        let mut feed = ConversationFeed::new(&doc);
        assert!(feed.new_messages(&doc).is_empty(), "history is not printed");

        let front = msg("front", &phone, "inserted at 0");
        insert_at(&mut doc, 0, &front);
        let got = feed.new_messages(&doc);
        assert_eq!(got, vec![front.clone()], "the new message, not an old one");
        assert!(feed.new_messages(&doc).is_empty(), "printed once");

        // Two more: one in the middle and one appended, in one look: in list order.
        let middle = msg("middle", &phone, "in the middle");
        let end = msg("end", &desk, "appended");
        insert_at(&mut doc, 2, &middle);
        doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &end))
            .expect("append");
        assert_eq!(feed.new_messages(&doc), vec![middle, end]);
        // Other changes (a task, a heartbeat) print nothing.
        doc.transact::<_, _, SchemaError>(|tx| Workspace::set_heartbeat(tx, 5))
            .expect("beat");
        assert!(feed.new_messages(&doc).is_empty());
    }

    #[test]
    fn an_offline_phones_message_that_merges_before_newer_ones_is_printed() {
        let desk = DeviceId::from_bytes([1; 32]);
        let phone = DeviceId::from_bytes([2; 32]);
        let mut doc = desktop_doc(&desk);
        let mut offline = doc.fork().with_actor(phone.actor_id());
        let mut feed = ConversationFeed::new(&doc);
        // The phone does a lot offline (so its ops sort first), then writes a message.
        offline
            .transact::<_, _, SchemaError>(|tx| {
                let devices = tx
                    .get(ROOT, "devices")?
                    .map(|(_, id)| id)
                    .ok_or(SchemaError::Uninitialised)?;
                for i in 0..50 {
                    tx.put(&devices, format!("k{i}"), i)?;
                }
                Ok(())
            })
            .expect("ops");
        let late = msg("offline", &phone, "written offline");
        offline
            .transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &late))
            .expect("offline message");
        let newer = msg("newer", &desk, "desktop meanwhile");
        doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &newer))
            .expect("desktop message");
        assert_eq!(feed.new_messages(&doc), vec![newer.clone()]);
        doc.merge(&mut offline).expect("merge");
        let all = Workspace::messages_from(&doc, 0).expect("read");
        let pos = all.iter().position(|m| m.id == late.id).expect("merged");
        assert!(
            pos < all.len() - 1,
            "the offline message landed before the newer one"
        );
        assert_eq!(
            feed.new_messages(&doc),
            vec![late],
            "not the newer one again"
        );
    }

    #[test]
    fn a_printed_message_cannot_fake_console_output() {
        let phone = DeviceId::from_bytes([2; 32]);
        let m = msg(
            "x",
            &phone,
            "hi\x1b[2J\x1b]0;owned\x07\n[agent] desktop: \x1b[31mall good\u{202e}\nthird",
        );
        let out = message_line(&m);
        assert!(
            !out.chars().any(|c| c != '\n' && terminal::is_unsafe(c)),
            "{out:?}"
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("[user] 0202020202: hi\\u{1b}[2J"));
        for l in &lines[1..] {
            assert!(l.starts_with("    │ "), "continuation not marked: {l:?}");
        }
        let long = msg("y", &phone, &"line\n".repeat(20));
        let out = message_line(&long);
        assert_eq!(out.lines().count(), SHOWN_LINES + 1, "{out}");
        assert!(out.ends_with("… (17 more lines)"), "{out}");
        // A multibyte author is cut by characters, never panics.
        let mut odd = msg("z", &phone, "t");
        odd.author = "ééééééééééééé".into();
        assert!(message_line(&odd).starts_with("[user] éééééééééé: t"));
    }
}
