//! Conversation documents by week: the first step of the multi-document workspace (issue 16).
//!
//! A workspace used for a year must not make every start, relay and phone pay for its history,
//! so the conversation is to be split into one Automerge document per ISO 8601 week (UTC, the
//! desktop's clock). Every such document must stay writable by any device at any time — a phone
//! offline across a week boundary writes into the week of the day it wrote — and two devices
//! that start the same week independently must not create a conflict.
//!
//! That last rule is what this module settles. If two devices each made a fresh document for a
//! week, each with its own `messages` list, Automerge would keep both lists as a conflict at one
//! key and show only one of them: half the week's messages would be hidden. So a week's first
//! change — its *genesis* — is the same bytes on every device: a fixed actor derived from the
//! workspace and the week, time 0, no message, the same operations. Automerge identifies changes
//! by hash, so the geneses of two devices are one change, and their later changes (each with its
//! own actor) land in the one `messages` list, `tasks` map and `approvals` map. The document's
//! id is derived the same way, so every device names the week's document alike without asking.
//!
//! Not yet wired into the workspace, the store or the sync protocol (the next steps of
//! issue 16); its tests show the property the design rests on, on the Automerge this project
//! uses.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ROOT};
use sha2::{Digest, Sha256};

use crate::DocId;

/// Schema version written into every conversation document.
pub const CONVERSATION_SCHEMA_VERSION: u64 = 2;

/// An ISO 8601 week: the week-numbering year and the week (1–53), as `2026-W48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationWeek {
    /// ISO week-numbering year (may differ from the calendar year around New Year).
    pub year: i32,
    /// Week of that year, 1–53.
    pub week: u8,
}

/// Why a time or a label does not name a week.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeekError {
    /// The time is outside what a calendar date can hold (±9999 years).
    #[error("{0} ms is not a time a week can be given for")]
    OutOfRange(i64),
    /// The label is not `YYYY-Www` with a week that year has.
    #[error("{0:?} is not an ISO 8601 week (YYYY-Www, e.g. 2026-W48)")]
    BadLabel(String),
}

impl ConversationWeek {
    /// The week holding the instant `unix_ms` (milliseconds since 1970-01-01T00:00Z, UTC).
    pub fn of_unix_ms(unix_ms: i64) -> Result<Self, WeekError> {
        let t = time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
            .map_err(|_| WeekError::OutOfRange(unix_ms))?;
        let (year, week, _) = t.to_iso_week_date();
        Ok(Self { year, week })
    }

    /// Monday 00:00 UTC of this week, in unix milliseconds.
    pub fn start_unix_ms(self) -> i64 {
        // A week built by `of_unix_ms` or `parse` always has a Monday.
        time::Date::from_iso_week_date(self.year, self.week, time::Weekday::Monday)
            .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
            .unwrap_or(i64::MIN)
    }

    /// The label, `YYYY-Www` (ISO 8601 extended week date without the day).
    pub fn label(self) -> String {
        format!("{:04}-W{:02}", self.year, self.week)
    }

