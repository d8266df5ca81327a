//! A userspace UDP proxy that puts a bad network between two hosts (`tc netem` is not available
//! here): per link and per direction it delays with jitter, drops, duplicates, reorders, cuts
//! (partitions) and heals, and it can change either side's address mid-session.
//!
//! One [`Netem`] owns one scheduler thread; each [`Link`] forwards what clients send to its
//! *front* address on to one *target* (the server), NAT-style: every client source address gets
//! its own upstream socket, so the target sees one source address per client, and the target's
//! answers go back to the client from the front address. [`Dir::Up`] is client → target,
//! [`Dir::Down`] target → client.
//!
//! All randomness comes from one seeded generator per link, so a run with the same seed and the
//! same traffic takes the same decisions. Everything stops when the `Netem` is dropped.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A direction on a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client → target.
    Up,
    /// Target → client.
    Down,
}

/// What one direction of a link does to each datagram. The default forwards everything at once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impair {
    /// Base one-way delay.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus a uniform draw in `[-jitter, +jitter]` (never below
    /// zero). Jitter larger than the spacing of datagrams reorders them, as on a real path.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram is sent twice (the copy `dup_gap` later).
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held back an extra `reorder_gap`, so the ones
    /// sent after it overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back (default 25 ms when zero).
    pub reorder_gap: Duration,
    /// Partitioned: every datagram is dropped.
    pub cut: bool,
}

