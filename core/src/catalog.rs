//! What a device announces of its conversation documents, and which of them a phone syncs now
//! (issue 16, the multi-document workspace).
//!
//! A year-old workspace holds some 52 week documents (see [`crate::conversation`]). A phone must
//! learn which of them changed without loading or syncing any, and then sync only what it shows
//! or must act on. So the desktop sends a [`Catalog`] on its own stream of the connection
//! (`Frame::Catalog`, protocol 4): per week, a [`HeadsDigest`] of that document's heads and
//! what it holds ([`WeekCounts`]) — 27 bytes a week, about 1.4 KB for a year. Comparing it with
//! the phone's own says which documents differ; [`choose`] then picks the ones to sync now and
//! leaves the rest to be fetched page by page when the user scrolls back.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use crate::conversation::{ConversationWeek, WeekCounts};

/// Bytes of a [`HeadsDigest`].
pub const DIGEST_LEN: usize = 16;

/// Most weeks a [`Catalog`] may hold: a century. A longer announcement is refused unread.
pub const MAX_CATALOG_WEEKS: usize = 5_300;

/// Encoded size of one week in a catalog: year (i16), week (u8), digest, messages (u32), open
/// tasks (u16), pending approvals (u16).
const ENTRY_LEN: usize = 3 + DIGEST_LEN + 8;

/// A document's heads, fingerprinted: the first 16 bytes of SHA-256 over a domain tag and the
/// heads in ascending order. Equal heads give equal digests on every device, whatever order the
/// heads were listed in; different heads differ but with probability 2⁻¹²⁸.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeadsDigest(pub [u8; DIGEST_LEN]);

impl HeadsDigest {
    /// The digest of `heads` (a document's `get_heads()`; empty for an empty document).
    pub fn of(heads: &[ChangeHash]) -> Self {
        let mut sorted = heads.to_vec();
        sorted.sort();
        let mut h = Sha256::new();
        h.update(b"deskhand/heads/v1\0");
        for head in sorted {
            h.update(head.0);
        }
        let mut d = [0; DIGEST_LEN];
        d.copy_from_slice(&h.finalize()[..DIGEST_LEN]);
        Self(d)
    }
}

/// Why bytes are not a catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// Shorter than its count says, or bytes left over.
    #[error("a catalog of {count} weeks takes {expected} bytes; this one has {actual}")]
    Length {
        /// Weeks the count announces.
        count: usize,
        /// Bytes that count needs.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// More weeks than [`MAX_CATALOG_WEEKS`].
    #[error("a catalog of {0} weeks is more than the {MAX_CATALOG_WEEKS} a workspace can hold")]
    TooLong(usize),
    /// A week that does not exist (week 0, week 53 of a 52-week year, …).
    #[error("entry {index} names week {week} of {year}, which does not exist")]
    BadWeek {
        /// Position in the catalog.
        index: usize,
        /// The year read.
        year: i16,
        /// The week read.
        week: u8,
    },
    /// Weeks out of order or repeated (a catalog lists each week once, oldest first).
    #[error("entry {index} ({week}) does not come after the one before it")]
    Unordered {
        /// Position in the catalog.
        index: usize,
        /// Its week label.
        week: String,
    },
}

/// The conversation documents a device holds: per week, the digest of that document's heads
/// and what it holds. Ordered oldest first, each week once.
///
/// Wire form ([`Catalog::encode`]): the number of weeks as a big-endian u16, then per week,
/// oldest first, the ISO year as a big-endian i16, the week (1–53) as a byte, the
/// [`DIGEST_LEN`]-byte digest, and its [`WeekCounts`]: messages as a big-endian u32, open tasks
/// and pending approvals as big-endian u16s (each saturating).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    weeks: BTreeMap<ConversationWeek, (HeadsDigest, WeekCounts)>,
}

impl Catalog {
    /// A catalog of these weeks, with no counts (a week given twice keeps the last digest).
    pub fn new(weeks: impl IntoIterator<Item = (ConversationWeek, HeadsDigest)>) -> Self {
        Self::with_counts(
            weeks
                .into_iter()
                .map(|(w, d)| (w, d, WeekCounts::default())),
        )
    }

    /// A catalog of these weeks and what each holds.
    pub fn with_counts(
        weeks: impl IntoIterator<Item = (ConversationWeek, HeadsDigest, WeekCounts)>,
    ) -> Self {
        Self {
            weeks: weeks.into_iter().map(|(w, d, c)| (w, (d, c))).collect(),
        }
    }

