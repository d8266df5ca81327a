//! `deskhand demo`: the sync spine, end to end, in a temporary directory.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskhand_core::MessageId;
use deskhand_core::schema::{Message, Role, Workspace};
use deskhand_sync::node::random_id_bytes;
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::{Node, NodeConfig, NodeRole};

async fn say(node: &Node, role: Role, text: &str) -> Result<()> {
    let msg = Message {
        id: MessageId::from_random(random_id_bytes()),
        author: node.id().to_string(),
        role,
        text: text.into(),
        created_at: now_unix_ms(),
        task_id: None,
    };
    node.write(|tx| Workspace::append_message(tx, &msg)).await?;
    Ok(())
}

async fn until(
    node: &Node,
    what: &str,
    f: impl Fn(&automerge::Automerge) -> bool,
) -> Result<Duration> {
    let t = Instant::now();
    let mut sub = node.subscribe();
    let wait = async {
        while !node.read(&f) {
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
        Err(e) => println!("   (reusing A's code was refused: {e})"),
        Ok(()) => bail!("a used pairing code was accepted"),
    }

    say(&a, Role::User, "Hi from phone A: what's in my Downloads?").await?;
    let t = until(&b, "B sees A's message", |d| {
        Workspace::message_count(d) >= 1
    })
    .await?;
    println!("2. A's message reached B through the desktop in {t:.1?}");
    say(
        &desk,
        Role::Agent,
        "Desktop here: got it. (This build syncs the conversation; running tasks comes next.)",
    )
    .await?;
    until(&a, "A sees the reply", |d| Workspace::message_count(d) >= 2).await?;
    until(&b, "B sees the reply", |d| Workspace::message_count(d) >= 2).await?;
    println!("3. the desktop's reply reached both phones");

    b.shutdown().await;
    for i in 1..=3 {
        say(
            &a,
            Role::User,
            &format!("Written while phone B was offline ({i}/3)"),
        )
        .await?;
    }
    println!("4. phone B went offline; A wrote 3 messages");
    let t = Instant::now();
    let b = Node::open(NodeConfig::new(&b_dir, NodeRole::Phone)).await?;
    until(&b, "B catches up", |d| Workspace::message_count(d) >= 5).await?;
    let t = t.elapsed();
    println!("5. phone B came back and caught up in {t:.1?}\n");

    println!("Conversation as phone B sees it:");
    for m in b.read(|d| Workspace::messages_from(d, 0))? {
        let who = if m.author == a.id().to_string() {
            "phone A"
        } else if m.author == desk.id().to_string() {
            "desktop"
        } else {
            "?"
        };
        println!("  [{:<5}] {who:<8} {}", m.role.as_str(), m.text);
    }
    println!("\nDevices as the desktop sees them:");
    for p in desk.peers() {
        let who = if p.id == a.id() { "phone A" } else { "phone B" };
        println!("  {who}  {}  {}", p.id.short(), p.presence);
    }
    let heads_equal = desk.read(|d| d.get_heads()) == a.read(|d| d.get_heads())
        && a.read(|d| d.get_heads()) == b.read(|d| d.get_heads());
    println!("\nAll three replicas have the same heads: {heads_equal}");
    for n in [a, b, desk] {
        n.shutdown().await;
    }
    if !heads_equal {
        bail!("replicas did not converge");
    }
    Ok(())
}
