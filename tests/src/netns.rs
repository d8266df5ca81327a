//! Hosts in their own network namespaces, wired to the test's (root) namespace by veth pairs,
//! so a [`crate::netem`] proxy in the root namespace is the only path between them.
//!
//! A [`Lab`] owns everything it creates — namespaces, veth pairs — and removes it on drop,
//! also when a test fails. Names carry the process id and a counter, and each lab takes a
//! `10.X.0.0/16` no interface of the machine uses, so tests running in parallel never collide.
//! Needs root (`ip netns add`); [`Lab::new`] returns `None` and prints why where that is not
//! permitted.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail, ensure};

/// Runs `ip ARGS…` (in `ns` when given); fails with its stderr.
fn ip(ns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["netns", "exec", ns, "ip"]);
    }
    let o = cmd.args(args).output().context("running `ip`")?;
    ensure!(
        o.status.success(),
        "ip {} {}: {}",
        ns.map(|n| format!("(in {n})")).unwrap_or_default(),
        args.join(" "),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A host: one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host(usize);

/// One veth pair between the root namespace and a host, on its own `/24`.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The host it plugs into.
    pub host: Host,
    /// The address of the root namespace's end (`10.X.N.1`): the host's gateway.
    pub root_ip: IpAddr,
    /// The address of the host's end (`10.X.N.2`).
    pub host_ip: IpAddr,
    /// The interface name inside the host.
    pub host_if: String,
    /// The interface name in the root namespace.
    root_if: String,
}

