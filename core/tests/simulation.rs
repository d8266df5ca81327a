//! Deterministic simulation of the sync session: one desktop (the hub) and three phones in a star,
//! a lossy network and a virtual clock. No sockets, no threads, no wall clock: one seed replays one
//! run exactly (`SIM_SEED=<seed> cargo test -p deskhand-core --test simulation`, add `SIM_TRACE=1`
//! for a log of every frame).
//!
//! A run has three phases. Chaos: every node edits its document while frames are dropped,
//! duplicated and reordered, links go down and come back (new sessions resumed from the sync state
//! each side persisted), and time jumps so that pings, resends and timeouts fire. Heal: faults and
//! edits stop, every link that is down is reconnected (live sessions are kept: they must recover on
//! their own), and the run must converge within a bounded virtual time, then fall quiet: no sync
//! message carries a change once the documents agree, and idle sessions stop sending sync messages.
//! Restart: every link drops and is resumed from the persisted sync states; nothing is resent.
//! Then every document must hold the same heads, read the same, and hold every message written
//! anywhere exactly once.
//!
//! `SIM_SEEDS=<n>` runs seeds `0..n` (64 by default); `PROPTEST_CASES` sets the number of random
//! fault mixes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod sim;
use sim::{Faults, Rng, Wire};

use automerge::{Automerge, ChangeHash};
use deskhand_core::authorship::SignatureBook;
use deskhand_core::schema::{DesktopInfo, ExecutorState};
use deskhand_core::session::{DEAD_AFTER_MS, PING_AFTER_MS, RESEND_AFTER_MS};
use deskhand_core::trust::{AcceptAll, Standing};

/// The simulation's nodes accept everything ([`AcceptAll`]): no signatures are needed.
static NO_SIGNATURES: std::sync::LazyLock<SignatureBook> =
    std::sync::LazyLock::new(SignatureBook::new);
use deskhand_core::{
    DeviceId, DocId, Frame, Message, MessageId, Role, SchemaError, SessionError, SessionOutput,
    SyncSession, Task, TaskId, Workspace,
};

const DESKTOP: usize = 0;
const PHONES: usize = 3;
/// Virtual time the heal phase may take to converge.
const HEAL_LIMIT_MS: u64 = 60_000;
/// After convergence no sync message may carry changes, and after this settling time no sync
/// message may be sent at all (pings keep going) ...
const SETTLE_MS: u64 = 5_000;
/// ... for this long.
const QUIET_WINDOW_MS: u64 = 60_000;
/// Guards against a loop that never advances the clock.
const MAX_EVENTS: u64 = 100_000;

/// What one run does. Probabilities are per mille: per frame for the network faults, per chaos
/// step for the rest.
#[derive(Clone, Copy, Debug)]
struct Config {
    seed: u64,
    chaos_steps: u64,
    drop: u64,
    duplicate: u64,
    reorder: u64,
    edit: u64,
    disconnect: u64,
    reconnect: u64,
}

impl Config {
    fn from_seed(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x5EED_5EED_5EED_5EED);
        Config {
            seed,
            chaos_steps: 300 + r.below(300),
            drop: r.below(250),
            duplicate: r.below(150),
            reorder: r.below(250),
            edit: 150 + r.below(250),
            disconnect: r.below(25),
            reconnect: 20 + r.below(100),
        }
    }
}

struct Node {
    id: DeviceId,
    doc: Automerge,
    doc_id: Option<DocId>,
    /// The last sync state persisted for each peer: what a new session resumes from.
    sync_states: BTreeMap<DeviceId, Vec<u8>>,
}

/// The connection between the desktop (side 0) and one phone (side 1).
#[derive(Default)]
struct Link {
    /// Both are `Some` while the link is up.
    sessions: [Option<SyncSession>; 2],
    /// Frames on their way to each side.
    wire: Wire,
}

