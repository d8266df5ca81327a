//! `deskhand demo`: a desktop and two terminal phones in a temporary directory, over real iroh
//! connections on loopback: pairing, built-in commands, one approval granted and one denied, a
//! secret refused, offline catch-up, and the conversation at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskhand_core::MessageId;
use deskhand_core::approval::{Approval, Verdict};
use deskhand_core::schema::Task;
use deskhand_core::schema::{Message, Role, Workspace};
use deskhand_core::terminal;
use deskhand_core::{DeviceId, TaskId};
use deskhand_desktop_host::agent::Builtin;
use deskhand_desktop_host::config::Config;
use deskhand_desktop_host::executor::Executor;
use deskhand_desktop_host::policy::Policy;
use deskhand_sync::node::random_id_bytes;
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::{Node, NodeConfig, NodeRole};
use tokio_util::sync::CancellationToken;

async fn say(node: &Node, role: Role, text: &str) -> Result<MessageId> {
    let id = MessageId::from_random(random_id_bytes());
    let msg = Message {
        id: id.clone(),
        author: node.id().to_string(),
        role,
        text: text.into(),
        created_at: now_unix_ms(),
        task_id: None,
    };
    let key = node.conversation_doc_at(msg.created_at).await?;
    node.write_doc(&key, |tx| Workspace::append_message(tx, &msg))
        .await?;
    Ok(id)
}

/// `f` on each conversation document `node` has loaded, oldest week first.
fn weeks<R>(node: &Node, mut f: impl FnMut(&automerge::Automerge) -> R) -> Vec<R> {
    node.conversation_docs()
        .iter()
        .filter_map(|k| node.read_doc(k, &mut f))
        .collect()
}

/// Every document's heads on `node` (the root's and each loaded week's), sorted.
fn all_heads(node: &Node) -> Vec<automerge::ChangeHash> {
    let mut h = node.read(|d| d.get_heads());
    h.extend(weeks(node, |d| d.get_heads()).into_iter().flatten());
    h.sort();
    h
}

