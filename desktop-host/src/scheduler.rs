//! The executor's queue: fair across phones and bounded per phone.
//!
//! One phone can create hundreds of tasks in one change. So each phone (the `created_by` of its
//! tasks) has its own queue, oldest first, and the phone served least recently goes next (a
//! round-robin that a newly arriving phone joins at the front): another phone's task waits for
//! at most one task of each other phone, never behind the whole flood. A phone
//! may hold at most `max_tasks_per_phone` queued and running tasks; the executor fails the rest
//! at once with a reason the phone sees. A task suspended on an approval request holds no
//! running slot (so a request nobody answers cannot stall everyone), and takes one again before
//! it resumes, ahead of tasks not yet started.

use std::collections::{HashMap, HashSet, VecDeque};

use deskhand_core::ids::TaskId;

/// Queued and running tasks by phone; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// Phones with queued tasks, in the order they arrived.
    turns: VecDeque<String>,
    /// When each phone with queued or running tasks was last served (a counter).
    served: HashMap<String, u64>,
    tick: u64,
    queued: HashMap<String, VecDeque<TaskId>>,
    /// The phone of every queued or running task.
    owners: HashMap<TaskId, String>,
    /// Queued plus running tasks per phone.
    counts: HashMap<String, usize>,
    /// Running tasks suspended on an approval request: they hold no slot.
    suspended: HashSet<TaskId>,
    /// Suspended tasks that were answered and wait for a slot to resume in.
    resuming: HashSet<TaskId>,
}

impl Scheduler {
    /// Queues `id`, created by `owner`, behind that phone's other tasks; refuses it when the
    /// phone already has `cap` queued and running tasks.
    pub(crate) fn push(&mut self, id: TaskId, owner: &str, cap: usize) -> Result<(), ()> {
        let count = self.counts.entry(owner.to_owned()).or_default();
        if *count >= cap {
            return Err(());
        }
        *count += 1;
        self.owners.insert(id.clone(), owner.to_owned());
        let q = self.queued.entry(owner.to_owned()).or_default();
        if q.is_empty() {
            self.turns.push_back(owner.to_owned());
        }
        q.push_back(id);
        Ok(())
    }

    /// The next task to start: the oldest task of the phone served least recently among those
    /// for which `skip` is false (ties: the phone that queued first). The task counts as
    /// running until [`Self::finished`].
    pub(crate) fn next(&mut self, skip: impl Fn(&str) -> bool) -> Option<TaskId> {
        let (at, _) = self
            .turns
            .iter()
            .enumerate()
            .filter(|(_, o)| !skip(o))
            .min_by_key(|(i, o)| (self.served.get(*o).copied().unwrap_or(0), *i))?;
        let owner = self.turns.remove(at)?;
        self.tick += 1;
        self.served.insert(owner.clone(), self.tick);
        let q = self.queued.get_mut(&owner)?;
        let id = q.pop_front();
        if q.is_empty() {
            self.queued.remove(&owner);
        } else {
            self.turns.insert(at, owner);
        }
        id
    }

    /// Takes a queued task out (it was cancelled before it started); false if it was not queued.
    pub(crate) fn remove_queued(&mut self, id: &TaskId) -> bool {
        let Some(owner) = self.owners.get(id).cloned() else {
            return false;
        };
        let Some(q) = self.queued.get_mut(&owner) else {
            return false;
        };
        let before = q.len();
        q.retain(|t| t != id);
        if q.len() == before {
            return false;
        }
        if q.is_empty() {
            self.queued.remove(&owner);
            self.turns.retain(|o| o != &owner);
        }
        self.finished(id);
        true
    }

    /// A task left the executor (done, failed, cancelled, refused).
    pub(crate) fn finished(&mut self, id: &TaskId) {
        self.suspended.remove(id);
        self.resuming.remove(id);
        if let Some(owner) = self.owners.remove(id)
            && let Some(c) = self.counts.get_mut(&owner)
        {
            *c = c.saturating_sub(1);
            if *c == 0 {
                // Nothing queued or running: the phone is nobody's obstacle, forget its turn.
                self.counts.remove(&owner);
                self.served.remove(&owner);
            }
        }
    }

    /// The phone that created a queued or running task.
    pub(crate) fn owner(&self, id: &TaskId) -> Option<&str> {
        self.owners.get(id).map(String::as_str)
    }

    /// Queued tasks, phone by phone in the order the phones arrived.
    pub(crate) fn queued_ids(&self) -> Vec<TaskId> {
        self.turns
            .iter()
            .filter_map(|o| self.queued.get(o))
            .flatten()
            .cloned()
            .collect()
    }

    /// Slots in use when `running` tasks have been started: suspended tasks hold none, answered
    /// ones waiting to resume hold theirs already (they go before new tasks).
    pub(crate) fn slots_used(&self, running: usize) -> usize {
        running.saturating_sub(self.suspended.len()) + self.resuming.len()
    }

