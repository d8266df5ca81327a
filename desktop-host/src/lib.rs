//! The Deskhand desktop host as a library: the pieces the `deskhand` binary is built from, exposed
//! so the integration tests can drive them directly.

#![deny(missing_docs)]

pub mod agent;
pub mod config;
pub mod console;
pub mod executor;
pub mod fault;
pub mod mcp;
pub mod model;
pub mod paths;
pub mod policy;
pub mod push;
pub mod registry;
pub mod run_rules;
mod scheduler;
pub mod tools;