    /// The digest announced for `week`, if the week is listed.
    pub fn get(&self, week: ConversationWeek) -> Option<HeadsDigest> {
        self.weeks.get(&week).map(|(d, _)| *d)
    }

    /// What `week` holds, as announced (zero when it is not listed).
    pub fn counts(&self, week: ConversationWeek) -> WeekCounts {
        self.weeks.get(&week).map(|(_, c)| *c).unwrap_or_default()
    }

    /// Every listed week with its digest, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (ConversationWeek, HeadsDigest)> + '_ {
        self.weeks.iter().map(|(w, (d, _))| (*w, *d))
    }

    /// Number of weeks listed.
    pub fn len(&self) -> usize {
        self.weeks.len()
    }

    /// Whether no week is listed.
    pub fn is_empty(&self) -> bool {
        self.weeks.is_empty()
    }

    /// The wire form (see the type's documentation). A catalog of more than
    /// [`MAX_CATALOG_WEEKS`] weeks is cut to its newest ones: the peer would refuse it whole.
    pub fn encode(&self) -> Vec<u8> {
        let skip = self.weeks.len().saturating_sub(MAX_CATALOG_WEEKS);
        let count = self.weeks.len() - skip;
        let mut out = Vec::with_capacity(2 + count * ENTRY_LEN);
        out.extend_from_slice(&(count as u16).to_be_bytes());
        for (week, (digest, counts)) in self.weeks.iter().skip(skip) {
            // ISO years of real weeks fit an i16 (the time crate's range is ±9999).
            out.extend_from_slice(&(week.year as i16).to_be_bytes());
            out.push(week.week);
            out.extend_from_slice(&digest.0);
            let messages = u32::try_from(counts.messages).unwrap_or(u32::MAX);
            out.extend_from_slice(&messages.to_be_bytes());
            for n in [counts.open_tasks, counts.pending_approvals] {
                out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
            }
        }
        out
    }

    /// Reads the wire form, refusing anything but exactly one well-formed catalog.
    ///
    /// # Errors
    /// [`CatalogError`]: the length does not match the count, too many weeks, a week that does
    /// not exist, or weeks not in ascending order.
    pub fn decode(bytes: &[u8]) -> Result<Self, CatalogError> {
        let Some((count, body)) = bytes.split_first_chunk::<2>() else {
            return Err(CatalogError::Length {
                count: 0,
                expected: 2,
                actual: bytes.len(),
            });
        };
        let count = u16::from_be_bytes(*count) as usize;
        if count > MAX_CATALOG_WEEKS {
            return Err(CatalogError::TooLong(count));
        }
        if body.len() != count * ENTRY_LEN {
            return Err(CatalogError::Length {
                count,
                expected: 2 + count * ENTRY_LEN,
                actual: bytes.len(),
            });
        }
        let mut weeks = BTreeMap::new();
        let mut last: Option<ConversationWeek> = None;
        for (index, entry) in body.chunks_exact(ENTRY_LEN).enumerate() {
            let year = i16::from_be_bytes([entry[0], entry[1]]);
            let week = ConversationWeek::new(year.into(), entry[2]).map_err(|_| {
                CatalogError::BadWeek {
                    index,
                    year,
                    week: entry[2],
                }
            })?;
            if last.is_some_and(|l| l >= week) {
                return Err(CatalogError::Unordered {
                    index,
                    week: week.label(),
                });
            }
            last = Some(week);
            let mut d = [0; DIGEST_LEN];
            d.copy_from_slice(&entry[3..3 + DIGEST_LEN]);
            let n = &entry[3 + DIGEST_LEN..];
            let counts = WeekCounts {
                messages: u32::from_be_bytes([n[0], n[1], n[2], n[3]]).into(),
                open_tasks: u16::from_be_bytes([n[4], n[5]]).into(),
                pending_approvals: u16::from_be_bytes([n[6], n[7]]).into(),
            };
            weeks.insert(week, (HeadsDigest(d), counts));
        }
        Ok(Self { weeks })
    }
}

