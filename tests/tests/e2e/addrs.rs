//! Addresses change; pairing survives (issue 13, items 1 and 8): the desktop keeps its port
//! across restarts, publishes where it can be reached, is found on the local network (mDNS, in
//! a network namespace), names its relay in the pairing code; a phone keeps what it wrote
//! through a re-pairing.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use deskhand_core::PairingPayload;
use deskhand_tests::{Run, Serve, deskhand, deskhand_bin, free_udp_addr};
use serde_json::Value;

use crate::pairing::{fresh_code, ok, path, show, texts};

/// The addresses `serve` printed on its `listening :` line.
fn listening(serve: &Serve) -> Result<Vec<SocketAddr>> {
    let out = serve.output();
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("listening : "))
        .with_context(|| format!("no listening line in:\n{out}"))?;
    line.split(", ")
        .map(|a| a.parse().with_context(|| format!("address {a:?}")))
        .collect()
}

fn port_of(serve: &Serve) -> Result<u16> {
    let addrs = listening(serve)?;
    let port = addrs.first().context("no address")?.port();
    ensure!(
        addrs.iter().all(|a| a.port() == port),
        "one port expected: {addrs:?}"
    );
    Ok(port)
}

#[test]
fn a_desktop_keeps_its_port_across_restarts_and_moves_when_it_is_taken() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (desk, phone) = (dir.path().join("desk"), dir.path().join("phone"));
    // No --listen, as `deskhand service install` runs it.
    let serve = Serve::spawn(&[], None, &desk, &[], &[])?;
    let first = port_of(&serve)?;
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &serve.payload,
    ])?)?;
    let r = ok(deskhand(&["phone", "--data", path(&phone), "send", "one"])?)?;
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);

    // Stopped and started again: the same port, and the phone syncs without pairing again.
    serve.kill9()?;
    let serve = Serve::spawn(&[], None, &desk, &[], &[])?;
    assert_eq!(port_of(&serve)?, first, "{}", serve.output());
    let r = ok(deskhand(&["phone", "--data", path(&phone), "send", "two"])?)?;
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);
    ensure!(serve.output().contains("two"), "{}", serve.output());

    // The port is taken while it is down: it listens on another, says so, and keeps that one.
    serve.kill9()?;
    let squatter = UdpSocket::bind(("0.0.0.0", first))?;
    let serve = Serve::spawn(&[], None, &desk, &[], &[])?;
    let second = port_of(&serve)?;
    eprintln!("[addrs] port {first} taken; moved to {second}");
    assert_ne!(second, first);
    ensure!(
        serve
            .output()
            .contains(&format!("port {first}, used before, is taken")),
        "{}",
        serve.output()
    );
    // The phone is told where it is now: its next sync brings the published addresses. (It
    // still dials the old port too; here the squatter holds it, so only the new one answers
    // once learned — through a fresh pairing code, the user's cure when nothing else finds it.)
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &fresh_code(&desk, "5m")?,
    ])?)?;
    let shown = show(&phone)?;
    let dialled: Vec<&str> = shown["desktop"]["addrs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        dialled
            .first()
            .is_some_and(|a| a.ends_with(&format!(":{second}"))),
        "the published address comes first: {dialled:?}"
    );
    drop(squatter);
    serve.kill9()?;
    let serve = Serve::spawn(&[], None, &desk, &[], &[])?;
    assert_eq!(port_of(&serve)?, second, "the new port is the one kept");
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "send",
        "three",
    ])?)?;
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);
    drop(serve);
    Ok(())
}

#[test]
fn the_pairing_code_carries_the_relay_and_relay_off_leaves_it_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A relay on loopback where nothing listens: nothing leaves the machine.
    let relay = "http://127.0.0.1:9/";
    let listen = free_udp_addr().to_string();
    let serve = Serve::spawn(
        &[],
        None,
        &dir.path().join("with"),
        &["--listen", &listen, "--relay", relay],
        &[],
    )?;
    let p = PairingPayload::parse(&serve.payload)?;
    assert_eq!(p.relay.as_deref(), Some(relay), "{}", serve.payload);
    ensure!(
        serve.output().contains(&format!("relay     : {relay}")),
        "{}",
        serve.output()
    );
    // A phone paired with it dials through that relay too (and says so).
    let phone = dir.path().join("phone");
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &serve.payload,
    ])?)?;
    assert_eq!(show(&phone)?["desktop"]["relay"], relay);
    drop(serve);

    let listen = free_udp_addr().to_string();
    let serve = Serve::spawn(
        &[],
        None,
        &dir.path().join("without"),
        &["--listen", &listen, "--relay", "off"],
        &[],
    )?;
    ensure!(!serve.payload.contains("relay="), "{}", serve.payload);
    assert_eq!(PairingPayload::parse(&serve.payload)?.relay, None);
    Ok(())
}