impl Link {
    fn is_up(&self) -> bool {
        self.sessions[0].is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Deliver {
        link: usize,
        side: usize,
        index: usize,
    },
    Tick {
        link: usize,
        side: usize,
    },
}

#[derive(Debug, Default)]
struct Stats {
    frames: u64,
    sync_frames: u64,
    dropped: u64,
    duplicated: u64,
    reordered: u64,
    disconnects: u64,
    session_errors: BTreeMap<&'static str, u64>,
    edits: u64,
    events: u64,
    heal_ms: u64,
    quiet_sync_frames: u64,
}

struct Sim {
    cfg: Config,
    rng: Rng,
    now: u64,
    seq: u64,
    events: u64,
    chaos: bool,
    trace: bool,
    nodes: Vec<Node>,
    links: Vec<Link>,
    messages_written: Vec<String>,
    tasks_written: Vec<String>,
    /// Session errors once the chaos' aftermath is over: there must be none.
    heal_errors: Vec<String>,
    heal_start: Option<u64>,
    /// Sync frames that carried changes, counted while watching for quiet.
    changes_sent: u64,
    stats: Stats,
}

fn node_of(link: usize, side: usize) -> usize {
    if side == 0 { DESKTOP } else { link + 1 }
}

fn error_kind(e: &SessionError) -> &'static str {
    match e {
        SessionError::ProtocolMismatch { .. } => "protocol-mismatch",
        SessionError::WrongDocument { .. } => "wrong-document",
        SessionError::Protocol(_) => "protocol",
        SessionError::Refused(_) => "refused",
        SessionError::Apply(_) => "apply",
        SessionError::Timeout(_) => "timeout",
        SessionError::ClosedByPeer { .. } => "closed-by-peer",
        _ => "other",
    }
}

fn device(n: u8) -> DeviceId {
    let mut b = [n; 32];
    b[0] = 0xD0;
    DeviceId::from_bytes(b)
}

