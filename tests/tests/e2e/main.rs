//! Multi-process end-to-end tests: real processes, real iroh endpoints on loopback with relays
//! off, real redb files.

mod addrs;
mod agent;
mod clocks;
mod connectors;
mod crash;
mod desktop_x11;
mod executor;
mod faults_net;
mod history;
mod hostile_peers;
mod pairing;
mod push;
mod recovery;
mod several_phones;
mod sync;