impl Impair {
    /// `delay ± jitter` and `loss` (a probability), nothing else.
    pub fn lossy(delay: Duration, jitter: Duration, loss: f64) -> Self {
        Self {
            delay,
            jitter,
            loss,
            ..Self::default()
        }
    }
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams received from the sender.
    pub received: u64,
    /// Datagrams dropped (loss or cut).
    pub dropped: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Datagrams held back to be reordered.
    pub reordered: u64,
    /// Datagrams handed to the kernel for the receiver (copies included).
    pub sent: u64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for drawing impairments
/// and the crash tests' seeded rounds. `SplitMix64(seed)` replays the same draws.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (slightly biased for huge `n`; `n` must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// A datagram waiting for its time.
struct Pending {
    at: Instant,
    seq: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    link: Arc<LinkShared>,
    dir: Dir,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and the earliest must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Scheduler {
    queue: Mutex<BinaryHeap<Pending>>,
    wake: Condvar,
    stop: AtomicBool,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking forwarder thread must not wedge the rest of the test.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Scheduler {
    fn push(&self, p: Pending) {
        lock(&self.queue).push(p);
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut q = lock(&self.queue);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            match q.peek().map(|p| p.at) {
                Some(at) if at <= now => {
                    if let Some(p) = q.pop() {
                        drop(q);
                        // Cut after scheduling: what is in flight when a link is cut is lost too.
                        if !p.link.dir_state(p.dir).impair.cut
                            && p.socket.send_to(&p.bytes, p.to).is_ok()
                        {
                            p.link.dir_state(p.dir).stats.sent += 1;
                        }
                        q = lock(&self.queue);
                    }
                }
                Some(at) => {
                    q = self
                        .wake
                        .wait_timeout(q, at - now)
                        .map(|r| r.0)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                None => {
                    q = self
                        .wake
                        .wait_timeout(q, Duration::from_millis(100))
                        .map(|r| r.0)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }
}

/// The proxy: owns the scheduler thread and every link's threads; stops them all on drop.
pub struct Netem {
    sched: Arc<Scheduler>,
    seed: u64,
    links: Mutex<Vec<Arc<LinkShared>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netem {
    /// A proxy whose links draw their impairments from generators seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        let sched = Arc::new(Scheduler {
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(0),
        });
        let s = sched.clone();
        let thread = std::thread::Builder::new()
            .name("netem-scheduler".into())
            .spawn(move || s.run())
            .ok();
        Self {
            sched,
            seed,
            links: Mutex::new(Vec::new()),
            thread,
        }
    }

    /// A link that listens on `front` (port 0 picks one) and forwards to `target`; the
    /// per-client upstream sockets bind `upstream_ip` (port 0). Both directions start clean.
    ///
    /// Errors: a socket cannot be bound.
    pub fn link(
        &self,
        front: SocketAddr,
        upstream_ip: IpAddr,
        target: SocketAddr,
    ) -> io::Result<Link> {
        let mut links = lock(&self.links);
        let index = links.len() as u64;
        let socket = Arc::new(UdpSocket::bind(front)?);
        let shared = Arc::new(LinkShared {
            sched: self.sched.clone(),
            rng: Mutex::new(SplitMix64(
                self.seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F),
            )),
            up: Mutex::new(DirState::default()),
            down: Mutex::new(DirState::default()),
            front: Mutex::new(FrontSocket::new(socket.clone())),
            sessions: Mutex::new(HashMap::new()),
            target: Mutex::new(target),
            upstream_ip: Mutex::new(upstream_ip),
            stop: AtomicBool::new(false),
        });
        LinkShared::start_front(&shared, socket)?;
        links.push(shared.clone());
        Ok(Link { shared })
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        for l in lock(&self.links).iter() {
            l.stop();
        }
        self.sched.stop.store(true, Ordering::Relaxed);
        self.sched.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.sched.queue).clear();
    }
}

#[derive(Default)]
struct DirState {
    impair: Impair,
    stats: DirStats,
}

/// A socket plus the flag that tells its receive thread to stop.
struct FrontSocket {
    socket: Arc<UdpSocket>,
    closed: Arc<AtomicBool>,
}

impl FrontSocket {
    fn new(socket: Arc<UdpSocket>) -> Self {
        Self {
            socket,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

struct LinkShared {
    sched: Arc<Scheduler>,
    rng: Mutex<SplitMix64>,
    up: Mutex<DirState>,
    down: Mutex<DirState>,
    front: Mutex<FrontSocket>,
    /// Client source address → its upstream socket.
    sessions: Mutex<HashMap<SocketAddr, FrontSocket>>,
    target: Mutex<SocketAddr>,
    upstream_ip: Mutex<IpAddr>,
    stop: AtomicBool,
}

/// How often receive threads look at their stop flags.
const POLL: Duration = Duration::from_millis(50);

impl LinkShared {
    fn dir_state(&self, dir: Dir) -> MutexGuard<'_, DirState> {
        match dir {
            Dir::Up => lock(&self.up),
            Dir::Down => lock(&self.down),
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        lock(&self.front).closed.store(true, Ordering::Relaxed);
        for s in lock(&self.sessions).values() {
            s.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Decides the fate of one datagram and schedules what survives.
    fn forward(self: &Arc<Self>, dir: Dir, bytes: &[u8], socket: Arc<UdpSocket>, to: SocketAddr) {
        let imp = {
            let mut d = self.dir_state(dir);
            d.stats.received += 1;
            d.impair.clone()
        };
        let mut rng = lock(&self.rng);
        if imp.cut || rng.chance(imp.loss) {
            drop(rng);
            self.dir_state(dir).stats.dropped += 1;
            return;
        }
        let mut delay = imp.delay.as_secs_f64();
        if !imp.jitter.is_zero() {
            delay += (rng.unit() * 2.0 - 1.0) * imp.jitter.as_secs_f64();
        }
        let reordered = rng.chance(imp.reorder);
        if reordered {
            let gap = if imp.reorder_gap.is_zero() {
                Duration::from_millis(25)
            } else {
                imp.reorder_gap
            };
            delay += gap.as_secs_f64();
        }
        let dup = rng.chance(imp.duplicate);
        drop(rng);
        let now = Instant::now();
        let at = now + Duration::from_secs_f64(delay.max(0.0));
        let mut copies = vec![at];
        if dup {
            copies.push(at + Duration::from_millis(1));
        }
        {
            let mut d = self.dir_state(dir);
            d.stats.reordered += u64::from(reordered);
            d.stats.duplicated += u64::from(dup);
        }
        for at in copies {
            self.sched.push(Pending {
                at,
                seq: self.sched.seq.fetch_add(1, Ordering::Relaxed),
                socket: socket.clone(),
                to,
                bytes: bytes.to_vec(),
                link: self.clone(),
                dir,
            });
        }
    }

    /// The receive thread of a front socket: client datagrams go up.
    fn start_front(this: &Arc<Self>, socket: Arc<UdpSocket>) -> io::Result<()> {
        socket.set_read_timeout(Some(POLL))?;
        let closed = lock(&this.front).closed.clone();
        let link = this.clone();
        std::thread::Builder::new()
            .name("netem-front".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !closed.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if closed.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(up) = link.session(from) else { continue };
                    let target = *lock(&link.target);
                    link.forward(Dir::Up, &buf[..n], up, target);
                }
            })?;
        Ok(())
    }

    /// The upstream socket of client `from`, made (with its receive thread) on first use.
    fn session(self: &Arc<Self>, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        if let Some(s) = lock(&self.sessions).get(&from) {
            return Ok(s.socket.clone());
        }
        self.open_session(from)
    }

    fn open_session(self: &Arc<Self>, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let ip = *lock(&self.upstream_ip);
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0))?);
        socket.set_read_timeout(Some(POLL))?;
        let fs = FrontSocket::new(socket.clone());
        let closed = fs.closed.clone();
        if let Some(old) = lock(&self.sessions).insert(from, fs) {
            old.closed.store(true, Ordering::Relaxed);
        }
        let link = self.clone();
        let recv = socket.clone();
        std::thread::Builder::new()
            .name("netem-upstream".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !closed.load(Ordering::Relaxed) {
                    let Ok((n, src)) = recv.recv_from(&mut buf) else {
                        continue;
                    };
                    if closed.load(Ordering::Relaxed) {
                        break;
                    }
                    // Only the target answers through a session (a NAT's filtering).
                    if src != *lock(&link.target) {
                        continue;
                    }
                    let front = lock(&link.front).socket.clone();
                    link.forward(Dir::Down, &buf[..n], front, from);
                }
            })?;
        Ok(socket)
    }
}

/// One proxied path between clients and a target. Cheap to clone; lives until its [`Netem`]
/// is dropped.
#[derive(Clone)]
pub struct Link {
    shared: Arc<LinkShared>,
}

impl Link {
    /// The address clients send to (it changes with [`Link::move_front`]).
    pub fn front(&self) -> SocketAddr {
        lock(&self.shared.front)
            .socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Sets what direction `dir` does from now on (datagrams already scheduled keep their time).
    pub fn set(&self, dir: Dir, impair: Impair) {
        self.shared.dir_state(dir).impair = impair;
    }

    /// Sets both directions alike.
    pub fn set_both(&self, impair: Impair) {
        self.set(Dir::Up, impair.clone());
        self.set(Dir::Down, impair);
    }

    /// Partitions the link in both directions: everything, in flight included, is dropped.
    pub fn cut(&self) {
        self.shared.dir_state(Dir::Up).impair.cut = true;
        self.shared.dir_state(Dir::Down).impair.cut = true;
    }

    /// Ends a partition (other impairments stay as they were).
    pub fn heal(&self) {
        self.shared.dir_state(Dir::Up).impair.cut = false;
        self.shared.dir_state(Dir::Down).impair.cut = false;
    }

    /// The counters of one direction.
    pub fn stats(&self, dir: Dir) -> DirStats {
        self.shared.dir_state(dir).stats
    }

    /// Changes where the link forwards to (the server moved behind the proxy; its answers are
    /// accepted only from the new address).
    pub fn set_target(&self, target: SocketAddr) {
        *lock(&self.shared.target) = target;
    }

    /// The server's address as clients see it changes mid-session: the front moves to a new
    /// port on `ip` (port 0 picks one) and the old one stops answering; the answers of the
    /// target now come from the new front. Returns the new front address.
    ///
    /// Errors: the new socket cannot be bound.
    pub fn move_front(&self, to: SocketAddr) -> io::Result<SocketAddr> {
        let socket = Arc::new(UdpSocket::bind(to)?);
        let addr = socket.local_addr()?;
        {
            let mut f = lock(&self.shared.front);
            f.closed.store(true, Ordering::Relaxed);
            *f = FrontSocket::new(socket.clone());
        }
        LinkShared::start_front(&self.shared, socket)?;
        Ok(addr)
    }

    /// The clients' addresses as the target sees them change mid-session (a NAT rebinding, a
    /// phone moving to another network): every client gets a new upstream socket, bound to
    /// `ip` from now on; the old ones stop. Errors: a socket cannot be bound.
    pub fn move_clients(&self, ip: IpAddr) -> io::Result<()> {
        *lock(&self.shared.upstream_ip) = ip;
        let clients: Vec<SocketAddr> = lock(&self.shared.sessions).keys().copied().collect();
        for c in clients {
            self.shared.open_session(c)?;
        }
        Ok(())
    }

    /// The addresses the target currently sees the clients at.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.shared.sessions)
            .values()
            .filter_map(|s| s.socket.local_addr().ok())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed bind is a broken test machine
mod tests {
    use super::*;

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// An echo server on loopback that answers every datagram with the same bytes.
    fn echo() -> (SocketAddr, Arc<AtomicBool>) {
        let s = UdpSocket::bind((LO, 0)).unwrap();
        s.set_read_timeout(Some(POLL)).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        (addr, stop)
    }

    type Got = Vec<(Instant, Vec<u8>, SocketAddr)>;

    /// A target on loopback that records (arrival, bytes, source) of what it receives, read
    /// by its own thread so the kernel's buffer never overflows.
    struct Sink {
        socket: UdpSocket,
        got: Arc<Mutex<Got>>,
        stop: Arc<AtomicBool>,
    }

    impl Sink {
        fn new() -> (Self, SocketAddr) {
            let s = UdpSocket::bind((LO, 0)).unwrap();
            s.set_read_timeout(Some(POLL)).unwrap();
            let a = s.local_addr().unwrap();
            let got = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (r, g, st) = (s.try_clone().unwrap(), got.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !st.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = r.recv_from(&mut buf) {
                        lock(&g).push((Instant::now(), buf[..n].to_vec(), from));
                    }
                }
            });
            (
                Self {
                    socket: s,
                    got,
                    stop,
                },
                a,
            )
        }

        /// What arrived, once `quiet` passed without anything new.
        fn take(&self, quiet: Duration) -> Got {
            let mut seen = usize::MAX;
            loop {
                std::thread::sleep(quiet);
                let n = lock(&self.got).len();
                if n == seen {
                    return std::mem::take(&mut *lock(&self.got));
                }
                seen = n;
            }
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind((LO, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c
    }

    /// Receives until `quiet` passes without a datagram.
    fn drain(s: &UdpSocket, quiet: Duration) -> Got {
        s.set_read_timeout(Some(quiet)).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((Instant::now(), buf[..n].to_vec(), from));
        }
        out
    }

    fn seqs(got: &[(Instant, Vec<u8>, SocketAddr)]) -> Vec<u32> {
        got.iter()
            .map(|(_, b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Sends `n` numbered datagrams `gap` apart.
    fn send_n(c: &UdpSocket, to: SocketAddr, n: u32, gap: Duration) {
        for i in 0..n {
            c.send_to(&i.to_be_bytes(), to).unwrap();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    }

    #[test]
    fn a_clean_link_forwards_both_ways_and_the_target_sees_one_address_per_client() {
        let (target, stop) = echo();
        let net = Netem::new(1);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        let (a, b) = (client(), client());
        // Waiting for an answer that must come: a loaded machine gets seconds, not 300 ms.
        for c in [&a, &b] {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        a.send_to(b"ping a", link.front()).unwrap();
        b.send_to(b"ping b", link.front()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping a"[..], link.front()));
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping b");
        assert_eq!(link.client_addrs().len(), 2);
        // The scheduler counts a datagram after its send returns, which can be after the
        // receiver already has it: wait (bounded) for the counts to settle.
        let deadline = Instant::now() + Duration::from_secs(2);
        while (link.stats(Dir::Up).sent, link.stats(Dir::Down).sent) != (2, 2)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(link.stats(Dir::Up).sent, 2);
        assert_eq!(link.stats(Dir::Down).sent, 2);
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn delay_and_jitter_hold_each_datagram_within_the_bounds() {
        let (rx, target) = Sink::new();
        let net = Netem::new(2);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        link.set(
            Dir::Up,
            Impair::lossy(Duration::from_millis(100), Duration::from_millis(30), 0.0),
        );
        let c = client();
        let mut sent = Vec::new();
        for i in 0u32..40 {
            sent.push(Instant::now());
            c.send_to(&i.to_be_bytes(), link.front()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let got = rx.take(Duration::from_millis(400));
        assert_eq!(got.len(), 40);
        let delays: Vec<f64> = got
            .iter()
            .zip(seqs(&got))
            .map(|((at, _, _), i)| at.duration_since(sent[i as usize]).as_secs_f64() * 1e3)
            .collect();
        let (min, max) = delays
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        // 70..130 ms: never early; late only by scheduling slack (generous: CI is loaded).
        assert!(min >= 69.0, "min {min:.1} ms");
        assert!(max <= 230.0, "max {max:.1} ms");
        assert!((85.0..=150.0).contains(&mean), "mean {mean:.1} ms");
        assert!(
            max - min >= 20.0,
            "jitter spreads delays: {min:.1}..{max:.1} ms"
        );
        // ±30 ms jitter on datagrams 2 ms apart reorders some of them.
        let order = seqs(&got);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "{order:?}");
    }

    #[test]
    fn loss_drops_about_the_share_asked_and_the_same_seed_drops_the_same_datagrams() {
        let run = |seed| {
            let (rx, target) = Sink::new();
            let net = Netem::new(seed);
            let link = net.link((LO, 0).into(), LO, target).unwrap();
            link.set(Dir::Up, Impair::lossy(Duration::ZERO, Duration::ZERO, 0.2));
            let c = client();
            send_n(&c, link.front(), 2000, Duration::from_micros(100));
            let got = seqs(&rx.take(Duration::from_millis(300)));
            let st = link.stats(Dir::Up);
            assert_eq!(st.received, 2000);
            assert_eq!(st.dropped + st.sent, 2000, "{st:?}");
            got
        };
        let a = run(7);
        let lost = 2000 - a.len();
        // 20 % of 2000 = 400; a binomial's 4.5 sigma is ~80.
        assert!((320..=480).contains(&lost), "lost {lost}");
        assert_eq!(a, run(7), "same seed, same drops");
        assert_ne!(a, run(8), "another seed, other drops");
    }

    #[test]
    fn duplicate_sends_copies() {
        let (rx, target) = Sink::new();
        let net = Netem::new(3);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        link.set(
            Dir::Up,
            Impair {
                duplicate: 0.5,
                ..Impair::default()
            },
        );
        let c = client();
        send_n(&c, link.front(), 400, Duration::from_micros(200));
        let got = seqs(&rx.take(Duration::from_millis(300)));
        let st = link.stats(Dir::Up);
        assert_eq!(got.len() as u64, 400 + st.duplicated);
        assert!((140..=260).contains(&st.duplicated), "{st:?}");
        let mut uniq = got.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 400, "every datagram arrives at least once");
    }

    #[test]
    fn reorder_lets_later_datagrams_overtake_held_ones() {
        let (rx, target) = Sink::new();
        let net = Netem::new(4);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        link.set(
            Dir::Up,
            Impair {
                reorder: 0.25,
                reorder_gap: Duration::from_millis(20),
                ..Impair::default()
            },
        );
        let c = client();
        send_n(&c, link.front(), 200, Duration::from_millis(1));
        let got = seqs(&rx.take(Duration::from_millis(300)));
        assert_eq!(got.len(), 200);
        let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
        let st = link.stats(Dir::Up);
        assert!((25..=75).contains(&st.reordered), "{st:?}");
        assert!(inversions >= 10, "{inversions} inversions: {got:?}");
        // Without reordering (and without jitter), order is kept.
        link.set(Dir::Up, Impair::default());
        send_n(&c, link.front(), 200, Duration::from_millis(1));
        let got = seqs(&rx.take(Duration::from_millis(300)));
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }

    #[test]
    fn a_cut_drops_everything_in_both_directions_and_heal_restores_it() {
        let (target, stop) = echo();
        let net = Netem::new(5);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        let c = client();
        c.send_to(b"before", link.front()).unwrap();
        assert_eq!(drain(&c, Duration::from_millis(300)).len(), 1);
        // Datagrams in flight when the cut comes are lost too.
        link.set_both(Impair::lossy(
            Duration::from_millis(150),
            Duration::ZERO,
            0.0,
        ));
        c.send_to(b"in flight", link.front()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        link.cut();
        send_n(&c, link.front(), 20, Duration::ZERO);
        assert!(drain(&c, Duration::from_millis(400)).is_empty());
        link.heal();
        link.set_both(Impair::default());
        c.send_to(b"after", link.front()).unwrap();
        let got = drain(&c, Duration::from_millis(300));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"after");
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn directions_are_impaired_independently() {
        let (target, stop) = echo();
        let net = Netem::new(6);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        link.set(
            Dir::Down,
            Impair {
                cut: true,
                ..Impair::default()
            },
        );
        let c = client();
        send_n(&c, link.front(), 10, Duration::ZERO);
        assert!(drain(&c, Duration::from_millis(300)).is_empty());
        assert_eq!(link.stats(Dir::Up).sent, 10, "the way up is open");
        assert_eq!(link.stats(Dir::Down).dropped, 10);
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn moving_the_front_changes_the_servers_address_and_the_old_one_goes_dead() {
        let (target, stop) = echo();
        let net = Netem::new(7);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        let c = client();
        let old = link.front();
        c.send_to(b"1", old).unwrap();
        assert_eq!(drain(&c, Duration::from_millis(300))[0].2, old);
        let new = link.move_front((LO, 0).into()).unwrap();
        assert_ne!(new, old);
        c.send_to(b"2", old).unwrap();
        assert!(
            drain(&c, Duration::from_millis(300)).is_empty(),
            "old front is dead"
        );
        c.send_to(b"3", new).unwrap();
        let got = drain(&c, Duration::from_millis(300));
        assert_eq!((got[0].1.as_slice(), got[0].2), (&b"3"[..], new));
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn moving_the_clients_changes_the_source_address_the_target_sees() {
        let (rx, target) = Sink::new();
        let net = Netem::new(8);
        let link = net.link((LO, 0).into(), LO, target).unwrap();
        let c = client();
        c.send_to(b"a", link.front()).unwrap();
        let first = rx.take(Duration::from_millis(200))[0].2;
        link.move_clients(LO).unwrap();
        c.send_to(b"b", link.front()).unwrap();
        let second = rx.take(Duration::from_millis(200))[0].2;
        assert_ne!(first, second);
        assert_eq!(link.client_addrs(), vec![second]);
        // The target's answer to the new address reaches the client; to the old one it does not.
        rx.socket.send_to(b"to old", first).unwrap();
        rx.socket.send_to(b"to new", second).unwrap();
        let got = drain(&c, Duration::from_millis(300));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"to new");
    }
}