async fn until(
    node: &Node,
    what: &str,
    f: impl Fn(&automerge::Automerge) -> bool,
) -> Result<Duration> {
    let t = Instant::now();
    let mut sub = node.subscribe();
    let wait = async {
        // On the root (the workspace arrived) or on a week (the conversation).
        while !(node.read(&f) || weeks(node, &f).contains(&true)) {
            if sub.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .is_err()
    {
        bail!("timed out waiting until {what}");
    }
    Ok(t.elapsed())
}

/// A phone types a command: a user message, which the desktop turns into task `m-<id>`.
async fn ask(phone: &Node, text: &str) -> Result<TaskId> {
    let id = say(phone, Role::User, text).await?;
    Ok(TaskId::from(format!("m-{id}")))
}

async fn finished(phone: &Node, task: &TaskId) -> Result<Task> {
    until(phone, "the task finishes", |d| {
        Workspace::task(d, task)
            .ok()
            .flatten()
            .is_some_and(|t| t.status.is_final())
    })
    .await?;
    weeks(phone, |d| Workspace::task(d, task).ok().flatten())
        .into_iter()
        .flatten()
        .next()
        .context("the task vanished")
}

async fn pending(phone: &Node, task: &TaskId) -> Result<Approval> {
    let find = |d: &automerge::Automerge| {
        Workspace::approvals(d).ok().and_then(|m| {
            m.into_values()
                .find(|a| &a.task_id == task && a.resolution.is_none())
        })
    };
    until(phone, "an approval request arrives", |d| find(d).is_some()).await?;
    weeks(phone, find)
        .into_iter()
        .flatten()
        .next()
        .context("the approval request vanished")
}

async fn decide(phone: &Node, desktop: &DeviceId, a: &Approval, v: Verdict) -> Result<()> {
    let d = a.sign(phone.key(), desktop, v, now_unix_ms());
    let me = phone.id();
    let key = phone
        .approval_doc(&a.id)
        .context("the approval request vanished")?;
    phone
        .write_doc(&key, |tx| Workspace::put_decision(tx, &a.id, &me, &d))
        .await?;
    Ok(())
}

fn reply(t: &Task) -> String {
    let text = t.result.as_ref().map(|r| r.summary.as_str()).unwrap_or("");
    format!("[{}] {text}", t.status)
}

/// Up to 8 lines of the desktop's reply, each marked and escaped (replies echo file names and
/// command output).
fn indent(text: &str) -> String {
    text.lines()
        .take(8)
        .map(|l| format!("   desktop> {}", terminal::line(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn sample_home(home: &std::path::Path) -> Result<()> {
    let p = home.join("Projects");
    std::fs::create_dir_all(p.join("site/notes"))?;
    std::fs::write(
        p.join("README.md"),
        "# Projects\nEverything I am working on.\n",
    )?;
    std::fs::write(
        p.join("site/notes/ideas.md"),
        "- a phone remote for my desktop\n",
    )?;
    std::fs::write(p.join("site/index.html"), "<h1>Hello</h1>\n")?;
    std::fs::write(p.join("old-draft.txt"), "an old draft\n")?;
    std::fs::write(p.join("budget.csv"), "month,amount\njan,100\n")?;
    std::fs::create_dir_all(home.join(".ssh"))?;
    std::fs::write(home.join(".ssh/id_ed25519"), "not a real key\n")?;
    Ok(())
}

pub async fn run() -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "Deskhand demo in {} (relays off, loopback only)\n",
        dir.path().display()
    );
    let desk = Node::open(NodeConfig::new(
        dir.path().join("desktop"),
        NodeRole::Desktop {
            name: "demo-desktop".into(),
        },
    ))
    .await?;
    let a = Node::open(NodeConfig::new(dir.path().join("phone-a"), NodeRole::Phone)).await?;
    let b_dir = dir.path().join("phone-b");
    let b = Node::open(NodeConfig::new(&b_dir, NodeRole::Phone)).await?;
    println!(
        "desktop  {}  listening on {:?}",
        desk.id().short(),
        desk.direct_addrs()
    );
    println!("phone A  {}", a.id().short());
    println!("phone B  {}\n", b.id().short());

    // Pair both phones as a user would: phone A scans the QR code the desktop wrote as a PNG,
    // phone B gets the pairing text (each code works once).
    let t = Instant::now();
    let png = dir.path().join("pairing-qr.png");
    let code_a = desk.create_pairing(Duration::from_secs(300))?;
    crate::qr::write_png(&code_a.to_uri(), &png)?;
    let scanned = deskhand_core::PairingPayload::parse(&crate::qr::read_png(&png)?)?;
    a.pair(&scanned, "phone A", "terminal").await?;
    let code_b = desk.create_pairing(Duration::from_secs(300))?;
    b.pair(&code_b, "phone B", "terminal").await?;
    let reused = b.pair(&code_a, "phone B", "terminal").await;
    until(&a, "phone A has the workspace", |d| {
        Workspace::check_version(d).is_ok()
    })
    .await?;
    until(&b, "phone B has the workspace", |d| {
        Workspace::check_version(d).is_ok()
    })
    .await?;
    let t = t.elapsed();
    println!(
        "1. phone A paired by scanning the QR code, phone B with the pairing text; both received the workspace ({t:.1?})"
    );
    match reused {
        Err(e) => println!(
            "   (reusing A's code was refused: {})",
            terminal::line(&e.to_string())
        ),
        Ok(()) => bail!("a used pairing code was accepted"),
    }

    // The desktop's executor, with the built-in agent, on a sample home folder.
    let home = dir.path().join("home");
    sample_home(&home)?;
    let config = Config::default();
    let policy = Policy::new(&config, &home, &[&dir.path().join("desktop")])
        .map_err(|e| anyhow::anyhow!(e))?;
    let desk = std::sync::Arc::new(desk);
    let stop = CancellationToken::new();
    let executor = Executor::new(
        desk.clone(),
        config,
        policy.clone(),
        std::sync::Arc::new(Builtin::with_policy(policy)),
        dir.path().join("desktop/trash"),
    );
    let executor = tokio::spawn(executor.run(stop.clone()));
    println!(
        "2. the desktop runs tasks in {} with the built-in agent\n",
        home.display()
    );

    for cmd in ["list ~/Projects", "summarize ~/Projects", "find *.md"] {
        let task = ask(&a, cmd).await?;
        let t = finished(&b, &task).await?;
        println!("   phone A> {cmd}\n{}\n", indent(&reply(&t)));
    }

    let task = ask(&a, "trash ~/Projects/old-draft.txt").await?;
    let approval = pending(&b, &task).await?;
    println!(
        "   phone A> trash ~/Projects/old-draft.txt\n   desktop asks both phones: \"{}\" (risk {})",
        terminal::line(&approval.summary),
        approval.risk
    );
    decide(&b, &desk.id(), &approval, Verdict::Approve).await?;
    let t = finished(&a, &task).await?;
    println!("   phone B approves (signed)\n{}\n", indent(&reply(&t)));

    let task = ask(&a, "run rm -rf ~/Projects").await?;
    let approval = pending(&a, &task).await?;
    println!(
        "   phone A> run rm -rf ~/Projects\n   desktop asks: \"{}\" (risk {})",
        terminal::line(&approval.summary),
        approval.risk
    );
    decide(&a, &desk.id(), &approval, Verdict::Deny).await?;
    let t = finished(&a, &task).await?;
    println!("   phone A denies (signed)\n{}", indent(&reply(&t)));
    println!(
        "   ~/Projects still there: {}\n",
        home.join("Projects").exists()
    );

    let task = ask(&a, "read ~/.ssh/id_ed25519").await?;
    let t = finished(&a, &task).await?;
    println!(
        "   phone A> read ~/.ssh/id_ed25519\n{}\n",
        indent(&reply(&t))
    );

    b.shutdown().await;
    for i in 1..=3 {
        say(
            &a,
            Role::User,
            &format!("help ({i}/3, written while phone B was offline)"),
        )
        .await?;
    }
    println!("3. phone B went offline; A wrote 3 messages (the desktop answers each)");
    let want: usize = weeks(&a, Workspace::message_count).into_iter().sum();
    let t = Instant::now();
    let b = Node::open(NodeConfig::new(&b_dir, NodeRole::Phone)).await?;
    until(&b, "B catches up", |d| Workspace::message_count(d) >= want).await?;
    let t = t.elapsed();
    println!("4. phone B came back and caught up in {t:.1?}\n");
    until(&b, "every task is answered", |d| {
        Workspace::task_statuses(d)
            .iter()
            .all(|(_, s)| s.is_some_and(|s| s.is_final()))
    })
    .await?;

    println!("Conversation as phone B sees it:");
    let mut messages = Vec::new();
    for ms in weeks(&b, |d| Workspace::messages_from(d, 0)) {
        messages.extend(ms?);
    }
    for m in messages {
        let who = if m.author == a.id().to_string() {
            "phone A"
        } else if m.author == desk.id().to_string() {
            "desktop"
        } else {
            "?"
        };
        let text = terminal::line(m.text.lines().next().unwrap_or_default());
        println!("  [{:<5}] {who:<8} {text}", m.role.as_str());
    }
    println!("\nDevices as the desktop sees them:");
    for p in desk.peers() {
        let who = if p.id == a.id() { "phone A" } else { "phone B" };
        println!("  {who}  {}  {}", p.id.short(), p.presence);
    }
    let same = || all_heads(&desk) == all_heads(&a) && all_heads(&a) == all_heads(&b);
    let t0 = Instant::now();
    while !same() && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let heads_equal = same();
    println!("\nAll three replicas have the same heads: {heads_equal}");
    stop.cancel();
    executor.await??;
    for n in [a, b] {
        n.shutdown().await;
    }
    if let Ok(desk) = std::sync::Arc::try_unwrap(desk) {
        desk.shutdown().await;
    }
    if !heads_equal {
        bail!("replicas did not converge");
    }
    Ok(())
}
