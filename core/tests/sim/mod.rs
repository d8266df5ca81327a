//! What the deterministic simulations (`simulation.rs`, `hub_simulation.rs`) share: the seeded
//! generator, the wire between two sides with its faults, and running seeds.

#![allow(dead_code)]

use deskhand_core::Frame;

/// splitmix64: tiny, fast, and the same on every platform.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p` per mille.
    pub fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

/// A frame on its way, delivered at `due` (virtual ms); `seq` breaks ties in sending order.
pub struct Packet {
    pub due: u64,
    pub seq: u64,
    pub frame: Frame,
}

/// Faults of the wire, per mille per frame.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub drop: u64,
    pub duplicate: u64,
    pub reorder: u64,
}

/// What became of one frame sent.
#[derive(Default)]
pub struct Sent {
    pub dropped: bool,
    pub duplicated: bool,
    /// Copies held back so that later frames overtake them.
    pub reordered: u64,
}

/// The two directions of one stream between side 0 and side 1.
#[derive(Default)]
pub struct Wire {
    /// Frames on their way to each side.
    pub inbox: [Vec<Packet>; 2],
    /// Latest due time handed out per direction, which keeps frames that are not reordered in
    /// order.
    fifo_due: [u64; 2],
}

impl Wire {
    /// Sends `frame` towards side `to` at `now`: 1–20 ms on the way, in order unless `faults`
    /// (none: a perfect wire) drop, duplicate or reorder it. `seq` numbers every copy.
    pub fn send(
        &mut self,
        to: usize,
        frame: &Frame,
        now: u64,
        seq: &mut u64,
        rng: &mut Rng,
        faults: Option<Faults>,
    ) -> Sent {
        let mut sent = Sent::default();
        if faults.is_some_and(|f| rng.per_mille(f.drop)) {
            sent.dropped = true;
            return sent;
        }
        sent.duplicated = faults.is_some_and(|f| rng.per_mille(f.duplicate));
        for _ in 0..if sent.duplicated { 2 } else { 1 } {
            let mut due = now + 1 + rng.below(20);
            if faults.is_some_and(|f| rng.per_mille(f.reorder)) {
                sent.reordered += 1;
                due += rng.below(500);
            } else {
                due = due.max(self.fifo_due[to]);
                self.fifo_due[to] = due;
            }
            *seq += 1;
            self.inbox[to].push(Packet {
                due,
                seq: *seq,
                frame: frame.clone(),
            });
        }
        sent
    }
}

/// The seeds to run: `SIM_SEED=<n>` alone, or `0..SIM_SEEDS` (`default` when unset).
pub fn seeds(default: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default);
            (0..n).collect()
        }
    }
}

/// Runs one seed's `run`, a panic turned into its `Err`.
pub fn catch<S>(
    run: impl FnOnce() -> Result<S, String> + std::panic::UnwindSafe,
) -> Result<S, String> {
    std::panic::catch_unwind(run).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        Err(format!("panicked: {what}"))
    })
}
