//! Multi-process end-to-end tests: real processes, real iroh endpoints on loopback with relays
//! off, real redb files.

mod pairing;
mod sync;