impl Sim {
    fn new(cfg: Config) -> Self {
        let desk = device(1);
        let mut desktop_doc = Automerge::new().with_actor(desk.actor_id());
        desktop_doc
            .transact::<_, _, SchemaError>(|tx| {
                Workspace::init(
                    tx,
                    &DesktopInfo {
                        id: desk.to_string(),
                        name: "desk".into(),
                        os: "linux".into(),
                        heartbeat_at: 0,
                        executor: ExecutorState::Idle,
                    },
                )
            })
            .expect("init the workspace");
        let mut nodes = vec![Node {
            id: desk,
            doc: desktop_doc,
            doc_id: Some(DocId::from_bytes([0xAB; 16])),
            sync_states: BTreeMap::new(),
        }];
        for p in 0..PHONES {
            let id = device(2 + p as u8);
            nodes.push(Node {
                id,
                doc: Automerge::new().with_actor(id.actor_id()),
                doc_id: None,
                sync_states: BTreeMap::new(),
            });
        }
        Sim {
            cfg,
            rng: Rng(cfg.seed),
            now: 0,
            seq: 0,
            events: 0,
            chaos: true,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            nodes,
            links: (0..PHONES).map(|_| Link::default()).collect(),
            messages_written: Vec::new(),
            tasks_written: Vec::new(),
            heal_errors: Vec::new(),
            heal_start: None,
            changes_sent: 0,
            stats: Stats::default(),
        }
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>8}] {}", self.now, what());
        }
    }

    fn connect(&mut self, link: usize) {
        debug_assert!(!self.links[link].is_up());
        self.log(|| format!("link {link} up"));
        for side in 0..2 {
            let node = &self.nodes[node_of(link, side)];
            let peer = self.nodes[node_of(link, 1 - side)].id;
            let persisted = node.sync_states.get(&peer).map(Vec::as_slice);
            self.links[link].sessions[side] =
                Some(SyncSession::new(peer, node.doc_id, persisted, self.now));
        }
        for side in 0..2 {
            let doc = &self.nodes[node_of(link, side)].doc;
            let out = self.links[link].sessions[side]
                .as_mut()
                .expect("just created")
                .start(doc);
            self.drive(link, side, out);
        }
    }

    /// The connection closes: both sessions end and whatever was on the wire is lost.
    fn disconnect(&mut self, link: usize) {
        self.log(|| format!("link {link} down"));
        self.stats.disconnects += 1;
        self.links[link] = Link::default();
    }

    fn fail(&mut self, link: usize, side: usize, e: SessionError) {
        self.log(|| format!("link {link} side {side} error: {e}"));
        *self.stats.session_errors.entry(error_kind(&e)).or_default() += 1;
        // Frames lost or held back during the chaos may still end a session early in the heal
        // (a silence that began before it, a held-back hello); after that, nothing may fail.
        if let Some(start) = self.heal_start
            && self.now > start + DEAD_AFTER_MS
        {
            self.heal_errors
                .push(format!("t={} link {link} side {side}: {e}", self.now));
        }
        // The side that failed says goodbye and closes the stream: the peer's session ends too.
        self.disconnect(link);
    }

    fn transmit(&mut self, link: usize, to: usize, frame: Frame) {
        self.stats.frames += 1;
        if let Frame::Sync(bytes) = &frame {
            self.stats.sync_frames += 1;
            let has_changes = automerge::sync::Message::decode(bytes)
                .map(|m| !m.changes.is_empty())
                .unwrap_or(true);
            if has_changes {
                self.changes_sent += 1;
            }
        }
        self.log(|| format!("link {link} -> side {to}: {}", describe(&frame)));
        let faults = self.chaos.then_some(Faults {
            drop: self.cfg.drop,
            duplicate: self.cfg.duplicate,
            reorder: self.cfg.reorder,
        });
        let sent =
            self.links[link]
                .wire
                .send(to, &frame, self.now, &mut self.seq, &mut self.rng, faults);
        if sent.dropped {
            self.stats.dropped += 1;
            self.log(|| "  dropped".into());
        }
        self.stats.duplicated += u64::from(sent.duplicated);
        self.stats.reordered += sent.reordered;
    }

    /// Carries out what a session asked for, including what that in turn causes.
    fn drive(&mut self, link: usize, side: usize, out: Vec<SessionOutput>) {
        let mut work: VecDeque<(usize, usize, SessionOutput)> =
            out.into_iter().map(|o| (link, side, o)).collect();
        while let Some((l, s, o)) = work.pop_front() {
            let node = node_of(l, s);
            match o {
                SessionOutput::Send(frame) => {
                    if self.links[l].is_up() {
                        self.transmit(l, 1 - s, frame);
                    }
                }
                SessionOutput::Received(pending) => {
                    let Some(session) = self.links[l].sessions[s].as_mut() else {
                        continue;
                    };
                    match session.apply(
                        pending,
                        &mut self.nodes[node].doc,
                        &NO_SIGNATURES,
                        &AcceptAll,
                        &|_| Standing::Paired,
                        self.now,
                    ) {
                        Ok(more) => work.extend(more.into_iter().map(|o| (l, s, o))),
                        Err(e) => self.fail(l, s, e),
                    }
                }
                SessionOutput::DocChanged { .. } => {
                    // Storing is instant here: release the hold the session put on itself, so it
                    // answers the peer whose changes these were.
                    if let Some(session) = self.links[l].sessions[s].as_mut() {
                        session.set_hold(false);
                        let more = session.on_local_change(
                            &self.nodes[node].doc,
                            &NO_SIGNATURES,
                            self.now,
                        );
                        work.extend(more.into_iter().map(|o| (l, s, o)));
                    }
                    // The hub relays: a phone's changes wake its sessions with the other phones.
                    if node == DESKTOP {
                        for other in (0..PHONES).filter(|&o| o != l) {
                            if let Some(session) = self.links[other].sessions[0].as_mut() {
                                let more = session.on_local_change(
                                    &self.nodes[DESKTOP].doc,
                                    &NO_SIGNATURES,
                                    self.now,
                                );
                                work.extend(more.into_iter().map(|o| (other, 0, o)));
                            }
                        }
                    }
                }
                SessionOutput::PersistSyncState(bytes) => {
                    let peer = self.nodes[node_of(l, 1 - s)].id;
                    self.nodes[node].sync_states.insert(peer, bytes);
                }
                SessionOutput::AdoptDocId(id) => {
                    let n = &mut self.nodes[node];
                    assert!(
                        n.doc_id.is_none_or(|ours| ours == id),
                        "node {node} told to adopt {id} but holds {:?}",
                        n.doc_id
                    );
                    n.doc_id = Some(id);
                }
                SessionOutput::PeerClockOffset(_) => {}
            }
        }
    }

    fn next_event(&self) -> Option<(u64, Event)> {
        let mut best: Option<(u64, u64, Event)> = None;
        let mut consider = |t: u64, tie: u64, e: Event| {
            if best.is_none_or(|(bt, btie, be)| (t, tie, e) < (bt, btie, be)) {
                best = Some((t, tie, e));
            }
        };
        for (link, l) in self.links.iter().enumerate() {
            for side in 0..2 {
                let Some(session) = &l.sessions[side] else {
                    continue;
                };
                for (index, p) in l.wire.inbox[side].iter().enumerate() {
                    consider(p.due, p.seq, Event::Deliver { link, side, index });
                }
                consider(
                    session.next_deadline(),
                    u64::MAX,
                    Event::Tick { link, side },
                );
            }
        }
        best.map(|(t, _, e)| (t.max(self.now), e))
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        self.events += 1;
        if self.events > MAX_EVENTS {
            return Err(format!(
                "more than {MAX_EVENTS} events: a loop that never settles"
            ));
        }
        match event {
            Event::Deliver { link, side, index } => {
                let p = self.links[link].wire.inbox[side].swap_remove(index);
                let len = p.frame.encode().len();
                self.log(|| format!("link {link} side {side} <- {}", describe(&p.frame)));
                let doc = &self.nodes[node_of(link, side)].doc;
                let session = self.links[link].sessions[side]
                    .as_mut()
                    .expect("link is up");
                match session.on_frame(p.frame, len, doc, &NO_SIGNATURES, self.now) {
                    Ok(out) => self.drive(link, side, out),
                    Err(e) => self.fail(link, side, e),
                }
            }
            Event::Tick { link, side } => {
                let doc = &self.nodes[node_of(link, side)].doc;
                let session = self.links[link].sessions[side]
                    .as_mut()
                    .expect("link is up");
                match session.on_tick(doc, &NO_SIGNATURES, self.now) {
                    Ok(out) => {
                        let next = session.next_deadline();
                        if next <= self.now {
                            return Err(format!(
                                "link {link} side {side}: on_tick at {} left next_deadline at {next}",
                                self.now
                            ));
                        }
                        self.drive(link, side, out);
                    }
                    Err(e) => self.fail(link, side, e),
                }
            }
        }
        Ok(())
    }

    /// Processes every event due up to `until`, then sets the clock to it.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        loop {
            self.revive();
            let Some((t, e)) = self.next_event() else {
                break;
            };
            if t > until {
                break;
            }
            self.now = t;
            self.step(e)?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    fn edit(&mut self, node: usize) {
        let k = self.messages_written.len() + self.tasks_written.len();
        let n = &mut self.nodes[node];
        if Workspace::check_version(&n.doc).is_err() {
            // A phone cannot write before it has received the workspace.
            return;
        }
        let author = n.id.to_string();
        let now = self.now as i64;
        if node != DESKTOP && self.rng.per_mille(300) {
            let task = Task::queued(
                TaskId::from(format!("t{node}-{k}")),
                format!("task {k} from node {node}"),
                &n.id,
                now,
            );
            n.doc
                .transact::<_, _, SchemaError>(|tx| Workspace::add_task(tx, &task))
                .expect("add a task");
            self.tasks_written.push(task.id.to_string());
        } else {
            let msg = Message {
                id: MessageId::from(format!("m{node}-{k}")),
                author,
                role: if node == DESKTOP {
                    Role::Agent
                } else {
                    Role::User
                },
                text: format!("message {k} from node {node}"),
                created_at: now,
                task_id: None,
            };
            n.doc
                .transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &msg))
                .expect("append a message");
            self.messages_written.push(msg.id.to_string());
        }
        self.stats.edits += 1;
        self.log(|| format!("node {node} edits ({k})"));
        // Every local change wakes every session of the node.
        for link in 0..PHONES {
            for side in 0..2 {
                if node_of(link, side) != node {
                    continue;
                }
                if let Some(session) = self.links[link].sessions[side].as_mut() {
                    let out =
                        session.on_local_change(&self.nodes[node].doc, &NO_SIGNATURES, self.now);
                    self.drive(link, side, out);
                }
            }
        }
    }

    fn chaos(&mut self) -> Result<(), String> {
        for link in 0..PHONES {
            self.connect(link);
        }
        for _ in 0..self.cfg.chaos_steps {
            // Mostly small steps; now and then a long silence so that pings, resends and
            // timeouts fire.
            let dt = if self.rng.per_mille(30) {
                RESEND_AFTER_MS + self.rng.below(4 * PING_AFTER_MS)
            } else {
                self.rng.below(150)
            };
            self.run_until(self.now + dt)?;
            if self.rng.per_mille(self.cfg.edit) {
                let node = self.rng.below(1 + PHONES as u64) as usize;
                self.edit(node);
            }
            let link = self.rng.below(PHONES as u64) as usize;
            if self.links[link].is_up() {
                if self.rng.per_mille(self.cfg.disconnect) {
                    self.disconnect(link);
                }
            } else if self.rng.per_mille(self.cfg.reconnect) {
                self.connect(link);
            }
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        let heads = sorted_heads(&self.nodes[DESKTOP].doc);
        self.links
            .iter()
            .all(|l| l.is_up() && l.wire.inbox.iter().all(Vec::is_empty))
            && self.nodes.iter().all(|n| sorted_heads(&n.doc) == heads)
    }

    /// Once healing, a link that is down is reconnected at once.
    fn revive(&mut self) {
        if self.chaos {
            return;
        }
        for link in 0..PHONES {
            if !self.links[link].is_up() {
                self.connect(link);
            }
        }
    }

    fn heal(&mut self) -> Result<(), String> {
        self.chaos = false;
        self.log(|| "heal".into());
        let start = self.now;
        self.heal_start = Some(start);
        loop {
            self.revive();
            if self.converged() {
                break;
            }
            let Some((t, e)) = self.next_event() else {
                return Err("nothing left to do, yet the documents differ".into());
            };
            if t > start + HEAL_LIMIT_MS {
                return Err(format!(
                    "not converged {HEAL_LIMIT_MS} ms after the heal began\n{}",
                    self.heads_report()
                ));
            }
            self.now = t;
            self.step(e)?;
        }
        self.stats.heal_ms = self.now - start;
        // Converged: now nothing may change, and no sync message may carry changes.
        self.log(|| "converged".into());
        let before = sorted_heads(&self.nodes[DESKTOP].doc);
        self.changes_sent = 0;
        // A session whose last answer was lost during the chaos may still re-negotiate once, and
        // one that ends in the chaos' aftermath is resumed.
        self.run_until(self.now.max(start + DEAD_AFTER_MS) + SETTLE_MS)?;
        let sync_before = self.stats.sync_frames;
        self.run_until(self.now + QUIET_WINDOW_MS)?;
        self.stats.quiet_sync_frames = self.stats.sync_frames - sync_before;
        if !self.heal_errors.is_empty() {
            return Err(format!(
                "sessions failed once the chaos' aftermath was over:\n{}",
                self.heal_errors.join("\n")
            ));
        }
        if self.nodes.iter().any(|n| sorted_heads(&n.doc) != before) {
            return Err(format!(
                "documents diverged again after converging\n{}",
                self.heads_report()
            ));
        }
        if self.stats.quiet_sync_frames > 0 {
            return Err(format!(
                "{} sync messages in the {QUIET_WINDOW_MS} ms after the network settled: \
                 idle sessions must fall quiet",
                self.stats.quiet_sync_frames
            ));
        }
        if self.changes_sent > 0 {
            return Err(format!(
                "{} sync messages carried changes after convergence",
                self.changes_sent
            ));
        }
        Ok(())
    }

    /// Every link drops and comes back, resumed from the persisted sync states: with nothing
    /// missing anywhere, no change may cross the wire.
    fn restart(&mut self) -> Result<(), String> {
        for link in 0..PHONES {
            for side in 0..2 {
                let node = &self.nodes[node_of(link, side)];
                let peer = self.nodes[node_of(link, 1 - side)].id;
                if !node.sync_states.contains_key(&peer) {
                    return Err(format!(
                        "link {link} side {side} never persisted a sync state"
                    ));
                }
            }
            self.disconnect(link);
        }
        self.changes_sent = 0;
        self.run_until(self.now + SETTLE_MS)?;
        if !self.converged() {
            return Err(format!(
                "not converged after a restart\n{}",
                self.heads_report()
            ));
        }
        if self.changes_sent > 0 {
            return Err(format!(
                "{} sync messages carried changes after a restart with nothing missing",
                self.changes_sent
            ));
        }
        if !self.heal_errors.is_empty() {
            return Err(format!(
                "sessions failed after the restart:\n{}",
                self.heal_errors.join("\n")
            ));
        }
        Ok(())
    }

    fn heads_report(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "  node {i}: {} heads, {} changes, {} messages",
                    n.doc.get_heads().len(),
                    n.doc.get_changes(&[]).len(),
                    Workspace::message_count(&n.doc)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn check_content(&self) -> Result<(), String> {
        let reference = Workspace::read(&self.nodes[DESKTOP].doc).map_err(|e| e.to_string())?;
        let expected_messages: BTreeSet<&str> =
            self.messages_written.iter().map(String::as_str).collect();
        let expected_tasks: BTreeSet<&str> =
            self.tasks_written.iter().map(String::as_str).collect();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.doc_id != self.nodes[DESKTOP].doc_id {
                return Err(format!("node {i} holds document {:?}", node.doc_id));
            }
            let ws = Workspace::read(&node.doc).map_err(|e| format!("node {i}: {e}"))?;
            if ws != reference {
                return Err(format!("node {i} reads differently from the desktop"));
            }
            let mut seen = BTreeMap::<&str, usize>::new();
            for m in &ws.messages {
                *seen.entry(m.id.as_str()).or_default() += 1;
            }
            if let Some((id, n)) = seen.iter().find(|(_, n)| **n != 1) {
                return Err(format!("node {i}: message {id} appears {n} times"));
            }
            let ids: BTreeSet<&str> = seen.keys().copied().collect();
            if ids != expected_messages {
                return Err(format!(
                    "node {i}: messages differ from those written: missing {:?}, unexpected {:?}",
                    expected_messages.difference(&ids).collect::<Vec<_>>(),
                    ids.difference(&expected_messages).collect::<Vec<_>>()
                ));
            }
            let tasks: BTreeSet<&str> = ws.tasks.keys().map(String::as_str).collect();
            if tasks != expected_tasks {
                return Err(format!("node {i}: tasks differ from those written"));
            }
        }
        Ok(())
    }
}

