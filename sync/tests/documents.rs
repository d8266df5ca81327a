//! A workspace of several documents synced over one connection per peer (`deskhand/sync/4`):
//! real nodes on loopback, a desktop and phones. Each week's conversation document syncs on
//! its own stream, is relayed by the desktop to the other phones that hold it, and is stored
//! under its own key; a stream for a document that is not one of the workspace's is refused on
//! its own, and the rest of the connection goes on. A new phone syncs the recent weeks the
//! desktop's catalog announces and pages back through the rest on demand.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use automerge::Automerge;
use deskhand_core::conversation::{ConversationWeek, conversation_doc_id};
use deskhand_core::schema::{Message, Role, Workspace};
use deskhand_core::{DocId, SchemaError};
use deskhand_sync::store::DocKey;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};

const T: Duration = Duration::from_secs(15);

fn net() -> NetConfig {
    NetConfig::default().with_relay(RelaySetting::Off)
}

async fn desktop(dir: &std::path::Path) -> Result<Node> {
    Ok(Node::open(
        NodeConfig::new(
            dir,
            NodeRole::Desktop {
                name: "desk".into(),
            },
        )
        .with_net(net()),
    )
    .await?)
}

async fn paired_phone(desk: &Node, dir: &std::path::Path, name: &str) -> Result<Node> {
    let phone = Node::open(NodeConfig::new(dir, NodeRole::Phone).with_net(net())).await?;
    phone
        .pair(&desk.create_pairing(Duration::from_secs(60))?, name, "test")
        .await?;
    Ok(phone)
}

fn message(node: &Node, text: &str) -> Message {
    Message {
        id: format!("{}-{text}", node.id().short()).into(),
        author: node.id().to_string(),
        role: Role::User,
        text: text.into(),
        created_at: 1,
        task_id: None,
    }
}

