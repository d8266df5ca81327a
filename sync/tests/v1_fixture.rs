//! The committed version-1 fixture (`tests/fixtures/v1`, written by `tests/fixtures/v1/make`
//! with the release that keeps the whole workspace in one Automerge document): the redb files
//! of a desktop and two phones. Each is opened from a copy (opening runs the store's
//! migrations, which may write) and must hold exactly the messages, tasks and approvals the
//! phones showed when the fixture was made (`expected.json`). This is the baseline the
//! multi-document migration is tested against: whatever the layout becomes, these files must
//! still read as the same conversation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use automerge::Automerge;
use deskhand_core::Workspace;
use deskhand_sync::store::{DocKey, Loaded, Store};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1")
}

/// What the store reads from the redb file at `db` (a copy is opened, not the fixture: opening
/// runs the migrations).
fn load_copy(db: &Path) -> Result<Loaded> {
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("deskhand.redb");
    std::fs::copy(db, &copy).with_context(|| format!("copying {}", db.display()))?;
    let (_store, _thread, loaded) = Store::open(&copy)?;
    Ok(loaded)
}

/// The workspace document held by the redb file at `db`, and that it is the only one (with
/// the change signatures of its own, as migration 5 keeps them).
fn document(db: &Path) -> Result<Automerge> {
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("deskhand.redb");
    std::fs::copy(db, &copy).with_context(|| format!("copying {}", db.display()))?;
    let (store, _thread, loaded) = Store::open(&copy)?;
    ensure!(
        loaded.doc_keys == [DocKey::WORKSPACE].into(),
        "documents besides the workspace: {:?}",
        loaded.doc_keys
    );
    let stored = store
        .load_doc_blocking(&DocKey::WORKSPACE)?
        .context("no workspace document after migration 4")?;
    ensure!(
        !stored.signatures.is_empty(),
        "the workspace's change signatures are gone"
    );
    Ok(stored.load()?)
}

/// The workspace document held by the redb file at `db`, read through the schema.
fn workspace(db: &Path) -> Result<Workspace> {
    let ws = Workspace::read(&document(db)?)?;
    ensure!(ws.skipped.is_empty(), "items left out: {:?}", ws.skipped);
    Ok(ws)
}

/// What must survive any migration, in the form `make` wrote `expected.json`.
fn kept(ws: &Workspace) -> Value {
    let mut tasks: Vec<Value> = ws
        .tasks
        .values()
        .map(|t| json!({"id": t.id.as_str(), "prompt": t.prompt, "status": t.status.as_str()}))
        .collect();
    tasks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let approvals: Vec<Value> = ws
        .approvals
        .values()
        .map(|a| {
            json!({
                "id": a.id.as_str(),
                "task_id": a.task_id.as_str(),
                "resolution": a.resolution.as_ref().map(|r| r.verdict.as_str()),
            })
        })
        .collect();
    json!({
        "messages": ws.messages.iter().map(|m| json!({
            "id": m.id.as_str(), "author": m.author, "text": m.text,
        })).collect::<Vec<_>>(),
        "tasks": tasks,
        "approvals": approvals,
    })
}

#[test]
fn the_v1_fixture_reads_as_the_conversation_it_was_made_from() -> Result<()> {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    // The fixture is what `make` says it is (so this test cannot pass on an empty one).
    assert_eq!(expected["messages"].as_array().map(Vec::len), Some(10));
    assert_eq!(expected["tasks"].as_array().map(Vec::len), Some(7));
    assert_eq!(expected["approvals"].as_array().map(Vec::len), Some(3));
    for who in ["desk", "alpha", "beta"] {
        let ws = workspace(&fixture().join(who).join("deskhand.redb"))?;
        assert_eq!(ws.schema_version, 1, "{who}");
        assert_eq!(kept(&ws), expected, "{who}");
    }
    // The desktop's registry and per-peer sync states come along too: alpha and beta paired,
    // gamma revoked (the migration must keep who may sync, and what each peer already has).
    let loaded = load_copy(&fixture().join("desk/deskhand.redb"))?;
    let peers: Vec<Value> = loaded
        .peers
        .iter()
        .map(|(_, json)| serde_json::from_slice(json))
        .collect::<Result<_, _>>()?;
    let mut names: Vec<(&str, bool)> = peers
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?"),
                !p["revoked_at"].is_null(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, [("alpha", false), ("beta", false), ("gamma", true)]);
    assert_eq!(
        loaded.sync_states.len(),
        3,
        "a sync state per peer that synced"
    );
    assert!(
        loaded
            .sync_states
            .iter()
            .all(|(_, doc, _)| *doc == DocKey::WORKSPACE),
        "every sync state is the workspace document's"
    );
    Ok(())
}