/// Namespaces and wires of one test; all removed on drop.
pub struct Lab {
    tag: String,
    /// Second octet of this lab's `10.X.0.0/16`.
    x: u8,
    namespaces: Vec<String>,
    wires: Vec<Wire>,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A new, empty lab; `None` (with a line on stderr saying why) where network namespaces
    /// cannot be made — not root, no `ip` tool. Errors: `ip` fails for another reason.
    pub fn new() -> Result<Option<Self>> {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("dh{}x{n}", std::process::id() % 100_000);
        let probe = format!("{tag}probe");
        match Command::new("ip").args(["netns", "add", &probe]).output() {
            Ok(o) if o.status.success() => {
                let _ = ip(None, &["netns", "del", &probe]);
            }
            Ok(o) => {
                eprintln!(
                    "SKIPPED: this test needs network namespaces (`ip netns add` failed: {}); run it as root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return Ok(None);
            }
            Err(e) => {
                eprintln!("SKIPPED: this test needs the `ip` tool ({e})");
                return Ok(None);
            }
        }
        // A /16 nothing on the machine uses; the pick starts from the pid, so parallel test
        // processes start at different places.
        let used = ip(None, &["-o", "-4", "addr", "show"])?;
        let start = (std::process::id() as usize * 7 + n as usize * 13) % 128;
        let x = (0..128)
            .map(|i| 64 + ((start + i) % 128) as u8)
            .find(|x| !used.contains(&format!("inet 10.{x}.")))
            .context("no free 10.X.0.0/16 for a test network")?;
        Ok(Some(Self {
            tag,
            x,
            namespaces: Vec::new(),
            wires: Vec::new(),
        }))
    }

    /// A new host (namespace) with `lo` up.
    ///
    /// Errors: `ip netns add` fails.
    pub fn host(&mut self) -> Result<Host> {
        let name = format!("{}h{}", self.tag, self.namespaces.len());
        ip(None, &["netns", "add", &name])?;
        self.namespaces.push(name);
        let h = Host(self.namespaces.len() - 1);
        ip(Some(self.ns(h)), &["link", "set", "lo", "up"])?;
        Ok(h)
    }

    /// The namespace's name.
    pub fn ns(&self, h: Host) -> &str {
        &self.namespaces[h.0]
    }

    /// `ip netns exec NAME`: put it before a command to run that command on the host.
    pub fn prefix(&self, h: Host) -> [&str; 4] {
        ["ip", "netns", "exec", self.ns(h)]
    }

    /// A new veth pair from the root namespace to `h`, on the next free `10.X.N.0/24`, both
    /// ends up.
    ///
    /// Errors: `ip` fails (or more than 250 wires).
    pub fn wire(&mut self, h: Host) -> Result<Wire> {
        let n = self.wires.len() + 1;
        if n > 250 {
            bail!("a lab holds at most 250 wires");
        }
        let (root_if, host_if) = (format!("{}r{n}", self.tag), format!("{}n{n}", self.tag));
        ensure!(root_if.len() <= 15, "interface name {root_if} too long");
        ip(
            None,
            &[
                "link", "add", &root_if, "type", "veth", "peer", "name", &host_if,
            ],
        )?;
        let wire = Wire {
            host: h,
            root_ip: IpAddr::V4(Ipv4Addr::new(10, self.x, n as u8, 1)),
            host_ip: IpAddr::V4(Ipv4Addr::new(10, self.x, n as u8, 2)),
            host_if: host_if.clone(),
            root_if: root_if.clone(),
        };
        self.wires.push(wire.clone());
        ip(None, &["link", "set", &host_if, "netns", self.ns(h)])?;
        ip(
            None,
            &[
                "addr",
                "add",
                &format!("{}/24", wire.root_ip),
                "dev",
                &root_if,
            ],
        )?;
        ip(None, &["link", "set", &root_if, "up"])?;
        let ns = self.ns(h).to_owned();
        ip(
            Some(&ns),
            &[
                "addr",
                "add",
                &format!("{}/24", wire.host_ip),
                "dev",
                &host_if,
            ],
        )?;
        ip(Some(&ns), &["link", "set", &host_if, "up"])?;
        Ok(wire)
    }

    /// A local network: a bridge in a namespace of its own (nothing in the test's namespace
    /// changes). Plug hosts into it with [`Lab::plug`]; they share one `10.X.200.0/24` and
    /// see each other's multicast (local-network discovery works on it).
    ///
    /// Errors: `ip` fails.
    pub fn lan(&mut self) -> Result<Host> {
        let h = self.host()?;
        let ns = self.ns(h).to_owned();
        ip(Some(&ns), &["link", "add", "br0", "type", "bridge"])?;
        ip(Some(&ns), &["link", "set", "br0", "up"])?;
        Ok(h)
    }

    /// Plugs `h` into the local network `lan` as `10.X.200.N/24`, multicast routed on it.
    /// Returns the wire (`host_ip` is the host's address on the LAN; `root_ip` is unused).
    ///
    /// Errors: `ip` fails.
    pub fn plug(&mut self, h: Host, lan: Host) -> Result<Wire> {
        let n = self.wires.len() + 1;
        let (lan_if, host_if) = (format!("{}r{n}", self.tag), format!("{}n{n}", self.tag));
        ip(
            None,
            &[
                "link", "add", &lan_if, "type", "veth", "peer", "name", &host_if,
            ],
        )?;
        let wire = Wire {
            host: h,
            root_ip: IpAddr::V4(Ipv4Addr::new(10, self.x, 200, 254)),
            host_ip: IpAddr::V4(Ipv4Addr::new(10, self.x, 200, n as u8)),
            host_if: host_if.clone(),
            root_if: lan_if.clone(),
        };
        self.wires.push(wire.clone());
        let (lan_ns, ns) = (self.ns(lan).to_owned(), self.ns(h).to_owned());
        ip(None, &["link", "set", &lan_if, "netns", &lan_ns])?;
        ip(Some(&lan_ns), &["link", "set", &lan_if, "master", "br0"])?;
        ip(Some(&lan_ns), &["link", "set", &lan_if, "up"])?;
        ip(None, &["link", "set", &host_if, "netns", &ns])?;
        ip(
            Some(&ns),
            &[
                "addr",
                "add",
                &format!("{}/24", wire.host_ip),
                "dev",
                &host_if,
            ],
        )?;
        ip(
            Some(&ns),
            &["link", "set", &host_if, "up", "multicast", "on"],
        )?;
        ip(Some(&ns), &["route", "add", "224.0.0.0/4", "dev", &host_if])?;
        Ok(wire)
    }

    /// Gives `w`'s host a new address on its network in place of the old one, as a DHCP client
    /// does with a new lease (old address flushed, new one added, routes restored); returns it.
    ///
    /// Errors: `ip addr` fails.
    pub fn renumber(&self, w: &mut Wire, last_octet: u8) -> Result<IpAddr> {
        let IpAddr::V4(old) = w.host_ip else {
            bail!("IPv4 only");
        };
        let [a, b, c, _] = old.octets();
        let new = IpAddr::V4(Ipv4Addr::new(a, b, c, last_octet));
        let ns = self.ns(w.host);
        // Old first: deleting a primary address deletes the secondaries of its subnet too.
        ip(
            Some(ns),
            &["addr", "del", &format!("{old}/24"), "dev", &w.host_if],
        )?;
        ip(
            Some(ns),
            &["addr", "add", &format!("{new}/24"), "dev", &w.host_if],
        )?;
        // Removing an interface's last address flushes every route through it; a DHCP client
        // puts its routes back with the new lease. Here that is the multicast route of `plug`.
        ip(
            Some(ns),
            &["route", "replace", "224.0.0.0/4", "dev", &w.host_if],
        )?;
        w.host_ip = new;
        Ok(new)
    }

    /// On `w`'s host: reach `dest` (one address) through `w`'s gateway, replacing any route
    /// to it (a phone moving to another network).
    ///
    /// Errors: `ip route` fails.
    pub fn route(&self, w: &Wire, dest: IpAddr) -> Result<()> {
        ip(
            Some(self.ns(w.host)),
            &[
                "route",
                "replace",
                &format!("{dest}/32"),
                "via",
                &w.root_ip.to_string(),
                "dev",
                &w.host_if,
            ],
        )?;
        Ok(())
    }

    /// Takes `w`'s host end down (`up = false`) or up again.
    ///
    /// Errors: `ip link` fails.
    pub fn set_up(&self, w: &Wire, up: bool) -> Result<()> {
        ip(
            Some(self.ns(w.host)),
            &["link", "set", &w.host_if, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth ends in it, and so their pairs; the root ends
        // are deleted too in case a namespace is still held open by a process.
        for w in &self.wires {
            let _ = ip(None, &["link", "del", &w.root_if]);
        }
        for ns in &self.namespaces {
            let _ = ip(None, &["netns", "del", ns]);
        }
    }
}
