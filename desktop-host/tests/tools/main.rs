//! Integration tests of the local tools against a real X server: screen capture and keyboard and
//! mouse input. Each test starts its own Xvfb and stops it when done, failed or not. Without
//! Xvfb these tests fail (they do not skip): run `scripts/ensure-deps x11` as root first.

#![allow(clippy::unwrap_used)]

mod input;
mod screen;

use deskhand_tests::x11;