/// Waits until `f` holds, polling.
async fn until(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The texts of a document's messages, in order.
fn texts(doc: &Automerge) -> Vec<String> {
    Workspace::messages_from(doc, 0)
        .map(|ms| ms.into_iter().map(|m| m.text).collect())
        .unwrap_or_default()
}

fn this_week() -> ConversationWeek {
    ConversationWeek::of_unix_ms(chrono_now_ms()).expect("now is a week")
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn open_week(node: &Node, workspace: DocId, week: ConversationWeek) -> Result<DocKey> {
    let key = node.open_week(week).await?;
    assert_eq!(key, DocKey::of(&conversation_doc_id(&workspace, week)));
    Ok(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_document_syncs_on_its_own_stream_and_is_relayed_between_phones() -> Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let desk = desktop(dirs[0].path()).await?;
    let a = paired_phone(&desk, dirs[1].path(), "a").await?;
    let b = paired_phone(&desk, dirs[2].path(), "b").await?;
    let workspace = a.doc_id().context("a paired phone knows the workspace")?;
    assert_eq!(Some(workspace), desk.doc_id());
    let week = this_week();

    // A opens the week (from its genesis) and writes into it; B holds the week too.
    let key = open_week(&a, workspace, week).await?;
    open_week(&b, workspace, week).await?;
    let m = message(&a, "from a, in the week");
    a.write_doc(&key, |tx| Workspace::append_message(tx, &m))
        .await?;
    until("the desktop to hold A's message in the week", || {
        desk.read_doc(&key, texts) == Some(vec!["from a, in the week".to_owned()])
    })
    .await
    .with_context(|| format!("A's peers: {:?}; desk's: {:?}", a.peers(), desk.peers()))?;
    until("B to hold A's message, relayed by the desktop", || {
        b.read_doc(&key, texts) == Some(vec!["from a, in the week".to_owned()])
    })
    .await?;
    let m = message(&b, "from b");
    b.write_doc(&key, |tx| Workspace::append_message(tx, &m))
        .await?;
    until("A to hold B's answer", || {
        a.read_doc(&key, texts).is_some_and(|t| t.len() == 2)
    })
    .await?;
    // The workspace's document is another document: none of it went there.
    for n in [&desk, &a, &b] {
        assert_eq!(n.read(Workspace::message_count), 0);
    }
    // Every peer is shown in sync only once every document it syncs is.
    until("A to be in sync with the desktop on both documents", || {
        a.peers().iter().all(|p| p.in_sync)
    })
    .await?;
    let heads = desk.read_doc(&key, |d| d.get_heads()).context("loaded")?;
    for n in [b, a] {
        n.shutdown().await;
    }
    desk.shutdown().await;

    // The desktop stored the week under its own key, and loads it at start: it is this week.
    let desk = desktop(dirs[0].path()).await?;
    assert_eq!(desk.read_doc(&key, |d| d.get_heads()), Some(heads));
    desk.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_for_a_document_not_of_the_workspace_is_refused_alone() -> Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let desk = desktop(dirs[0].path()).await?;
    let a = paired_phone(&desk, dirs[1].path(), "a").await?;
    let workspace = a.doc_id().context("a paired phone knows the workspace")?;
    until("A to receive the workspace's document", || {
        a.read(|d| Workspace::check_version(d).is_ok())
    })
    .await?;
    let now = open_week(&a, workspace, this_week()).await?;

    // A document of no workspace, and a week too far ahead of the desktop's clock.
    let stranger = DocKey::of(&DocId::from_bytes([9; 16]));
    a.open_doc(&stranger, Automerge::new).await?;
    let ahead = (0..10).fold(this_week(), |w, _| w.next().expect("a later week"));
    let ahead = open_week(&a, workspace, ahead).await?;
    let m = message(&a, "ahead");
    a.write_doc(&ahead, |tx| Workspace::append_message(tx, &m))
        .await?;

    // This week's document still syncs.
    let m = message(&a, "in this week");
    a.write_doc(&now, |tx| Workspace::append_message(tx, &m))
        .await?;
    until("the desktop to hold A's message", || {
        desk.read_doc(&now, Workspace::message_count) == Some(1)
    })
    .await?;
    until("A to show why its documents are refused", || {
        a.peers().iter().any(|p| {
            p.last_error
                .as_deref()
                .is_some_and(|e| e.contains("is not one of this workspace's"))
        })
    })
    .await?;
    assert_eq!(desk.read_doc(&stranger, |_| ()), None);
    assert_eq!(desk.read_doc(&ahead, |_| ()), None);
    // The refused documents do not keep the phone from being in sync.
    until("A to be in sync with the desktop", || {
        a.peers().iter().all(|p| p.in_sync)
    })
    .await?;
    // The session stays up: a later message still arrives.
    let m = message(&a, "still here");
    a.write_doc(&now, |tx| Workspace::append_message(tx, &m))
        .await?;
    until("the desktop to hold A's second message", || {
        desk.read_doc(&now, Workspace::message_count) == Some(2)
    })
    .await?;
    a.shutdown().await;
    desk.shutdown().await;
    Ok(())
}

/// What a phone may write is vetted in every document: in a week document as in the
/// workspace's, a phone may not write as the desktop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_writing_outside_its_rights_in_a_week_is_refused() -> Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let desk = desktop(dirs[0].path()).await?;
    let a = paired_phone(&desk, dirs[1].path(), "a").await?;
    let workspace = a.doc_id().context("a paired phone knows the workspace")?;
    let key = open_week(&a, workspace, this_week()).await?;
    a.write_doc(&key, |tx| {
        use automerge::transaction::Transactable;
        tx.put(automerge::ROOT, "week", "1999-W01")
            .map_err(SchemaError::from)?;
        Ok(())
    })
    .await?;
    until("A to be told its change was refused", || {
        a.peers().iter().any(|p| {
            p.last_error
                .as_deref()
                .is_some_and(|e| e.contains("week, which a phone may not write"))
        })
    })
    .await?;
    let week = desk.read_doc(&key, |d| {
        use automerge::ReadDoc;
        d.get(automerge::ROOT, "week")
            .ok()
            .flatten()
            .map(|(v, _)| v.to_string())
    });
    assert_eq!(
        week.flatten(),
        Some("\"".to_owned() + &this_week().label() + "\"")
    );
    a.shutdown().await;
    desk.shutdown().await;
    Ok(())
}

/// A desktop with a year of conversation: 52 weeks of `per_week` messages, each written in its
/// week's document (2025-W01 … 2025-W52), and one task left open in week 10.
async fn desktop_with_a_year(dir: &std::path::Path, per_week: usize) -> Result<Node> {
    use deskhand_core::schema::Task;
    let desk = desktop(dir).await?;
    for w in 1..=52u8 {
        let week = ConversationWeek::new(2025, w)?;
        let key = desk.open_week(week).await?;
        let at = week.start_unix_ms() + 3_600_000;
        for i in 0..per_week {
            let m = Message {
                created_at: at + i as i64,
                ..message(&desk, &format!("{}#{i}", week.label()))
            };
            desk.write_doc_queued(&key, |tx| Workspace::append_message(tx, &m))?;
        }
        if w == 10 {
            let t = Task::queued("t-open".into(), "still running", &desk.id(), at);
            desk.write_doc_queued(&key, |tx| Workspace::add_task(tx, &t))?;
        }
    }
    desk.flush().await?;
    Ok(desk)
}

/// A new phone syncs the newest weeks (enough for the latest messages) and the week with an open
/// task, not the year; then pages back through every week, newest first, until it holds the
/// whole conversation in order. The desktop, restarted, loads only this week and the active one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_phone_syncs_the_recent_weeks_and_pages_back_through_a_year() -> Result<()> {
    use deskhand_sync::{Phone, PhoneConfig};
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let desk = desktop_with_a_year(dirs[0].path(), 30).await?;
    desk.shutdown().await;
    let desk = desktop(dirs[0].path()).await?;
    assert_eq!(desk.catalog().len(), 52, "every week is announced");
    let loaded = desk.conversation_docs().len();
    assert!(
        loaded <= 3,
        "the desktop loaded {loaded} weeks at start (this week and the active one)"
    );

    let phone = Phone::open(PhoneConfig::new(dirs[1].path(), "p", "test").with_net(net())).await?;
    let code = desk.create_pairing(Duration::from_secs(60))?.to_uri();
    phone.pair(&code).await?;
    phone.sync(T).await?;
    let snap = phone.snapshot()?;
    let labels = |snap: &deskhand_sync::PhoneSnapshot| -> Vec<String> {
        snap.messages
            .iter()
            .map(|m| m.message.text.split('#').next().unwrap_or("").to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    // The newest two weeks make the latest 50 messages; week 10 has the open task.
    assert_eq!(labels(&snap), ["2025-W10", "2025-W51", "2025-W52"]);
    assert_eq!(snap.messages.len(), 90);
    assert!(
        snap.task(&"t-open".into()).is_some(),
        "the open task is shown"
    );
    assert_eq!(snap.older_weeks, 49);

    let mut pages = 0;
    while phone.snapshot()?.older_weeks > 0 {
        let before = phone.snapshot()?.older_weeks;
        assert_eq!(phone.load_older(10).await?, before.min(10));
        phone.sync(T).await?;
        pages += 1;
    }
    assert_eq!(pages, 5);
    let snap = phone.snapshot()?;
    assert_eq!(snap.messages.len(), 52 * 30);
    let texts: Vec<&str> = snap
        .messages
        .iter()
        .map(|m| m.message.text.as_str())
        .collect();
    let expected: Vec<String> = (1..=52)
        .flat_map(|w| (0..30).map(move |i| format!("2025-W{w:02}#{i}")))
        .collect();
    assert_eq!(texts, expected, "the whole year, in order");
    assert_eq!(phone.load_older(1).await?, 0, "nothing older");
    phone.shutdown().await;
    desk.shutdown().await;
    Ok(())
}

/// The desktop unloads the weeks nobody uses (keeping this week, the week with an open task, and
/// the weeks a phone syncs on a stream), loads an unloaded week again when a phone or a writer
/// asks for it, and loses nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_unloads_idle_weeks_and_loads_them_again_when_asked() -> Result<()> {
    use deskhand_sync::{Phone, PhoneConfig};
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let desk = desktop_with_a_year(dirs[0].path(), 30).await?;
    // Written in this run: this week and all 52 are loaded, and were used just now.
    assert_eq!(desk.conversation_docs().len(), 53);
    assert_eq!(desk.unload_idle_weeks(Duration::from_secs(3600)), 0);
    assert_eq!(desk.unload_idle_weeks(Duration::ZERO), 51);
    let w10 = ConversationWeek::new(2025, 10)?;
    let w20 = ConversationWeek::new(2025, 20)?;
    let workspace = desk.doc_id().context("workspace")?;
    let key_of = |w: ConversationWeek| DocKey::of(&conversation_doc_id(&workspace, w));
    assert_eq!(
        desk.conversation_docs(),
        [key_of(w10), key_of(this_week())],
        "kept: the week with the open task and this week"
    );

    // A phone pairs: the weeks it syncs load again and stay while its streams hold them.
    let phone = Phone::open(PhoneConfig::new(dirs[1].path(), "p", "test").with_net(net())).await?;
    phone
        .pair(&desk.create_pairing(Duration::from_secs(60))?.to_uri())
        .await?;
    phone.sync(T).await?;
    let snap = phone.snapshot()?;
    assert_eq!(snap.messages.len(), 90);
    assert_eq!(snap.messages[30].message.text, "2025-W51#0");
    assert_eq!(
        desk.unload_idle_weeks(Duration::ZERO),
        0,
        "the phone's streams hold them"
    );
    assert_eq!(desk.conversation_docs().len(), 4);
    phone.shutdown().await;
    until("the phone's session ended", || {
        desk.peers().iter().all(|p| {
            !matches!(
                p.presence,
                deskhand_sync::presence::Presence::Connected { .. }
            )
        })
    })
    .await?;
    assert_eq!(desk.unload_idle_weeks(Duration::ZERO), 2);

    // A writer opens an unloaded week: it loads whole, takes the change, and unloads again.
    let key = desk.open_week(w20).await?;
    assert_eq!(desk.read_doc(&key, texts).context("loaded")?.len(), 30);
    let late = Message {
        created_at: w20.start_unix_ms() + 7_200_000,
        ..message(&desk, "2025-W20#late")
    };
    desk.write_doc(&key, |tx| Workspace::append_message(tx, &late))
        .await?;
    assert_eq!(desk.unload_idle_weeks(Duration::ZERO), 1);
    assert!(desk.read_doc(&key, texts).is_none(), "unloaded");
    let key = desk.open_week(w20).await?;
    let texts20 = desk.read_doc(&key, texts).context("loaded")?;
    assert_eq!(texts20.len(), 31);
    assert_eq!(texts20.last().map(String::as_str), Some("2025-W20#late"));
    desk.shutdown().await;
    Ok(())
}