fn sorted_heads(doc: &Automerge) -> Vec<ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Sync(bytes) => match automerge::sync::Message::decode(bytes) {
            Ok(m) => format!(
                "sync(heads {}, need {}, have {}, changes {})",
                m.heads.len(),
                m.need.len(),
                m.have.len(),
                m.changes.len()
            ),
            Err(_) => "sync(undecodable)".into(),
        },
        Frame::Hello(h) => format!("hello(heads {})", h.heads.len()),
        other => other.kind_name().into(),
    }
}

/// One whole run; `Err` says what went wrong.
fn run(cfg: Config) -> Result<Stats, String> {
    let mut sim = Sim::new(cfg);
    sim.chaos()?;
    sim.heal()?;
    sim.restart()?;
    sim.check_content()?;
    sim.stats.events = sim.events;
    Ok(sim.stats)
}

#[test]
fn star_converges_under_drops_duplicates_reorders_and_disconnects() {
    let mut failures = Vec::new();
    let mut total = Stats::default();
    let seeds = sim::seeds(64);
    for &seed in &seeds {
        let cfg = Config::from_seed(seed);
        let result = sim::catch(|| run(cfg));
        match result {
            Ok(s) if s.edits == 0 => {
                eprintln!("seed {seed} made no edit: the run exercised nothing");
                failures.push(seed);
            }
            Ok(s) => {
                total.frames += s.frames;
                total.sync_frames += s.sync_frames;
                total.dropped += s.dropped;
                total.duplicated += s.duplicated;
                total.reordered += s.reordered;
                total.disconnects += s.disconnects;
                total.edits += s.edits;
                total.events = total.events.max(s.events);
                total.heal_ms = total.heal_ms.max(s.heal_ms);
                for (k, v) in s.session_errors {
                    *total.session_errors.entry(k).or_default() += v;
                }
            }
            Err(e) => {
                eprintln!("seed {seed} failed ({cfg:?}): {e}\n  replay: SIM_SEED={seed}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} seeds: {} edits; {} frames ({} sync), {} dropped, {} duplicated, {} reordered; \
         {} disconnects; session errors {:?}; slowest heal {} ms of virtual time; \
         most events in one run {}",
        seeds.len(),
        total.edits,
        total.frames,
        total.sync_frames,
        total.dropped,
        total.duplicated,
        total.reordered,
        total.disconnects,
        total.session_errors,
        total.heal_ms,
        total.events,
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(8),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/simulation.txt"),
        )),
        ..proptest::test_runner::Config::default()
    })]

    /// Any mix of faults, including harsher ones than the seeded runs use; shrinks towards
    /// fewer steps and milder faults.
    #[test]
    fn star_converges_for_any_fault_mix(
        seed: u64,
        chaos_steps in 0u64..500,
        drop in 0u64..400,
        duplicate in 0u64..300,
        reorder in 0u64..400,
        edit in 50u64..700,
        disconnect in 0u64..60,
        reconnect in 10u64..300,
    ) {
        let cfg = Config { seed, chaos_steps, drop, duplicate, reorder, edit, disconnect, reconnect };
        if let Err(e) = run(cfg) {
            proptest::prop_assert!(false, "{:?}: {}", cfg, e);
        }
    }
}