    /// Reads a label written by [`ConversationWeek::label`].
    pub fn parse(label: &str) -> Result<Self, WeekError> {
        let bad = || WeekError::BadLabel(label.chars().take(32).collect());
        let (y, w) = label.split_once("-W").ok_or_else(bad)?;
        if y.len() != 4 || w.len() != 2 || !(y.bytes().chain(w.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (year, week) = (
            y.parse::<i32>().map_err(|_| bad())?,
            w.parse::<u8>().map_err(|_| bad())?,
        );
        time::Date::from_iso_week_date(year, week, time::Weekday::Monday).map_err(|_| bad())?;
        Ok(Self { year, week })
    }
}

/// 32 bytes derived from the workspace, the week and a purpose (SHA-256 over a domain-separated
/// input): the same on every device.
fn derive(workspace: &DocId, week: ConversationWeek, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"deskhand/conversation/v1\0");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(workspace.as_bytes());
    h.update(week.label().as_bytes());
    h.finalize().into()
}

/// The id of the conversation document of `week` in `workspace`: derived, so every device names
/// it alike without asking.
pub fn conversation_doc_id(workspace: &DocId, week: ConversationWeek) -> DocId {
    let d = derive(workspace, week, "doc id");
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    DocId::from_bytes(id)
}

/// The actor of a week's genesis change. No device writes with it after the genesis.
pub fn genesis_actor(workspace: &DocId, week: ConversationWeek) -> ActorId {
    ActorId::from(&derive(workspace, week, "genesis actor")[..16])
}

/// The conversation document of `week` as it starts on every device: one change, byte for byte
/// the same everywhere (actor [`genesis_actor`], time 0, no message), holding
/// `schema_version`, `kind: "conversation"`, `week` (its label), and the empty `messages` list,
/// `tasks` map and `approvals` map. The caller sets its own actor before writing to it.
pub fn conversation_genesis(workspace: &DocId, week: ConversationWeek) -> Automerge {
    let mut doc = Automerge::new().with_actor(genesis_actor(workspace, week));
    let mut tx = doc.transaction();
    // Infallible on a fresh document: every key is new and every object is made here.
    let _ = tx.put(ROOT, "schema_version", CONVERSATION_SCHEMA_VERSION);
    let _ = tx.put(ROOT, "kind", "conversation");
    let _ = tx.put(ROOT, "week", week.label());
    let _ = tx.put_object(ROOT, "messages", ObjType::List);
    let _ = tx.put_object(ROOT, "tasks", ObjType::Map);
    let _ = tx.put_object(ROOT, "approvals", ObjType::Map);
    tx.commit_with(CommitOptions::default().with_time(0));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{AutoCommit, ReadDoc};

    fn ws(b: u8) -> DocId {
        DocId::from_bytes([b; 16])
    }

    /// Unix ms of a UTC date at noon.
    fn noon(y: i32, m: u8, d: u8) -> i64 {
        let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
        (date.midnight().assume_utc().unix_timestamp() + 12 * 3600) * 1000
    }

    #[test]
    fn weeks_follow_iso_8601_across_new_year() {
        let w = |y, m, d| ConversationWeek::of_unix_ms(noon(y, m, d)).unwrap().label();
        assert_eq!(w(2026, 11, 30), "2026-W49");
        // 2026 starts on a Thursday: it has 53 weeks, and 1 January 2027 is in its last.
        assert_eq!(w(2026, 12, 31), "2026-W53");
        assert_eq!(w(2027, 1, 1), "2026-W53");
        assert_eq!(w(2027, 1, 4), "2027-W01");
        // 30 December 2024 (a Monday) already belongs to 2025.
        assert_eq!(w(2024, 12, 30), "2025-W01");
        assert_eq!(w(1970, 1, 1), "1970-W01");
        // Before the epoch: Monday 29 December 1969 starts 1970-W01, and the millisecond before
        // it is in 1969-W52 (milliseconds round down, not toward zero).
        let monday = -3 * 86_400_000;
        assert_eq!(
            ConversationWeek::of_unix_ms(monday).unwrap().label(),
            "1970-W01"
        );
        assert_eq!(
            ConversationWeek::of_unix_ms(monday - 1).unwrap().label(),
            "1969-W52"
        );
        assert!(matches!(
            ConversationWeek::of_unix_ms(i64::MAX),
            Err(WeekError::OutOfRange(_))
        ));
    }

    #[test]
    fn a_week_starts_on_monday_and_its_label_reads_back() {
        let week = ConversationWeek::of_unix_ms(noon(2026, 12, 3)).unwrap();
        assert_eq!(week.start_unix_ms(), noon(2026, 11, 30) - 12 * 3_600_000);
        assert_eq!(ConversationWeek::of_unix_ms(week.start_unix_ms()), Ok(week));
        assert_eq!(
            ConversationWeek::of_unix_ms(week.start_unix_ms() - 1)
                .unwrap()
                .week,
            48
        );
        assert_eq!(ConversationWeek::parse(&week.label()), Ok(week));
        for bad in [
            "2026-W54", "2025-W53", "2026-W00", "2026-w49", "26-W49", "2026-W4", "", "2026-W+9",
        ] {
            assert!(ConversationWeek::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ConversationWeek::parse("2026-W53").unwrap().week, 53);
    }

    #[test]
    fn two_devices_start_a_week_apart_and_their_messages_share_one_list() {
        let week = ConversationWeek {
            year: 2026,
            week: 49,
        };
        let mut phone = conversation_genesis(&ws(7), week);
        let mut desk = conversation_genesis(&ws(7), week);
        assert_eq!(phone.get_heads(), desk.get_heads(), "one genesis change");
        assert_eq!(phone.save(), desk.save(), "byte for byte");

        // Each writes with its own actor, offline from the other.
        phone.set_actor(ActorId::from([1u8; 16]));
        desk.set_actor(ActorId::from([2u8; 16]));
        for (doc, text) in [
            (&mut phone, "from the phone"),
            (&mut desk, "from the desktop"),
        ] {
            let mut tx = doc.transaction();
            let (_, list) = tx.get(ROOT, "messages").unwrap().unwrap();
            let m = tx.insert_object(&list, 0, ObjType::Map).unwrap();
            tx.put(&m, "text", text).unwrap();
            tx.commit();
        }
        desk.merge(&mut phone).unwrap();
        assert_eq!(
            desk.get_all(ROOT, "messages").unwrap().len(),
            1,
            "no conflict"
        );
        let (_, list) = desk.get(ROOT, "messages").unwrap().unwrap();
        let mut texts: Vec<String> = (0..desk.length(&list))
            .map(|i| {
                let (_, m) = desk.get(&list, i).unwrap().unwrap();
                desk.get(&m, "text")
                    .unwrap()
                    .unwrap()
                    .0
                    .into_string()
                    .unwrap()
            })
            .collect();
        texts.sort();
        assert_eq!(texts, ["from the desktop", "from the phone"]);
        assert_eq!(
            desk.get_changes(&[]).len(),
            3,
            "the genesis once, and one change each"
        );
    }

    #[test]
    fn without_a_shared_genesis_one_side_of_the_week_would_be_hidden() {
        // What the shared genesis prevents: two devices that each make the week's lists.
        let fresh = |actor: u8, text: &str| {
            let mut d = AutoCommit::new().with_actor(ActorId::from([actor; 16]));
            let list = d.put_object(ROOT, "messages", ObjType::List).unwrap();
            let m = d.insert_object(&list, 0, ObjType::Map).unwrap();
            d.put(&m, "text", text).unwrap();
            d
        };
        let (mut a, mut b) = (fresh(1, "a"), fresh(2, "b"));
        a.merge(&mut b).unwrap();
        assert_eq!(a.get_all(ROOT, "messages").unwrap().len(), 2, "a conflict");
        let (_, shown) = a.get(ROOT, "messages").unwrap().unwrap();
        assert_eq!(a.length(&shown), 1, "only one side's message is shown");
    }

    #[test]
    fn weeks_and_workspaces_get_their_own_documents() {
        let (w48, w49) = (
            ConversationWeek {
                year: 2026,
                week: 48,
            },
            ConversationWeek {
                year: 2026,
                week: 49,
            },
        );
        assert_eq!(
            conversation_doc_id(&ws(1), w49),
            conversation_doc_id(&ws(1), w49)
        );
        assert_ne!(
            conversation_doc_id(&ws(1), w48),
            conversation_doc_id(&ws(1), w49)
        );
        assert_ne!(
            conversation_doc_id(&ws(1), w49),
            conversation_doc_id(&ws(2), w49)
        );
        assert_ne!(
            conversation_genesis(&ws(1), w48).get_heads(),
            conversation_genesis(&ws(1), w49).get_heads()
        );
        let g = conversation_genesis(&ws(1), w49);
        assert_eq!(
            g.get(ROOT, "week")
                .unwrap()
                .unwrap()
                .0
                .into_string()
                .unwrap(),
            "2026-W49"
        );
        assert_eq!(g.get_changes(&[]).len(), 1);
        assert_eq!(g.get_changes(&[])[0].timestamp(), 0);
    }
}