    /// A running task waits for an approval: its slot is free meanwhile.
    pub(crate) fn suspend(&mut self, id: &TaskId) {
        self.suspended.insert(id.clone());
    }

    /// A suspended task was answered and wants its slot back: returns true (and takes the slot)
    /// when one of `max` is free with `running` tasks started, else marks it waiting.
    pub(crate) fn try_resume(&mut self, id: &TaskId, running: usize, max: usize) -> bool {
        if !self.suspended.contains(id) {
            return true;
        }
        // Others waiting to resume hold their slots; this one's own mark does not count.
        let others = self.resuming.iter().filter(|t| *t != id).count();
        if running.saturating_sub(self.suspended.len()) + others < max {
            self.suspended.remove(id);
            self.resuming.remove(id);
            true
        } else {
            self.resuming.insert(id.clone());
            false
        }
    }

    /// A suspended task ends without running anything more (it was cancelled): it takes no
    /// slot back.
    pub(crate) fn resume_to_finish(&mut self, id: &TaskId) {
        self.suspended.remove(id);
        self.resuming.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<TaskId> {
        (0..n)
            .map(|i| TaskId::from(format!("{prefix}{i}")))
            .collect()
    }

    #[test]
    fn phones_take_turns_and_each_keeps_its_order() {
        let mut s = Scheduler::default();
        for id in ids("a", 5) {
            s.push(id, "A", 16).expect("under the cap");
        }
        for id in ids("b", 2) {
            s.push(id, "B", 16).expect("under the cap");
        }
        s.push("c0".into(), "C", 16).expect("under the cap");
        let order: Vec<String> = std::iter::from_fn(|| s.next(|_| false))
            .map(|t| t.to_string())
            .collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]);
    }

    #[test]
    fn a_flood_from_one_phone_is_capped_and_another_phone_goes_next() {
        let mut s = Scheduler::default();
        let mut refused = 0;
        for id in ids("a", 500) {
            if s.push(id, "A", 16).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 484);
        let first = s.next(|_| false).expect("a task");
        assert_eq!(first.as_str(), "a0");
        s.push("b0".into(), "B", 16).expect("B has room");
        assert_eq!(s.next(|_| false).map(|t| t.to_string()), Some("b0".into()));
        // A is still at its cap while a0 runs; its slot frees when a0 finishes.
        assert!(s.push("a-more".into(), "A", 16).is_err());
        s.finished(&first);
        assert!(s.push("a-more".into(), "A", 16).is_ok());
    }

    #[test]
    fn a_phone_can_be_skipped_and_cancelled_tasks_leave_the_queue() {
        let mut s = Scheduler::default();
        for id in ids("a", 3) {
            s.push(id, "A", 16).expect("room");
        }
        s.push("b0".into(), "B", 16).expect("room");
        // A is at its approval cap: B goes, A keeps its tasks.
        assert_eq!(
            s.next(|o| o == "A").map(|t| t.to_string()),
            Some("b0".into())
        );
        assert_eq!(s.next(|o| o == "A"), None);
        assert!(s.remove_queued(&"a1".into()));
        assert!(!s.remove_queued(&"a1".into()));
        assert_eq!(s.queued_ids(), vec![TaskId::from("a0"), TaskId::from("a2")]);
        assert_eq!(s.owner(&"a0".into()), Some("A"));
        assert_eq!(s.owner(&"a1".into()), None);
        assert_eq!(s.next(|_| false).map(|t| t.to_string()), Some("a0".into()));
        assert_eq!(s.next(|_| false).map(|t| t.to_string()), Some("a2".into()));
        assert_eq!(s.next(|_| false), None);
    }

    #[test]
    fn suspended_tasks_free_their_slot_and_resume_before_new_ones() {
        let mut s = Scheduler::default();
        let (a, b) = (TaskId::from("a"), TaskId::from("b"));
        // One slot; `a` runs, then waits for an approval.
        assert_eq!(s.slots_used(1), 1);
        s.suspend(&a);
        assert_eq!(s.slots_used(1), 0, "a suspended task holds no slot");
        // `b` starts meanwhile (2 running, one suspended).
        assert_eq!(s.slots_used(2), 1);
        // `a` is answered: no slot free, so it waits, and holds its claim on the next one.
        assert!(!s.try_resume(&a, 2, 1));
        assert_eq!(s.slots_used(2), 2, "nothing new starts while `a` waits");
        // `b` finishes: `a` gets the slot.
        s.finished(&b);
        assert!(s.try_resume(&a, 1, 1));
        assert_eq!(s.slots_used(1), 1);
        // A cancelled suspended task takes nothing back.
        s.suspend(&a);
        s.resume_to_finish(&a);
        assert_eq!(s.slots_used(1), 1);
        assert!(s.try_resume(&a, 1, 1), "not suspended: nothing to wait for");
    }
}