#[test]
fn the_v1_fixture_splits_into_week_documents_without_losing_anything() -> Result<()> {
    use automerge::{ROOT, ReadDoc};
    use deskhand_core::conversation::split_v1;
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    let docs: Vec<Automerge> = ["desk", "alpha", "beta"]
        .iter()
        .map(|who| document(&fixture().join(who).join("deskhand.redb")))
        .collect::<Result<_>>()?;
    let workspace = deskhand_core::DocId::from_bytes([0x5a; 16]);
    let split = split_v1(&docs[0], &workspace)?;
    ensure!(!split.weeks.is_empty(), "no week documents");
    // Every message, in conversation order across the weeks (oldest week first); every task and
    // approval in exactly one week.
    let mut ids = Vec::new();
    let (mut tasks, mut approvals) = (Vec::new(), Vec::new());
    for doc in split.weeks.values() {
        let (_, list) = doc.get(ROOT, "messages")?.context("messages")?;
        for i in 0..doc.length(&list) {
            let (_, m) = doc.get(&list, i)?.context("message")?;
            let (id, _) = doc.get(&m, "id")?.context("id")?;
            ids.push(id.into_string().map_err(|_| anyhow::anyhow!("id"))?);
        }
        let (_, t) = doc.get(ROOT, "tasks")?.context("tasks")?;
        tasks.extend(doc.keys(&t));
        let (_, a) = doc.get(ROOT, "approvals")?.context("approvals")?;
        approvals.extend(doc.keys(&a));
    }
    let want = |k: &str, f: &str| -> Vec<String> {
        expected[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[f].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(ids, want("messages", "id"));
    tasks.sort();
    assert_eq!(tasks, want("tasks", "id"));
    approvals.sort();
    assert_eq!(approvals, want("approvals", "id"));
    let (_, devices) = split.root.get(ROOT, "devices")?.context("devices")?;
    assert_eq!(
        split.root.keys(&devices).count(),
        3,
        "alpha, beta and revoked gamma"
    );
    // The phones hold the same changes as the desktop (the fixture ends with both in sync):
    // their splits are the same bytes, so desktop and phones can migrate apart and agree.
    for (who, doc) in ["alpha", "beta"].iter().zip(&docs[1..]) {
        assert_eq!(doc.get_heads(), docs[0].get_heads(), "{who} synced last");
        let theirs = split_v1(doc, &workspace)?;
        assert_eq!(theirs.root.save(), split.root.save(), "{who}");
        for (week, d) in &split.weeks {
            assert_eq!(
                theirs.weeks[week].save(),
                d.save(),
                "{who} {}",
                week.label()
            );
        }
    }
    Ok(())
}

/// The desktop's fixture opened by a node, as `deskhand serve` opens it after an upgrade: the
/// store's migration 4 runs under it, and the node serves the same conversation, keeps its
/// identity and workspace id, and writes and reopens with everything kept.
#[tokio::test]
async fn a_desktop_node_opens_the_v1_fixture_and_goes_on_writing() -> Result<()> {
    use deskhand_core::schema::{Message, Role};
    use deskhand_sync::{Node, NodeConfig, NodeRole};

    let dir = tempfile::tempdir()?;
    std::fs::copy(
        fixture().join("desk/deskhand.redb"),
        Node::db_path(dir.path()),
    )?;
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json"))?)?;
    let config = || {
        NodeConfig::new(
            dir.path(),
            NodeRole::Desktop {
                name: "desk".into(),
            },
        )
    };
    let node = Node::open(config()).await?;
    let (id, doc_id) = (node.id(), node.doc_id());
    ensure!(doc_id.is_some(), "the fixture's workspace id was lost");
    // Opened, the workspace was split: a root (schema 2) and one document per week, stored.
    ensure!(node.read(Workspace::check_version)? == 2, "not split");
    ensure!(!node.catalog().is_empty(), "no week announced");
    node.open_all_weeks().await?;
    let ws = node.read_workspace()?;
    assert_eq!(kept(&ws), expected);
    let names: Vec<String> = node.peers().into_iter().map(|p| p.record.name).collect();
    ensure!(names.len() == 3, "paired devices: {names:?}");
    let m = Message {
        id: "after-upgrade".into(),
        author: id.to_string(),
        role: Role::User,
        text: "written after the split".into(),
        created_at: now_ms(),
        task_id: None,
    };
    let key = node.conversation_doc_at(m.created_at).await?;
    node.write_doc(&key, |tx| Workspace::append_message(tx, &m))
        .await?;
    node.shutdown().await;

    // Reopened: not split again; the weeks are read from the store.
    let node = Node::open(config()).await?;
    assert_eq!((node.id(), node.doc_id()), (id, doc_id));
    node.open_all_weeks().await?;
    let ws = node.read_workspace()?;
    assert_eq!(ws.messages.len(), 11);
    assert_eq!(
        ws.messages.last().map(|m| m.text.as_str()),
        Some(m.text.as_str())
    );
    node.shutdown().await;
    Ok(())
}

/// Now, Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A phone updated while it held the single-document workspace, with a message the desktop
/// never received: it sets that document aside, receives the desktop's split (root and
/// weeks), writes its unsent message again into the week the split puts it in, and drops the
/// old document. The desktop ends up with the message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_updated_with_an_unsent_message_sends_it_into_its_week() -> Result<()> {
    use deskhand_core::schema::{Message, Role};
    use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, Phone, PhoneConfig, RelaySetting};

    let dir = tempfile::tempdir()?;
    let (desk_dir, alpha_dir) = (dir.path().join("desk"), dir.path().join("alpha"));
    for (from, to) in [("desk", &desk_dir), ("alpha", &alpha_dir)] {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(fixture().join(from))? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    // Alpha's unsent message, written as the old release would have: into the one document.
    let unsent = {
        let (store, thread, _) = Store::open(&Node::db_path(&alpha_dir))?;
        let secret = std::fs::read(alpha_dir.join(deskhand_sync::phone::KEY_FILE))?;
        let alpha = deskhand_core::DeviceKey::from_secret_slice(&secret)?.device_id();
        let mut doc = store
            .load_doc_blocking(&DocKey::WORKSPACE)?
            .context("alpha's workspace")?
            .load()?;
        doc.set_actor(alpha.session_actor([1; 8]));
        let m = Message {
            id: "unsent-before-the-update".into(),
            author: alpha.to_string(),
            role: Role::User,
            text: "written offline, before the update".into(),
            created_at: now_ms(),
            task_id: None,
        };
        doc.transact::<_, _, deskhand_core::SchemaError>(|tx| Workspace::append_message(tx, &m))
            .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
        store
            .write(deskhand_sync::store::WriteOp::Compact(
                DocKey::WORKSPACE,
                doc.save(),
            ))
            .await
            .context("storing alpha's message")?;
        drop(store);
        drop(thread);
        m
    };
    let net = || NetConfig::default().with_relay(RelaySetting::Off);
    let desk = Node::open(
        NodeConfig::new(
            &desk_dir,
            NodeRole::Desktop {
                name: "desk".into(),
            },
        )
        .with_net(net()),
    )
    .await?;
    // Alpha, as its terminal app opens it: its key in its key file.
    let phone = Phone::open(
        PhoneConfig::new(&alpha_dir, "alpha", "test")
            .with_net(net())
            .with_key_provider(std::sync::Arc::new(
                deskhand_sync::phone::FileKeyProvider::in_data_dir(&alpha_dir),
            )),
    )
    .await?;
    // Paired again with the same desktop (it listens on a new port): the phone keeps its data.
    phone
        .pair(
            &desk
                .create_pairing(std::time::Duration::from_secs(60))?
                .to_uri(),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let week = deskhand_core::conversation::ConversationWeek::of_unix_ms(unsent.created_at)?;
    let key = desk.open_week(week).await?;
    let held = || {
        desk.read_doc(&key, |d| {
            Workspace::messages_from(d, 0)
                .map(|ms| ms.iter().filter(|m| m.id == unsent.id).count())
                .unwrap_or(0)
        })
        .unwrap_or(0)
    };
    while held() == 0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the desktop never received the message written before the update; the phone shows {:?}, {} messages, unsent {:?}",
            phone.snapshot()?.desktop,
            phone.snapshot()?.messages.len(),
            phone.unsent_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    phone.sync(std::time::Duration::from_secs(20)).await?;
    ensure!(held() == 1, "the message arrived {} times", held());
    let snap = phone.snapshot()?;
    ensure!(
        snap.messages.iter().any(|m| m.message.id == unsent.id),
        "the phone does not show its own message"
    );
    phone.shutdown().await;
    desk.shutdown().await;
    // The old document is gone from the phone's store.
    let (_store, _thread, loaded) = Store::open(&Node::db_path(&alpha_dir))?;
    ensure!(
        !loaded.doc_keys.contains(&DocKey::LEGACY),
        "the set-aside workspace was kept"
    );
    Ok(())
}