/// Which week documents a phone syncs now, and which it leaves for later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncChoice {
    /// Documents to sync now, newest first (so the latest messages show first).
    pub now: Vec<ConversationWeek>,
    /// Documents the desktop holds that the phone neither holds nor needs yet, newest first:
    /// the pages "load older messages" fetches, in that order.
    pub later: Vec<ConversationWeek>,
}

/// Chooses the week documents a phone syncs, from the desktop's catalog (with its counts) and
/// the phone's own. A week is synced now when
/// 1. the phone holds it and it differs from the desktop's, or the desktop does not have it
///    (a week the phone wrote into while offline): held documents are kept current, and the
///    phone's own writes must reach the desktop;
/// 2. it is among the newest weeks the desktop announces that together hold at least
///    `recent_messages` messages (at least the newest one), and the phone does not hold it as
///    the desktop does: what the conversation screen opens on;
/// 3. the desktop's counts show open tasks or pending approvals in it, and the phone does not hold it as
///    the desktop does: what the phone must show progress for or act on.
///
/// Every other week the desktop announces and the phone does not hold goes to
/// [`SyncChoice::later`]. Weeks held alike on both sides are in neither list.
pub fn choose(desktop: &Catalog, phone: &Catalog, recent_messages: u64) -> SyncChoice {
    let differs = |week: ConversationWeek| desktop.get(week) != phone.get(week);
    let mut now = Vec::new();
    let mut later = Vec::new();
    // Phone-only weeks (rule 1), newest first.
    now.extend(
        phone
            .iter()
            .rev()
            .map(|(w, _)| w)
            .filter(|w| desktop.get(*w).is_none()),
    );
    let mut recent_seen = 0u64;
    let mut recent_done = false;
    for (week, _) in desktop.iter().rev() {
        let summary = desktop.counts(week);
        let recent = !recent_done;
        recent_seen = recent_seen.saturating_add(summary.messages);
        recent_done = recent_done || recent_seen >= recent_messages;
        let held = phone.get(week).is_some();
        let active = summary.open_tasks > 0 || summary.pending_approvals > 0;
        if !differs(week) {
            continue;
        }
        if held || recent || active {
            now.push(week);
        } else {
            later.push(week);
        }
    }
    now.sort_by(|a, b| b.cmp(a));
    SyncChoice { now, later }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failure is a broken test
mod tests {
    use super::*;

    fn week(year: i32, week: u8) -> ConversationWeek {
        ConversationWeek { year, week }
    }

    fn digest(n: u8) -> HeadsDigest {
        HeadsDigest([n; DIGEST_LEN])
    }

    /// 2026-W01 … 2026-W52.
    fn year_2026() -> Vec<ConversationWeek> {
        (1..=52).map(|w| week(2026, w)).collect()
    }

    #[test]
    fn a_digest_depends_on_the_heads_not_their_order() {
        let (a, b) = (ChangeHash([1; 32]), ChangeHash([2; 32]));
        assert_eq!(HeadsDigest::of(&[a, b]), HeadsDigest::of(&[b, a]));
        assert_ne!(HeadsDigest::of(&[a, b]), HeadsDigest::of(&[a]));
        assert_ne!(HeadsDigest::of(&[]), HeadsDigest::of(&[a]));
    }

    #[test]
    fn a_year_of_weeks_round_trips_in_about_a_kilobyte() {
        let c = Catalog::new(
            year_2026()
                .into_iter()
                .enumerate()
                .map(|(i, w)| (w, digest(i as u8))),
        );
        let bytes = c.encode();
        assert_eq!(bytes.len(), 2 + 52 * 27);
        assert_eq!(Catalog::decode(&bytes).unwrap(), c);
        assert_eq!(
            Catalog::decode(&Catalog::default().encode()).unwrap().len(),
            0
        );
        // Counts travel too, saturating at their field's width.
        let counted = Catalog::with_counts([(
            week(2026, 3),
            digest(3),
            WeekCounts {
                messages: 70_000,
                open_tasks: 100_000,
                pending_approvals: 2,
            },
        )]);
        let back = Catalog::decode(&counted.encode()).unwrap();
        assert_eq!(back.counts(week(2026, 3)).messages, 70_000);
        assert_eq!(back.counts(week(2026, 3)).open_tasks, u64::from(u16::MAX));
        assert_eq!(back.counts(week(2026, 3)).pending_approvals, 2);
        // Around New Year and before year 0 too.
        let edge = Catalog::new([
            (week(-3, 1), digest(1)),
            (week(2026, 53), digest(2)),
            (week(2027, 1), digest(3)),
        ]);
        assert_eq!(Catalog::decode(&edge.encode()).unwrap(), edge);
    }

    #[test]
    fn malformed_catalogs_are_refused_with_what_is_wrong() {
        let good = Catalog::new([(week(2026, 1), digest(1)), (week(2026, 2), digest(2))]).encode();
        let e = Catalog::decode(&good[..good.len() - 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a catalog of 2 weeks takes 56 bytes; this one has 55"
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Catalog::decode(&long),
            Err(CatalogError::Length { .. })
        ));
        assert!(matches!(
            Catalog::decode(&[0]),
            Err(CatalogError::Length { .. })
        ));
        assert_eq!(
            Catalog::decode(&u16::MAX.to_be_bytes()),
            Err(CatalogError::TooLong(65_535))
        );
        // Week 53 of 2025 does not exist (2025 has 52 ISO weeks); week 0 never does.
        for (y, w) in [(2025i16, 53u8), (2026, 0)] {
            let mut bad = good.clone();
            bad[2..4].copy_from_slice(&y.to_be_bytes());
            bad[4] = w;
            assert_eq!(
                Catalog::decode(&bad),
                Err(CatalogError::BadWeek {
                    index: 0,
                    year: y,
                    week: w
                })
            );
        }
        // The same week twice, or out of order.
        let mut twice = good.clone();
        twice[2 + ENTRY_LEN + 2] = 1;
        assert_eq!(
            Catalog::decode(&twice).unwrap_err().to_string(),
            "entry 1 (2026-W01) does not come after the one before it"
        );
    }

    /// A desktop with 52 weeks of 100 messages each (10 in the weeks of `quiet`); week 10
    /// still has an open task.
    fn desktop_year(quiet: &[u8]) -> Catalog {
        Catalog::with_counts(year_2026().into_iter().map(|w| {
            let counts = WeekCounts {
                messages: if quiet.contains(&w.week) { 10 } else { 100 },
                open_tasks: u64::from(w.week == 10),
                pending_approvals: 0,
            };
            (w, digest(w.week), counts)
        }))
    }

    #[test]
    fn a_new_phone_syncs_the_newest_week_and_the_one_with_an_open_task() {
        let desktop = desktop_year(&[]);
        let choice = choose(&desktop, &Catalog::default(), 50);
        assert_eq!(choice.now, [week(2026, 52), week(2026, 10)]);
        assert_eq!(choice.later.len(), 50);
        assert_eq!(choice.later[0], week(2026, 51), "pages go back in time");
        assert_eq!(choice.later.last(), Some(&week(2026, 1)));
        // Wanting more messages than the newest week holds takes the week before too.
        let choice = choose(&desktop, &Catalog::default(), 150);
        assert_eq!(choice.now, [week(2026, 52), week(2026, 51), week(2026, 10)]);
    }

    #[test]
    fn quiet_recent_weeks_are_taken_together_until_they_hold_enough_messages() {
        let desktop = desktop_year(&[50, 51, 52]);
        let choice = choose(&desktop, &Catalog::default(), 50);
        assert_eq!(
            choice.now,
            [
                week(2026, 52),
                week(2026, 51),
                week(2026, 50),
                week(2026, 49),
                week(2026, 10)
            ]
        );
    }

    #[test]
    fn a_phone_syncs_only_what_changed_and_what_it_wrote_offline() {
        let desktop = desktop_year(&[]);
        // The phone holds weeks 40–52 as the desktop does, but week 45 has changed on the
        // desktop since, and the phone wrote into 2027-W01 while offline.
        let mut held: Vec<_> = (40..=52).map(|w| (week(2026, w), digest(w))).collect();
        held[5].1 = digest(200);
        held.push((week(2027, 1), digest(7)));
        let phone = Catalog::new(held);
        let choice = choose(&desktop, &phone, 50);
        assert_eq!(choice.now, [week(2027, 1), week(2026, 45), week(2026, 10)]);
        assert_eq!(choice.later.len(), 38);
        assert!(choice.later.iter().all(|w| w.week < 40 && w.week != 10));
        // In step: nothing to sync, nothing new to page.
        let same = Catalog::new(desktop.iter());
        assert_eq!(choose(&desktop, &same, 50), SyncChoice::default());
    }
}
