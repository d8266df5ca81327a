//! `deskhand phone …`: the terminal phone. It drives the desktop through
//! [`deskhand_sync::Phone`], the very API the mobile apps use through their bindings, so a laptop
//! or an SSH session can act as a phone, and tests act as a user.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use deskhand_core::TaskId;
use deskhand_core::schema::Role;
use deskhand_core::terminal::{self, line};
use deskhand_sync::phone::{
    ApprovalState, Delivery, KEY_FILE, PhoneApproval, PhoneMessage, PhoneTask,
};
use deskhand_sync::{
    FileKeyProvider, NetConfig, Node, Phone, PhoneConfig, PhoneError, PhoneSnapshot, Presence,
    RelaySetting,
};
use serde_json::json;

#[derive(Subcommand)]
pub enum PhoneCommand {
    /// Pair with a desktop from its pairing code (text or QR image).
    Pair {
        /// The `deskhand://pair?…` payload.
        payload: Option<String>,
        /// Read the payload from a QR code PNG instead.
        #[arg(long, value_parser = crate::absolute_path)]
        qr_png: Option<PathBuf>,
        /// This phone's name, shown on the desktop.
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a message (committed here first; queued if the desktop is unreachable). The
    /// desktop runs it as a task and answers in the conversation.
    Send {
        /// The text.
        text: String,
        /// How long to try to deliver it now (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Create a task directly (e.g. `list ~`, `trash ~/old.txt`, `run uname -a`).
    Task {
        /// What to do.
        prompt: String,
        /// How long to try to deliver it now (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Ask the desktop to cancel a task.
    Cancel {
        /// Task id (or an unambiguous prefix).
        task: String,
        /// How long to try to deliver the request now (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Approve a pending request: signs the exact action it shows.
    Approve {
        /// Approval id (or an unambiguous prefix).
        id: String,
        /// How long to try to deliver the decision now (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Deny a pending request (signed too).
    Deny {
        /// Approval id (or an unambiguous prefix).
        id: String,
        /// How long to try to deliver the decision now (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
    /// Sync with the desktop now.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value = "10")]
        timeout: u64,
    },
    /// Show the conversation, tasks, approvals and the desktop's presence and health.
    Show {
        /// Stable JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Live feed: new messages, task progress and approval requests. Asks `approve? [y/N]` for
    /// each request when run in a terminal.
    Watch {
        /// Answer every request without asking.
        #[arg(long, value_enum)]
        auto: Option<AutoAnswer>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Stop once every task has finished and nothing waits for an answer.
        #[arg(long)]
        until_idle: bool,
    },
    /// Fetch a blob (a screenshot, a long output) from the desktop; its hash is verified.
    Fetch {
        /// The blob's BLAKE3 hash (from `show`).
        hash: String,
        /// Where to write it.
        #[arg(long, value_parser = crate::absolute_path)]
        out: PathBuf,
    },
    /// Forget the desktop and its workspace (to pair with another one). Refused while something
    /// written here has not reached the desktop, unless `--force`.
    Forget {
        /// Forget even if messages, tasks or decisions written here would be lost.
        #[arg(long)]
        force: bool,
        /// How long to try to deliver what is unsent first (seconds).
        #[arg(long, default_value = "5")]
        wait: u64,
    },
}

/// How `watch` answers approval requests on its own.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AutoAnswer {
    /// Approve every request.
    Approve,
    /// Deny every request.
    Deny,
}

/// The environment variable that skews the terminal phone's clock (milliseconds, may be
/// negative): how tests try a phone whose clock is wrong, in a separate process.
pub const CLOCK_SKEW_ENV: &str = "DESKHAND_TEST_CLOCK_SKEW_MS";

/// The terminal phone's clock: the system's, moved by [`CLOCK_SKEW_ENV`] when it is set.
fn clock() -> Result<Arc<dyn deskhand_sync::presence::Clock>> {
    match std::env::var(CLOCK_SKEW_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(Arc::new(deskhand_sync::presence::SystemClock)),
        Ok(v) => {
            let skew_ms: i64 = v.trim().parse().with_context(|| {
                format!("{CLOCK_SKEW_ENV}={v:?} is not a whole number of milliseconds")
            })?;
            Ok(Arc::new(deskhand_sync::presence::SkewedClock { skew_ms }))
        }
        Err(e) => bail!("{CLOCK_SKEW_ENV}: {e}"),
    }
}

async fn open(data: &Path, listen: SocketAddr, mdns: bool, name: &str) -> Result<Phone> {
    // Its own relay stays off: a phone uses the relay its desktop named when pairing.
    let mut config = PhoneConfig::new(data, name, "terminal")
        .with_net(
            NetConfig::default()
                .with_listen(listen)
                .with_relay(RelaySetting::Off)
                .with_mdns(mdns),
        )
        .with_clock(clock()?);
    // The key lives in a 0600 file like a platform keystore would hold it; a data directory from
    // before keeps the key its database already holds.
    if data.join(KEY_FILE).exists() || !Node::db_path(data).exists() {
        config = config.with_key_provider(Arc::new(FileKeyProvider::in_data_dir(data)));
    }
    Phone::open(config)
        .await
        .with_context(|| format!("opening the phone in {}", data.display()))
}

const NOT_PAIRED: &str =
    "this phone is not paired: run `deskhand phone --data DIR pair <code>` first";

fn explain(e: PhoneError) -> anyhow::Error {
    match e {
        PhoneError::NotPaired => anyhow::anyhow!(NOT_PAIRED),
        e => e.into(),
    }
}

pub async fn run(data: PathBuf, listen: SocketAddr, mdns: bool, cmd: PhoneCommand) -> Result<()> {
    let name = match &cmd {
        PhoneCommand::Pair {
            name: Some(name), ..
        } => name.clone(),
        _ => format!("{}-terminal", crate::paths::host_name()),
    };
    let phone = open(&data, listen, mdns, &name).await?;
    let result = run_on(&phone, cmd).await;
    phone.shutdown().await;
    result
}

/// Tries to deliver what was just written; says whether the desktop has it. Only an
/// unreachable desktop leaves it queued (exit 0, it is sent later); a desktop that refuses or
/// revoked this phone is an error (exit 1): nothing will send it on its own.
async fn deliver(phone: &Phone, what: &str, wait: u64) -> Result<()> {
    match phone.sync(Duration::from_secs(wait)).await {
        Ok(()) => {
            println!("sent {} (the desktop has it)", line(what));
            Ok(())
        }
        Err(e @ (PhoneError::Unreachable { .. } | PhoneError::Stopped)) => {
            println!(
                "queued {}: the desktop is unreachable ({}); it is saved on this phone and will be sent on the next sync",
                line(what),
                line(&e.to_string())
            );
            Ok(())
        }
        Err(e) => bail!(
            "{} is saved on this phone but was not delivered, and nothing sends it on its own: {}",
            line(what),
            line(&e.to_string())
        ),
    }
}

/// Runs `write`; if the workspace has not arrived yet, syncs for up to `wait` seconds first.
async fn with_workspace<T, F, Fut>(phone: &Phone, wait: u64, write: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, PhoneError>>,
{
    match write().await {
        Err(PhoneError::NotSynced) => {
            let _ = phone.sync(Duration::from_secs(wait)).await;
            match write().await {
                Err(PhoneError::NotSynced) => bail!(
                    "the workspace has not been received from the desktop yet; run `deskhand phone sync` when the desktop is reachable"
                ),
                other => other.map_err(explain),
            }
        }
        other => other.map_err(explain),
    }
}

async fn run_on(phone: &Phone, cmd: PhoneCommand) -> Result<()> {
    match cmd {
        PhoneCommand::Pair {
            payload,
            qr_png,
            name: _,
        } => {
            let text = match (payload, qr_png) {
                (Some(p), None) => p,
                (None, Some(png)) => crate::qr::read_png(&png)?,
                _ => bail!("give the pairing code either as text or with --qr-png FILE"),
            };
            let (id, desktop) = phone.pair(&text).await?;
            println!(
                "Paired with \"{}\" ({}) as \"{}\".",
                line(&desktop),
                id.short(),
                line(phone.name())
            );
            match phone.sync(Duration::from_secs(10)).await {
                Ok(()) => println!("Workspace received."),
                Err(e) => println!(
                    "Paired, but the workspace has not arrived yet ({}); run `deskhand phone sync`.",
                    line(&e.to_string())
                ),
            }
            Ok(())
        }
        PhoneCommand::Send { text, wait } => {
            let id = with_workspace(phone, wait, || phone.send_message(&text)).await?;
            deliver(phone, &id.to_string(), wait).await?;
            Ok(())
        }
        PhoneCommand::Task { prompt, wait } => {
            let id = with_workspace(phone, wait, || phone.create_task(&prompt)).await?;
            deliver(phone, &format!("task {id}"), wait).await?;
            Ok(())
        }
        PhoneCommand::Cancel { task, wait } => {
            let s = phone.snapshot()?;
            let id = pick(
                "task",
                &task,
                s.tasks.iter().map(|t| t.task.id.as_str().to_owned()),
            )?;
            phone
                .cancel_task(&TaskId::from(id.as_str()))
                .await
                .map_err(explain)?;
            deliver(phone, &format!("the cancel request for task {id}"), wait).await?;
            Ok(())
        }
        PhoneCommand::Approve { id, wait } => decide(phone, &id, true, wait).await,
        PhoneCommand::Deny { id, wait } => decide(phone, &id, false, wait).await,
        PhoneCommand::Sync { timeout } => {
            phone.require_home().map_err(explain)?;
            match phone.sync(Duration::from_secs(timeout)).await {
                Ok(()) => {
                    let count = phone.snapshot()?.messages.len();
                    println!("in sync with the desktop ({count} messages)");
                    Ok(())
                }
                Err(e) => bail!("could not sync with the desktop: {}", line(&e.to_string())),
            }
        }
        PhoneCommand::Show { json } => {
            let s = phone.snapshot()?;
            if json {
                println!(
                    "{}",
                    terminal::json(&serde_json::to_string_pretty(&show_json(&s))?)
                );
            } else {
                show(&s);
            }
            Ok(())
        }
        PhoneCommand::Watch {
            auto,
            timeout,
            until_idle,
        } => watch(phone, auto, timeout.map(Duration::from_secs), until_idle).await,
        PhoneCommand::Fetch { hash, out } => {
            let bytes = phone.fetch_blob(&hash).await.map_err(explain)?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "saved {} bytes to {} (BLAKE3 hash verified)",
                bytes.len(),
                out.display()
            );
            Ok(())
        }
        PhoneCommand::Forget { force, wait } => {
            let home = phone.home();
            if home.is_some() && phone.unsent_count()? > 0 && !force {
                // Deliver first if the desktop can be reached.
                let _ = phone.sync(Duration::from_secs(wait)).await;
            }
            if force {
                let dropped = phone.unsent_count()?;
                phone.forget_desktop_dropping_unsent().await?;
                if dropped > 0 {
                    println!(
                        "Dropped {dropped} thing(s) written here that had not reached the desktop."
                    );
                }
            } else {
                match phone.forget_desktop().await {
                    Err(PhoneError::Unsent { count }) => bail!(
                        "not forgetting the desktop: {count} thing(s) written on this phone (messages, tasks or decisions) have not reached it, and could not be delivered now. To keep them: `deskhand phone sync` once the desktop is reachable, or pair again with the same desktop (`deskhand phone pair <new code>`, no need to forget). To drop them: `deskhand phone forget --force`"
                    ),
                    other => other?,
                }
            }
            match home {
                Some((id, name)) => {
                    println!(
                        "Forgot \"{}\" ({}) and its workspace.",
                        line(&name),
                        id.short()
                    )
                }
                None => println!("This phone was not paired."),
            }
            Ok(())
        }
    }
}

/// The one id among `ids` that starts with `prefix`.
fn pick(what: &str, prefix: &str, ids: impl Iterator<Item = String>) -> Result<String> {
    let found: Vec<String> = ids.filter(|i| i.starts_with(prefix)).collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no {what} starts with {prefix:?} (see `deskhand phone show`)"),
        many if many.iter().any(|i| i == prefix) => Ok(prefix.to_owned()),
        many => bail!(
            "{prefix:?} matches {} {what}s; give more characters",
            many.len()
        ),
    }
}

fn find_approval<'a>(s: &'a PhoneSnapshot, prefix: &str) -> Result<&'a PhoneApproval> {
    let all = s.pending_approvals.iter().chain(&s.resolved_approvals);
    let id = pick(
        "approval",
        prefix,
        all.clone().map(|a| a.approval.id.as_str().to_owned()),
    )?;
    all.into_iter()
        .find(|a| a.approval.id.as_str() == id)
        .context("approval vanished")
}

async fn decide(phone: &Phone, prefix: &str, approve: bool, wait: u64) -> Result<()> {
    phone.require_home().map_err(explain)?;
    let s = phone.snapshot()?;
    let a = find_approval(&s, prefix)?;
    let id = a.approval.id.clone();
    let mine = if approve { "approve" } else { "deny" };
    if a.expires_in_ms <= 0 && a.approval.resolution.is_none() {
        // Only a warning: the desktop's clock decides, and the phone's estimate may be off.
        println!(
            "warning: by this phone's estimate of the desktop's clock, {} expired {} s ago; sending the {mine} anyway (the desktop decides)",
            line(id.as_str()),
            -a.expires_in_ms / 1000
        );
    }
    let r = if approve {
        phone.approve(&id).await
    } else {
        phone.deny(&id).await
    };
    match r {
        Ok(()) => {}
        // The desktop had already resolved it: say how, as for a decision that arrives late.
        Err(e @ (PhoneError::AlreadyDecided { .. } | PhoneError::Expired { .. })) => {
            let s = phone.snapshot()?;
            let resolved = s
                .resolved_approvals
                .iter()
                .any(|x| x.approval.id == id && x.approval.resolution.is_some());
            if resolved {
                bail!(too_late(&s, &id, mine));
            }
            return Err(explain(e));
        }
        Err(e) => return Err(explain(e)),
    }
    let verb = if approve { "approved" } else { "denied" };
    println!(
        "{verb} {}: {}",
        line(id.as_str()),
        line(&a.approval.summary)
    );
    match phone.sync(Duration::from_secs(wait)).await {
        Ok(()) => {}
        Err(e @ (PhoneError::Unreachable { .. } | PhoneError::Stopped)) => {
            println!(
                "queued the decision on {}: the desktop is unreachable ({}); it is saved on this phone and will be sent on the next sync",
                line(id.as_str()),
                line(&e.to_string())
            );
            return Ok(());
        }
        Err(e) => bail!(
            "the decision on {} is saved on this phone but was not delivered, and nothing sends it on its own: {}",
            line(id.as_str()),
            line(&e.to_string())
        ),
    }
    // The desktop has it; wait briefly for the resolution (a settle window, other phones).
    let deadline = tokio::time::Instant::now() + RESOLUTION_WAIT;
    loop {
        let s = phone.snapshot()?;
        let now = s
            .pending_approvals
            .iter()
            .chain(&s.resolved_approvals)
            .find(|x| x.approval.id == id)
            .cloned();
        match now {
            Some(x) if x.too_late => bail!(too_late(&s, &id, mine)),
            Some(PhoneApproval {
                status: ApprovalState::Resolved(r),
                ..
            }) => {
                println!(
                    "sent the decision on {} (the desktop has it); resolved: {}",
                    line(id.as_str()),
                    line(&r.reason)
                );
                return Ok(());
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            println!(
                "sent the decision on {} (the desktop has it); not resolved yet: other phones may still decide",
                line(id.as_str())
            );
            return Ok(());
        }
        let _ = phone.sync(Duration::from_millis(500)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long `approve`/`deny` wait for the desktop's resolution after it has the decision.
const RESOLUTION_WAIT: Duration = Duration::from_secs(5);

/// What a phone whose decision came too late is told: who decided, when (the desktop's clock),
/// and whether the action ran.
fn too_late(s: &PhoneSnapshot, id: &deskhand_core::ids::ApprovalId, mine: &str) -> String {
    let Some(a) = s
        .pending_approvals
        .iter()
        .chain(&s.resolved_approvals)
        .find(|x| &x.approval.id == id)
    else {
        return format!("your {mine} on {} came too late", line(id.as_str()));
    };
    let Some(r) = &a.approval.resolution else {
        return format!("your {mine} on {} came too late", line(id.as_str()));
    };
    let when = clock_time(r.at);
    let task = s.task(&a.approval.task_id);
    let what = match (r.verdict, r.by.as_str()) {
        (_, "expired") => format!(
            "the request expired at {} (desktop time) and counted as denied; the action did not run",
            clock_time(a.approval.expires_at)
        ),
        (deskhand_core::approval::Verdict::Approve, _) => {
            let ran = match task.map(|t| t.task.status) {
                Some(deskhand_core::schema::TaskStatus::Done) => "and the action ran",
                _ => "and the action went ahead",
            };
            format!("{} at {when} (desktop time) {ran}", line(&r.reason))
        }
        (deskhand_core::approval::Verdict::Deny, _) => format!(
            "{} at {when} (desktop time); the action did not run",
            line(&r.reason)
        ),
    };
    format!("your {mine} on {} came too late: {what}", line(id.as_str()))
}

/// `HH:MM:SS UTC` of a Unix-ms instant.
fn clock_time(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

fn show_json(s: &PhoneSnapshot) -> serde_json::Value {
    let approvals: Vec<&PhoneApproval> = s
        .pending_approvals
        .iter()
        .chain(&s.resolved_approvals)
        .collect();
    json!({
        "device": s.device_id,
        "name": s.device_name,
        "workspace": s.workspace.map(|d| d.to_string()),
        "workspace_received": s.workspace_received,
        "syncing": s.syncing,
        "desktop": s.desktop,
        "desktop_now": s.desktop_now,
        "messages": s.messages,
        "tasks": s.tasks,
        "approvals": approvals,
        "pending_approvals": s.pending_approvals.iter().map(|a| a.approval.id.as_str()).collect::<Vec<_>>(),
        "devices": s.devices,
    })
}

/// Presence in words; `desktop_now` is the snapshot's instant in the desktop's clock, in
/// which the snapshot gives presence times.
fn presence_text(p: &Presence, desktop_now: i64) -> String {
    match p {
        Presence::Connected { .. } => "connected".into(),
        Presence::LastSeen { at } => format!("last seen {}", ago_at(*at, desktop_now)),
        Presence::Never => "never reached".into(),
    }
}

use crate::ago_at;

fn show(s: &PhoneSnapshot) {
    match &s.desktop {
        Some(d) => {
            println!(
                "Desktop \"{}\" ({}): {}{}",
                line(&d.name),
                d.id.short(),
                presence_text(&d.presence, s.desktop_now),
                if d.in_sync { ", in sync" } else { "" }
            );
            if let Some(h) = &d.health {
                println!(
                    "  executor {}, heartbeat {} ({})",
                    h.executor,
                    ago_at(s.desktop_now - h.heartbeat_age_ms, s.desktop_now),
                    line(&h.os)
                );
            }
            if let Some(at) = d.revoked_at {
                println!(
                    "  this device was revoked by the desktop ({}): nothing more is sent; pair again with a new code to use it",
                    ago_at(at, s.taken_at)
                );
            } else if let Some(e) = &d.last_error {
                println!("  last problem: {}", line(e));
            }
            println!(
                "  dialled at {}{}",
                line(&d.addrs.join(", ")),
                d.relay
                    .as_ref()
                    .map(|r| format!("; relay {}", line(r)))
                    .unwrap_or_default()
            );
        }
        None => println!("Not paired."),
    }
    if !s.syncing {
        println!("  (syncing is stopped)");
    }
    if !s.workspace_received {
        println!("No workspace yet.");
        return;
    }
    println!("\nConversation ({} messages):", s.messages.len());
    for m in &s.messages {
        print_message(m);
    }
    println!("\nTasks ({}):", s.tasks.len());
    for t in &s.tasks {
        println!(
            "  {:<34} {:<16} {}",
            line(t.task.id.as_str()),
            t.task.status.as_str(),
            line(&t.task.prompt)
        );
        if let Some(r) = &t.task.result {
            println!("      result: {}", first_line(&r.summary));
            for b in &r.blobs {
                println!("      blob {}", blob_text(b));
            }
        }
    }
    if s.pending_approvals.is_empty() {
        println!("\nApprovals: none pending");
    } else {
        println!("\nApprovals pending ({}):", s.pending_approvals.len());
        for a in &s.pending_approvals {
            print_approval(a);
        }
    }
    println!("\nDevices paired with the desktop ({}):", s.devices.len());
    for d in &s.devices {
        println!(
            "  {} {:<20} {:<9} paired {}{}{}",
            line(&d.id.chars().take(12).collect::<String>()),
            line(&d.name),
            line(&d.platform),
            ago_at(d.paired_at, s.desktop_now),
            d.revoked_at
                .map(|at| format!(", revoked {}", ago_at(at, s.desktop_now)))
                .unwrap_or_default(),
            if d.this_device { "  (this phone)" } else { "" }
        );
    }
}

/// How continuation lines of peer text start, so no line of it can pass for our own.
const CONTINUATION: &str = "           │ ";

/// At most `n` lines of `s`, saying how many were left out.
fn clip(s: &str, n: usize) -> String {
    let total = s.lines().count();
    if total <= n {
        return s.to_owned();
    }
    let mut out: Vec<&str> = s.lines().take(n).collect();
    let more = format!(
        "… ({} more lines; `deskhand phone show` has them all)",
        total - n
    );
    out.push(&more);
    out.join("\n")
}

/// The first line of peer text, escaped.
fn first_line(s: &str) -> String {
    line(s.lines().next().unwrap_or_default())
}

/// `HASH MEDIA-TYPE (N bytes)` of a blob reference (all three written by the desktop).
fn blob_text(b: &deskhand_core::schema::BlobRef) -> String {
    format!(
        "{} {} ({} bytes)",
        line(&b.hash),
        line(&b.media_type),
        b.size
    )
}

/// Ten characters of a device id as written by a peer (cut by characters, never by bytes).
fn short_author(author: &str) -> String {
    line(&author.chars().take(10).collect::<String>())
}

fn print_message(m: &PhoneMessage) {
    let who = if m.mine {
        "me".to_owned()
    } else {
        short_author(&m.message.author)
    };
    let pending = if m.delivery == Delivery::Pending {
        "  (not yet on the desktop)"
    } else {
        ""
    };
    println!(
        "  [{:<5}] {who:<10} {}{pending}",
        m.message.role.as_str(),
        terminal::block(&m.message.text, CONTINUATION)
    );
}

fn print_approval(a: &PhoneApproval) {
    let mine = match a.my_verdict {
        Some(v) => format!("  (you: {v})"),
        None => String::new(),
    };
    let warn = if a.verified {
        ""
    } else {
        "  WARNING: does not match its action hash; it will not be signed"
    };
    // A countdown in the desktop's time (this phone's clock may be off): only it decides.
    let left = if a.approval.resolution.is_some() {
        String::new()
    } else if a.expires_in_ms > 0 {
        format!("  (expires in {} s, desktop time)", a.expires_in_ms / 1000)
    } else {
        "  (expired by the desktop's clock, as far as this phone knows)".to_owned()
    };
    println!(
        "  {} [{} risk] {}{mine}{left}{warn}\n      {} {}",
        line(a.approval.id.as_str()),
        a.approval.risk,
        line(&a.approval.summary),
        line(&a.approval.tool),
        line(&a.approval.args)
    );
}

/// What `watch` has already printed.
#[derive(Default)]
struct Seen {
    messages: HashSet<String>,
    tasks: HashMap<String, (String, usize)>,
    approvals: HashSet<String>,
    presence: Option<String>,
}

impl Seen {
    /// Prints what is new in `s`; returns the approval requests to answer.
    fn update(&mut self, s: &PhoneSnapshot, first: bool) -> Vec<PhoneApproval> {
        if let Some(d) = &s.desktop {
            let p = presence_text(&d.presence, s.desktop_now);
            let p = p.split(" ago").next().unwrap_or_default().to_owned();
            let p = if p.starts_with("last seen") {
                "disconnected".to_owned()
            } else {
                p
            };
            if self.presence.as_ref() != Some(&p) {
                println!("· desktop \"{}\": {p}", line(&d.name));
                self.presence = Some(p);
            }
        }
        let skip = if first {
            s.messages.len().saturating_sub(5)
        } else {
            0
        };
        for (i, m) in s.messages.iter().enumerate() {
            if self.messages.insert(m.message.id.to_string()) && i >= skip {
                let who = match (m.message.role, m.mine) {
                    (Role::User, true) => "me".to_owned(),
                    (Role::User, false) => format!("user {}", short_author(&m.message.author)),
                    (r, _) => r.as_str().to_owned(),
                };
                println!(
                    "[{who}] {}",
                    terminal::block(&clip(&m.message.text, 12), CONTINUATION)
                );
            }
        }
        for t in &s.tasks {
            print_task(&mut self.tasks, t, first);
        }
        let mut ask = Vec::new();
        for a in &s.pending_approvals {
            if self.approvals.insert(a.approval.id.to_string()) {
                println!("? approval requested:");
                print_approval(a);
                if a.my_verdict.is_none() && a.verified {
                    ask.push(a.clone());
                }
            }
        }
        for a in &s.resolved_approvals {
            if let ApprovalState::Resolved(r) = &a.status
                && self.approvals.insert(format!("{}/resolved", a.approval.id))
                && !first
            {
                println!(
                    "· approval {} resolved: {} {}",
                    line(a.approval.id.as_str()),
                    r.verdict,
                    line(&r.reason)
                );
                if a.too_late {
                    let mine = match a.my_verdict {
                        Some(deskhand_core::approval::Verdict::Approve) => "approve",
                        _ => "deny",
                    };
                    println!("! {}", too_late(s, &a.approval.id, mine));
                }
            }
        }
        ask
    }
}

fn print_task(seen: &mut HashMap<String, (String, usize)>, t: &PhoneTask, first: bool) {
    let id = t.task.id.to_string();
    let shown = line(&id);
    let status = t.task.status.as_str().to_owned();
    let events = t.task.events.len();
    let (old_status, old_events) = seen
        .get(&id)
        .cloned()
        .unwrap_or_else(|| (String::new(), if first { events } else { 0 }));
    if first && old_status.is_empty() && t.task.status.is_final() {
        seen.insert(id, (status, events));
        return;
    }
    if old_status.is_empty() {
        println!("· task {shown}: {} ({status})", line(&t.task.prompt));
    }
    for e in t.task.events.iter().skip(old_events) {
        let blob = e
            .blob
            .as_ref()
            .map(|b| format!("  [blob {}]", blob_text(b)))
            .unwrap_or_default();
        println!("  {shown} {}: {}{blob}", line(&e.kind), first_line(&e.text));
    }
    if !old_status.is_empty() && old_status != status {
        println!("· task {shown}: {status}");
    }
    if t.task.status.is_final()
        && old_status != status
        && let Some(r) = &t.task.result
    {
        println!("  result: {}", first_line(&r.summary));
        for b in &r.blobs {
            println!("  blob {}", blob_text(b));
        }
    }
    seen.insert(id, (status, events));
}

fn idle(s: &PhoneSnapshot) -> bool {
    s.tasks.iter().all(|t| t.task.status.is_final()) && s.pending_approvals.is_empty()
}

async fn ask_tty(a: &PhoneApproval) -> bool {
    let prompt = format!(
        "approve {} ({})? [y/N] ",
        line(a.approval.id.as_str()),
        line(&a.approval.summary)
    );
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        matches!(line.trim(), "y" | "Y" | "yes")
    })
    .await
    .unwrap_or(false)
}

async fn watch(
    phone: &Phone,
    auto: Option<AutoAnswer>,
    timeout: Option<Duration>,
    until_idle: bool,
) -> Result<()> {
    let (_, name) = phone.require_home().map_err(explain)?;
    let interactive = auto.is_none() && std::io::stdin().is_terminal();
    println!(
        "watching \"{}\"{} (Ctrl-C to stop)",
        line(&name),
        match auto {
            Some(AutoAnswer::Approve) => ", approving every request",
            Some(AutoAnswer::Deny) => ", denying every request",
            None if interactive => "",
            None => "; answer requests with `deskhand phone approve|deny ID`",
        }
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = phone.subscribe(Arc::new(move |s: PhoneSnapshot| {
        let _ = tx.send(s);
    }));
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = Seen::default();
    let mut first = true;
    loop {
        let s = tokio::select! {
            s = rx.recv() => match s { Some(s) => s, None => break },
            _ = tokio::signal::ctrl_c() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                println!("· stopped after {:?}", timeout.unwrap_or_default());
                break;
            }
        };
        // A newer snapshot may already be waiting: show the latest.
        let mut s = s;
        while let Ok(newer) = rx.try_recv() {
            s = newer;
        }
        for a in seen.update(&s, first) {
            let approve = match auto {
                Some(AutoAnswer::Approve) => true,
                Some(AutoAnswer::Deny) => false,
                None if interactive => ask_tty(&a).await,
                None => continue,
            };
            let id = a.approval.id.clone();
            let r = if approve {
                phone.approve(&id).await
            } else {
                phone.deny(&id).await
            };
            let id = line(id.as_str());
            match r {
                Ok(()) => println!("· {} {id}", if approve { "approved" } else { "denied" }),
                Err(e) => println!("· could not answer {id}: {}", line(&e.to_string())),
            }
        }
        first = false;
        if until_idle && idle(&s) && s.workspace_received {
            println!("· idle: every task has finished");
            break;
        }
    }
    // Deliver the last decisions before closing.
    let _ = phone.sync(Duration::from_secs(3)).await;
    Ok(())
}