#[test]
fn queued_messages_survive_a_re_pairing_and_forget_refuses_to_drop_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (desk, phone) = (dir.path().join("desk"), dir.path().join("phone"));
    let serve = Serve::start(&desk, free_udp_addr())?;
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &serve.payload,
    ])?)?;
    serve.kill9()?;

    // Written while the desktop is away: kept on the phone.
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "send",
        "written away",
        "--wait",
        "1",
    ])?)?;
    ensure!(r.stdout.starts_with("queued"), "{}", r.stdout);
    // A phone that cannot reach its desktop says what it tried.
    let r = deskhand(&["phone", "--data", path(&phone), "sync", "--timeout", "7"])?;
    eprintln!("[addrs] unreachable: {}", r.stderr.trim());
    ensure!(
        r.code != 0 && r.stderr.contains("tried 127.0.0.1:"),
        "{}",
        r.stderr
    );
    // Forgetting would drop it: refused, saying how to keep it.
    let r = deskhand(&["phone", "--data", path(&phone), "forget", "--wait", "1"])?;
    eprintln!("[addrs] forget refused: {}", r.stderr.trim());
    ensure!(
        r.code != 0 && r.stderr.contains("1 thing(s) written on this phone"),
        "{}",
        r.stderr
    );
    ensure!(!show(&phone)?["desktop"].is_null(), "still paired");

    // The desktop comes back somewhere the phone does not know; a fresh code, no forget.
    let serve = Serve::start(&desk, free_udp_addr())?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &fresh_code(&desk, "5m")?,
    ])?)?;
    ensure!(r.stdout.contains("Workspace received"), "{}", r.stdout);
    ok(deskhand(&["phone", "--data", path(&phone), "sync"])?)?;
    ensure!(
        serve.output().contains("written away"),
        "the queued message reached the desktop:\n{}",
        serve.output()
    );
    assert_eq!(texts(&show(&phone)?), vec!["written away"]);
    // Nothing unsent now: forget works without --force.
    ok(deskhand(&["phone", "--data", path(&phone), "forget"])?)?;

    // --force drops what is unsent, and says so.
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &fresh_code(&desk, "5m")?,
    ])?)?;
    serve.kill9()?;
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "send",
        "lost",
        "--wait",
        "1",
    ])?)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "forget",
        "--force",
    ])?)?;
    ensure!(r.stdout.contains("Dropped 1 thing(s)"), "{}", r.stdout);
    ensure!(show(&phone)?["desktop"].is_null());
    Ok(())
}

/// A network namespace with only `lo`, multicast on and routed: mDNS works inside it and
/// nowhere else. Deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Result<Option<Self>> {
        let name = format!("dh-addrs-{}", std::process::id());
        let add = Command::new("ip").args(["netns", "add", &name]).output();
        match add {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "SKIPPED: mDNS test needs network namespaces (`ip netns add` failed: {}); run as root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return Ok(None);
            }
            Err(e) => {
                eprintln!("SKIPPED: mDNS test needs the `ip` tool ({e})");
                return Ok(None);
            }
        }
        let ns = Self(name);
        ns.run(&["ip", "link", "set", "lo", "up", "multicast", "on"])?;
        ns.run(&["ip", "route", "add", "224.0.0.0/4", "dev", "lo"])?;
        Ok(Some(ns))
    }

    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.0]
    }

    fn run(&self, cmd: &[&str]) -> Result<()> {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .output()?;
        ensure!(
            o.status.success(),
            "{cmd:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    }

    /// `deskhand ARGS…` inside the namespace.
    fn deskhand(&self, args: &[&str]) -> Result<Run> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(deskhand_bin())
            .args(args)
            .env("DESKHAND_LOG", "error")
            .output()?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn a_phone_finds_its_desktop_on_another_port_by_local_network_discovery() -> Result<()> {
    let Some(ns) = Netns::create()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (desk, phone) = (dir.path().join("desk"), dir.path().join("phone"));
    let prefix = ns.prefix();
    let serve = Serve::spawn(
        &prefix,
        None,
        &desk,
        &["--listen", "127.0.0.1:41001", "--mdns", "on"],
        &[],
    )?;
    let p = path(&phone);
    ok(ns.deskhand(&["phone", "--mdns", "on", "--data", p, "pair", &serve.payload])?)?;
    let r = ok(ns.deskhand(&["phone", "--mdns", "on", "--data", p, "send", "at home"])?)?;
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);

    // The phone is away while the desktop moves: it knows only the old port.
    serve.kill9()?;
    let serve = Serve::spawn(
        &prefix,
        None,
        &desk,
        &["--listen", "127.0.0.1:41002", "--mdns", "on"],
        &[],
    )?;
    let t = std::time::Instant::now();
    let r = ok(ns.deskhand(&[
        "phone",
        "--mdns",
        "on",
        "--data",
        p,
        "send",
        "after the move",
        "--wait",
        "15",
    ])?)?;
    eprintln!(
        "[addrs] found by mDNS and delivered in {:?}: {}",
        t.elapsed(),
        r.stdout.trim()
    );
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);
    ensure!(
        serve.output().contains("after the move"),
        "{}",
        serve.output()
    );
    // And it learned the new address from the document.
    let shown: Value = serde_json::from_str(
        &ok(ns.deskhand(&["phone", "--mdns", "off", "--data", p, "show", "--json"])?)?.stdout,
    )?;
    let dialled = shown["desktop"]["addrs"].to_string();
    ensure!(dialled.contains("127.0.0.1:41002"), "{dialled}");
    // With discovery off, the learned address alone reaches it now.
    let r = ok(ns.deskhand(&["phone", "--mdns", "off", "--data", p, "send", "learned"])?)?;
    ensure!(r.stdout.starts_with("sent"), "{}", r.stdout);
    drop(serve);
    Ok(())
}
