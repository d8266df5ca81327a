//! `deskhand-bench`: the workloads of shared/PERFORMANCE.md (W1–W5; W6 once the mobile library
//! exists), over real iroh connections on loopback with relays off and real redb files.
//!
//! The desktop is a separate `deskhand-node` process; the phones live in this process, each with
//! its own endpoint and database. Cross-process latencies use the system clock of this one
//! machine (unix microseconds) on both sides. Prints one JSON line per figure, then a table.
//!
//! A1 runs a real `deskhand serve` (the release binary beside this one) whose model is the
//! scripted model server of `deskhand_tests::model_server`, in this process, on loopback.
//!
//! S1 runs a real `deskhand serve` (no model: the built-in agent) with 16 phones in this process,
//! each writing 1,000 requests at once; the desktop runs a task for every one.
//!
//! `deskhand-bench [all|w1|w2|w3|w4|w5|a1|s1|floor] [--quick]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use automerge::Automerge;
use automerge::sync::{self, SyncDoc};
use deskhand_core::TaskStatus;
use deskhand_core::schema::{DesktopInfo, ExecutorState, Message, Role, SchemaError, Workspace};
use deskhand_core::{DeviceKey, MessageId, TaskId};
use deskhand_sync::node::{random_bytes, random_id_bytes};
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::store::DocKey;
use deskhand_sync::{Node, NodeConfig, NodeRole, PeerRecord};
use deskhand_tests::model_server::{ModelServer, Reply, Turn};
use deskhand_tests::{NodeProc, Serve};
use serde_json::json;

struct Report {
    rows: Vec<(String, String, f64, String)>,
}

impl Report {
    fn put(&mut self, workload: &str, metric: &str, value: f64, note: &str) {
        println!(
            "{}",
            json!({"workload": workload, "metric": metric, "value": (value * 100.0).round() / 100.0})
        );
        self.rows
            .push((workload.into(), metric.into(), value, note.into()));
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn text100(i: usize) -> String {
    let mut s = format!("message {i}: ");
    while s.len() < 100 {
        s.push_str("lorem ipsum ");
    }
    s.truncate(100);
    s
}

fn message(author: &Node, i: usize) -> Message {
    Message {
        id: MessageId::from_random(random_id_bytes()),
        author: author.id().to_string(),
        role: Role::User,
        text: text100(i),
        created_at: now_unix_ms(),
        task_id: None,
    }
}

fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("deskhand-node")
}

async fn phone(dir: &Path, desk: &mut NodeProc, name: &str) -> Result<Node> {
    let node = Node::open(NodeConfig::new(dir.join(name), NodeRole::Phone)).await?;
    desk.ok(json!({"cmd": "allow", "id": node.id().to_string(), "name": name}))?;
    let id = desk.id.parse()?;
    let record = PeerRecord {
        name: "desk".into(),
        platform: "desktop".into(),
        paired_at: now_unix_ms(),
        revoked_at: None,
        last_seen: None,
        addrs: desk.addrs.clone(),
        clock_offset_ms: None,
        relay: None,
    };
    node.put_peer(id, record).await?;
    wait_for(&node, Duration::from_secs(30), |d| {
        Workspace::check_version(d).is_ok()
    })
    .await?;
    Ok(node)
}

/// This week's conversation document on `n` (where the benchmarks write and read now), loaded.
async fn week(n: &Node) -> Result<DocKey> {
    Ok(n.conversation_doc_at(now_unix_ms()).await?)
}

/// Messages in `n`'s document `key` (0 when it is not loaded).
fn count(n: &Node, key: &DocKey) -> usize {
    n.read_doc(key, Workspace::message_count).unwrap_or(0)
}

/// Runs `f` on each conversation document `n` has loaded, oldest week first.
fn each_week<R>(n: &Node, mut f: impl FnMut(&Automerge) -> R) -> Vec<R> {
    n.conversation_docs()
        .iter()
        .filter_map(|k| n.read_doc(k, &mut f))
        .collect()
}

/// Waits until `f` holds on one of `node`'s loaded conversation documents.
async fn wait_for_week(
    node: &Node,
    timeout: Duration,
    f: impl Fn(&Automerge) -> bool,
) -> Result<()> {
    wait_until(node, timeout, || each_week(node, &f).contains(&true)).await
}

/// Waits until `f` holds on `node`'s workspace document.
async fn wait_for(node: &Node, timeout: Duration, f: impl Fn(&Automerge) -> bool) -> Result<()> {
    wait_until(node, timeout, || node.read(&f)).await
}

/// Waits until `holds`, checked whenever `node`'s documents change.
async fn wait_until(node: &Node, timeout: Duration, holds: impl Fn() -> bool) -> Result<()> {
    let mut sub = node.subscribe();
    tokio::time::timeout(timeout, async {
        while !holds() {
            if sub.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .context("timed out waiting for the document")
}

/// Waits until `node` and its desktop hold the same changes of every document it syncs.
async fn in_sync(node: &Node, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if node.peers().iter().any(|p| p.in_sync) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not in sync after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn desk_proc(dir: &Path) -> Result<NodeProc> {
    NodeProc::spawn(&node_bin(), &dir.join("desk"), "desktop", None)
}

/// W1: A appends one 100-character message; time until B observes it through the desktop.
async fn w1(r: &mut Report, quick: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut desk = desk_proc(dir.path())?;
    let a = phone(dir.path(), &mut desk, "a").await?;
    let b = phone(dir.path(), &mut desk, "b").await?;
    let (warm, n) = if quick { (10, 100) } else { (50, 1000) };
    let (mut from_commit, mut with_commit) = (Vec::new(), Vec::new());
    let mut sub = b.subscribe();
    let key = week(&a).await?;
    week(&b).await?;
    for i in 0..warm + n {
        let target = count(&b, &key) + 1;
        let m = message(&a, i);
        let t0 = Instant::now();
        a.write_doc(&key, |tx| Workspace::append_message(tx, &m))
            .await?;
        let t1 = Instant::now();
        while count(&b, &key) < target {
            tokio::time::timeout(Duration::from_secs(10), sub.changed())
                .await
                .context("B never saw it")??;
        }
        let t2 = Instant::now();
        if i >= warm {
            from_commit.push((t2 - t1).as_micros() as u64);
            with_commit.push((t2 - t0).as_micros() as u64);
        }
    }
    from_commit.sort_unstable();
    with_commit.sort_unstable();
    for (m, p) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("max_us", 1.0),
    ] {
        r.put(
            "W1",
            m,
            pct(&from_commit, p),
            "A→desktop→B, from A's durable commit returning",
        );
    }
    r.put(
        "W1",
        "p50_incl_commit_us",
        pct(&with_commit, 0.5),
        "including A's durable commit",
    );
    r.put(
        "W1",
        "p99_incl_commit_us",
        pct(&with_commit, 0.99),
        "including A's durable commit",
    );

    // A → desktop only: the desktop process stamps when it observes the message.
    let mut to_desk = Vec::new();
    for i in 0..n / 2 {
        let target = count(&a, &key) + 1;
        desk.send_only(json!({"cmd": "wait_messages", "count": target, "brief": true}))?;
        let m = message(&a, i);
        a.write_doc(&key, |tx| Workspace::append_message(tx, &m))
            .await?;
        let committed = unix_us();
        let ans = tokio::task::block_in_place(|| desk.answer())?;
        let seen = ans["observed_at_us"].as_u64().unwrap_or(0);
        to_desk.push(seen.saturating_sub(committed));
    }
    to_desk.sort_unstable();
    r.put(
        "W1",
        "a_to_desktop_p50_us",
        pct(&to_desk, 0.5),
        "A→desktop only (cross-process clock)",
    );
    r.put(
        "W1",
        "a_to_desktop_p99_us",
        pct(&to_desk, 0.99),
        "A→desktop only (cross-process clock)",
    );
    a.shutdown().await;
    b.shutdown().await;
    desk.quit()?;
    Ok(())
}

/// W2: A offline appends many messages; time from reconnect until the desktop has them all.
async fn w2(r: &mut Report, quick: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut desk = desk_proc(dir.path())?;
    let a = phone(dir.path(), &mut desk, "a").await?;
    let (base, offline) = if quick { (1000, 1000) } else { (1000, 10_000) };
    let key = week(&a).await?;
    for chunk in 0..base / 100 {
        let msgs: Vec<Message> = (0..100).map(|i| message(&a, chunk * 100 + i)).collect();
        a.write_doc(&key, |tx| {
            msgs.iter()
                .try_for_each(|m| Workspace::append_message(tx, m))
        })
        .await?;
    }
    desk.ok(json!({"cmd": "wait_messages", "count": base, "brief": true}))?;
    in_sync(&a, Duration::from_secs(10)).await?;
    let before = a.read_doc(&key, |d| d.save()).context("loaded")?;
    a.set_sync_paused(true);
    for i in 0..offline {
        let m = message(&a, base + i);
        a.write_doc(&key, |tx| Workspace::append_message(tx, &m))
            .await?;
    }
    let total = base + offline;
    desk.send_only(
        json!({"cmd": "wait_messages", "count": total, "brief": true, "timeout_ms": 120_000}),
    )?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = unix_us();
    a.set_sync_paused(false);
    let ans = tokio::task::block_in_place(|| desk.answer())?;
    if ans["ok"] != true {
        bail!("desktop did not receive all {total} messages");
    }
    let took_ms = ans["observed_at_us"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(t0) as f64
        / 1000.0;
    in_sync(&a, Duration::from_secs(30)).await?;
    let home = a.peers().into_iter().next().context("no home")?;
    r.put(
        "W2",
        "catch_up_ms",
        took_ms,
        &format!("{offline} offline messages, one change each"),
    );
    r.put(
        "W2",
        "bytes_sent_by_phone",
        home.stats.last_session_sent as f64,
        "",
    );
    r.put(
        "W2",
        "bytes_sent_by_desktop",
        home.stats.last_session_received as f64,
        "",
    );

    // The floor: Automerge's own in-memory sync of the same changes.
    let after = a.read_doc(&key, |d| d.save()).context("loaded")?;
    let mut src = Automerge::load(&after)?;
    let mut dst = Automerge::load(&before)?;
    let t = Instant::now();
    let (mut s1, mut s2) = (sync::State::new(), sync::State::new());
    pump(&mut src, &mut s1, &mut dst, &mut s2)?;
    let floor_ms = t.elapsed().as_secs_f64() * 1000.0;
    r.put(
        "W2",
        "floor_in_memory_ms",
        floor_ms,
        "automerge sync in memory",
    );
    r.put("W2", "ratio_to_floor", took_ms / floor_ms.max(0.001), "");

    // W5: the desktop's bytes on disk per message.
    desk.quit()?;
    let bytes = dir_size(&dir.path().join("desk"));
    r.put(
        "W5",
        "bytes_per_message",
        bytes as f64 / total as f64,
        "desktop data dir after W2 (100-char texts)",
    );
    a.shutdown().await;
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// W3: the desktop appends progress events at the executor's pace; time until every phone has all.
async fn w3(r: &mut Report, quick: bool) -> Result<()> {
    let sizes: &[usize] = if quick { &[1, 4] } else { &[1, 4, 16] };
    let events = if quick { 200 } else { 1000 };
    for &n in sizes {
        let dir = tempfile::tempdir()?;
        let mut desk = desk_proc(dir.path())?;
        let mut phones = Vec::new();
        for i in 0..n {
            phones.push(phone(dir.path(), &mut desk, &format!("p{i}")).await?);
        }
        let task = TaskId::from("bench-task");
        let t0 = Instant::now();
        desk.send_only(json!({"cmd": "events", "task": task.as_str(), "count": events}))?;
        let waits = phones.iter().map(|p| {
            let task = task.clone();
            async move {
                wait_for_week(p, Duration::from_secs(120), |d| {
                    Workspace::task_event_count(d, &task) >= events
                })
                .await
            }
        });
        for w in futures_join(waits).await {
            w?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let _ = tokio::task::block_in_place(|| desk.answer())?;
        r.put(
            "W3",
            &format!("phones_{n}_ms"),
            ms,
            &format!("{events} events, one change each, queued to the store"),
        );
        r.put(
            "W3",
            &format!("phones_{n}_events_per_s"),
            events as f64 / (ms / 1000.0),
            "",
        );
        for p in phones {
            p.shutdown().await;
        }
        desk.quit()?;
    }
    Ok(())
}

async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futs {
        out.push(f.await);
    }
    out
}

/// Weeks the W4 workspace's messages are spread over (issue 16: a workspace used for a year).
const W4_WEEKS: u64 = 52;

/// W4: cold start of a desktop holding many messages (and their tasks, written one change each
/// as the product writes them, dated over [`W4_WEEKS`] weeks) until it serves a phone again.
/// Then, on the desktop's database as that start left it, what the split into week documents
/// costs and what a phone would load to open (`conversation::split_v1`; the split is not yet
/// what the product runs).
async fn w4(r: &mut Report, quick: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let listen = deskhand_tests::free_udp_addr();
    let mut desk = NodeProc::spawn(
        &node_bin(),
        &dir.path().join("desk"),
        "desktop",
        Some(listen),
    )?;
    let count = if quick { 10_000 } else { 100_000 };
    let setup = Instant::now();
    desk.ok(json!({"cmd": "conversation", "count": count, "span_weeks": W4_WEEKS}))?;
    eprintln!(
        "W4 setup: {count} messages and their tasks written in {:?}",
        setup.elapsed()
    );
    let p = phone(dir.path(), &mut desk, "p").await?;
    // The phone syncs the weeks the desktop's catalog makes it choose (the recent ones).
    in_sync(&p, Duration::from_secs(120)).await?;
    // Until the desktop has heard that the phone holds everything (and so saves that): a restart
    // must not look like a first meeting, which would start with a filter over every change.
    let phone_id = p.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = desk.ok(json!({"cmd": "peers"}))?;
        let synced = state["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|x| x["id"] == phone_id.as_str() && x["in_sync"] == true)
        });
        if synced {
            break;
        }
        if Instant::now() > deadline {
            bail!("the desktop never saw the phone in sync");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    desk.quit()?;
    let t0 = Instant::now();
    let mut desk = NodeProc::spawn(
        &node_bin(),
        &dir.path().join("desk"),
        "desktop",
        Some(listen),
    )?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
    p.sync_now();
    let m = message(&p, 0);
    let key = p.conversation_doc_at(m.created_at).await?;
    p.write_doc(&key, |tx| Workspace::append_message(tx, &m))
        .await?;
    desk.ok(json!({"cmd": "wait_message", "id": m.id.as_str(), "timeout_ms": 60_000}))?;
    let served_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", desk.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    r.put(
        "W4",
        "ready_ms",
        ready_ms,
        &format!("{count} messages, one change each, and their tasks: process start to listening"),
    );
    r.put(
        "W4",
        "served_first_phone_ms",
        served_ms,
        "process start to a phone's new message stored",
    );
    r.put("W4", "peak_rss_mb", rss / 1024.0, "desktop process VmHWM");
    w7(r, quick, dir.path(), &mut desk, &p, count).await?;
    w8(r, dir.path(), &mut desk)?;
    p.shutdown().await;
    desk.quit()
}

/// W7: W1's relay on the W4 workspace. A second phone `q` pairs and receives the workspace;
/// then `p` appends one message at a time and the time until `q` holds it is measured.
async fn w7(
    r: &mut Report,
    quick: bool,
    dir: &Path,
    desk: &mut NodeProc,
    p: &Node,
    count: usize,
) -> Result<()> {
    let t = Instant::now();
    let q = phone(dir, desk, "q").await?;
    in_sync(&q, Duration::from_secs(600)).await?;
    eprintln!(
        "W7 setup: a second phone received the recent weeks in {:?}",
        t.elapsed()
    );
    let (warm, n) = if quick { (10, 100) } else { (50, 1000) };
    let mut lat = Vec::new();
    let mut sub = q.subscribe();
    // This week's document, where both phones write and read now.
    let key = p.conversation_doc_at(now_unix_ms()).await?;
    q.conversation_doc_at(now_unix_ms()).await?;
    let held = |q: &Node| q.read_doc(&key, Workspace::message_count).unwrap_or(0);
    for i in 0..warm + n {
        let target = held(&q) + 1;
        let m = message(p, i);
        p.write_doc(&key, |tx| Workspace::append_message(tx, &m))
            .await?;
        let t1 = Instant::now();
        while held(&q) < target {
            tokio::time::timeout(Duration::from_secs(30), sub.changed())
                .await
                .context("the second phone never saw it")??;
        }
        if i >= warm {
            lat.push(t1.elapsed().as_micros() as u64);
        }
    }
    lat.sort_unstable();
    for (m, v) in [("p50_us", 0.5), ("p99_us", 0.99), ("max_us", 1.0)] {
        r.put(
            "W7",
            m,
            pct(&lat, v),
            &format!("W1's relay on the W4 workspace ({count} messages), from A's durable commit"),
        );
    }
    q.shutdown().await;
    Ok(())
}

/// VmHWM of process `pid` in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// W8: a phone app (the phone API in a process of its own) on the W4 workspace. Newly paired:
/// the time from the pairing code until its latest 50 messages read, and the bytes it received.
/// Then restarted: process start until the latest 50 messages read, and its peak memory.
fn w8(r: &mut Report, dir: &Path, desk: &mut NodeProc) -> Result<()> {
    let data = dir.join("app");
    let mut app = NodeProc::spawn(&node_bin(), &data, "app", None)?;
    let code = desk.ok(json!({"cmd": "pairing_code"}))?;
    let uri = code["uri"].as_str().context("no pairing code")?.to_owned();
    let t0 = Instant::now();
    app.ok(json!({"cmd": "pair", "payload": uri}))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let latest = app.ok(json!({"cmd": "latest", "n": 50}))?;
        if latest["latest"].as_u64() == Some(50) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the new phone never showed the conversation");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let shown_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let peers = desk.ok(json!({"cmd": "peers"}))?;
    let received = peers["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["id"] == app.id.as_str()))
        .and_then(|x| x["stats"]["last_session_sent"].as_f64())
        .unwrap_or(0.0);
    r.put(
        "W8",
        "new_phone_shows_ms",
        shown_ms,
        "pairing code to the latest 50 messages readable",
    );
    r.put(
        "W8",
        "new_phone_received_bytes",
        received,
        "what the desktop sent it",
    );
    app.quit()?;
    let t0 = Instant::now();
    let mut app = NodeProc::spawn(&node_bin(), &data, "app", None)?;
    let latest = app.ok(json!({"cmd": "latest", "n": 50}))?;
    let open_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if latest["latest"].as_u64() != Some(50) {
        bail!("the restarted phone does not show its conversation: {latest}");
    }
    r.put(
        "W8",
        "open_to_latest_50_ms",
        open_ms,
        "phone process start to the latest 50 messages readable",
    );
    r.put(
        "W8",
        "phone_peak_rss_mb",
        peak_rss_mb(app.pid()),
        "phone process VmHWM",
    );
    app.quit()?;
    Ok(())
}

/// The floors: a raw iroh stream echo of one sync frame's bytes, and Automerge's in-memory sync
/// of one message through a hub.
async fn floor(r: &mut Report, quick: bool) -> Result<()> {
    use deskhand_sync::endpoint;
    const ALPN: &[u8] = b"deskhand/bench-echo";
    let n = if quick { 200 } else { 1000 };
    let server_key = DeviceKey::from_secret_bytes(random_bytes());
    let server = endpoint::bind(&server_key, &Default::default(), vec![ALPN.to_vec()]).await?;
    let client = endpoint::bind(
        &DeviceKey::from_secret_bytes(random_bytes()),
        &Default::default(),
        vec![],
    )
    .await?;
    let addrs = endpoint::direct_addrs(&server);
    let srv = server.clone();
    let echo = tokio::spawn(async move {
        if let Some(inc) = srv.accept().await
            && let Ok(conn) = inc.await
            && let Ok((mut send, mut recv)) = conn.accept_bi().await
        {
            let mut buf = vec![0u8; 300];
            while recv.read_exact(&mut buf).await.is_ok() {
                if send.write_all(&buf).await.is_err() {
                    break;
                }
            }
        }
    });
    let conn = client
        .connect(
            endpoint::peer_addr(&server_key.device_id(), &addrs, None)?,
            ALPN,
        )
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let buf = vec![7u8; 300];
    let mut back = vec![0u8; 300];
    let mut rtts = Vec::new();
    for i in 0..n + 20 {
        let t = Instant::now();
        send.write_all(&buf).await?;
        recv.read_exact(&mut back).await?;
        if i >= 20 {
            rtts.push(t.elapsed().as_micros() as u64);
        }
    }
    rtts.sort_unstable();
    r.put(
        "floor",
        "iroh_echo_300B_rtt_p50_us",
        pct(&rtts, 0.5),
        "one round trip ≈ two one-way hops of W1",
    );
    r.put("floor", "iroh_echo_300B_rtt_p99_us", pct(&rtts, 0.99), "");
    echo.abort();
    client.close().await;
    server.close().await;

    // Automerge in memory: A → hub → B for one message.
    let mut hub = Automerge::new();
    hub.transact::<_, _, SchemaError>(|tx| {
        Workspace::init(
            tx,
            &DesktopInfo {
                id: "d".into(),
                name: "d".into(),
                os: "l".into(),
                heartbeat_at: 0,
                executor: ExecutorState::Idle,
            },
        )
    })
    .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
    let mut a = hub.fork();
    let mut b = hub.fork();
    let (mut sa, mut sha, mut shb, mut sb) = (
        sync::State::new(),
        sync::State::new(),
        sync::State::new(),
        sync::State::new(),
    );
    let mut times = Vec::new();
    for i in 0..n {
        let m = Message {
            id: format!("m{i}").into(),
            author: "a".into(),
            role: Role::User,
            text: text100(i),
            created_at: 0,
            task_id: None,
        };
        a.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &m))
            .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
        let t = Instant::now();
        pump(&mut a, &mut sa, &mut hub, &mut sha)?;
        pump(&mut hub, &mut shb, &mut b, &mut sb)?;
        times.push(t.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    r.put(
        "floor",
        "automerge_relay_in_memory_p50_us",
        pct(&times, 0.5),
        "A→hub→B, same message, no IO",
    );
    Ok(())
}

/// A1: the agent's own overhead. With the scripted model on loopback: per tool step, from the
/// end of a model response calling an `allow` tool (`list`) to the next request carrying its
/// result; and from the model's first streamed text to a phone seeing it in the task's events.
async fn a1(r: &mut Report, quick: bool) -> Result<()> {
    let (steps, texts) = if quick { (10, 3) } else { (200, 30) };
    let mut replies: Vec<Reply> = (0..steps)
        .map(|i| {
            Reply::Turn(Turn::call(
                &format!("toolu_{i}"),
                "list",
                json!({"path": "~"}),
            ))
        })
        .collect();
    replies.push(Reply::Turn(Turn::text("Listed it.")));
    for j in 0..texts {
        replies.push(Reply::Turn(
            Turn::text(&format!(
                "marker{j} then the rest of a streamed answer, word by word"
            ))
            .slowly(Duration::from_millis(20)),
        ));
    }
    let model = ModelServer::start(replies).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("desk");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nprovider = \"anthropic\"\nname = \"scripted\"\nbase_url = \"{}\"\nmax_steps = {}\n",
            model.url(),
            steps + 5
        ),
    )?;
    let listen = deskhand_tests::free_udp_addr().to_string();
    let config_arg = config.display().to_string();
    let serve = Serve::spawn(
        &[],
        None,
        &data,
        &["--listen", &listen, "--config", &config_arg],
        &[],
    )?;
    std::fs::write(data.with_extension("home").join("a.txt"), "a file to list")?;
    let mut phone = NodeProc::spawn(&node_bin(), &dir.path().join("phone"), "phone", None)?;
    tokio::task::block_in_place(|| -> Result<()> {
        phone.ok(json!({"cmd": "pair", "payload": serve.payload, "name": "bench-phone"}))?;
        phone.wait_doc()?;
        let id = phone.send("list my home folder again and again")?;
        let v = phone
            .call(json!({"cmd": "wait_task", "task": format!("m-{id}"), "timeout_ms": 600_000}))?;
        if v["task"]["status"] != "done" {
            bail!("the A1 task did not finish: {}", v["task"]);
        }
        Ok(())
    })?;
    let log = model.requests();
    let mut overhead: Vec<u64> = log
        .windows(2)
        .take(steps)
        .filter_map(|w| {
            Some(
                w[1].received_at
                    .checked_duration_since(w[0].answered_at?)?
                    .as_micros() as u64,
            )
        })
        .collect();
    overhead.sort_unstable();
    r.put(
        "A1",
        "step_overhead_p50_us",
        pct(&overhead, 0.5),
        "model response end → tool result sent back (`list`, allow)",
    );
    r.put(
        "A1",
        "step_overhead_p99_us",
        pct(&overhead, 0.99),
        "model response end → tool result sent back (`list`, allow)",
    );
    let mut shown = Vec::new();
    for j in 0..texts {
        let observed = tokio::task::block_in_place(|| -> Result<u64> {
            let id = phone.send(&format!("say something {j}"))?;
            let v = phone.call(json!({"cmd": "wait_event", "task": format!("m-{id}"), "contains": format!("marker{j}"), "timeout_ms": 20_000}))?;
            if v["ok"] != true {
                bail!("the phone never saw marker{j}");
            }
            phone.call(
                json!({"cmd": "wait_task", "task": format!("m-{id}"), "timeout_ms": 20_000}),
            )?;
            Ok(v["observed_at_us"].as_u64().unwrap_or(0))
        })?;
        let sent = model
            .requests()
            .get(steps + 1 + j)
            .and_then(|q| q.first_text_at_us)
            .context("the model server never streamed the text")?;
        shown.push(observed.saturating_sub(sent));
    }
    shown.sort_unstable();
    r.put(
        "A1",
        "text_to_phone_p50_us",
        pct(&shown, 0.5),
        "model's first streamed text → a phone's document shows it",
    );
    r.put(
        "A1",
        "text_to_phone_p99_us",
        pct(&shown, 0.99),
        "model's first streamed text → a phone's document shows it",
    );
    drop(serve);
    Ok(())
}

/// A process's resident set (`VmRSS`) or peak (`VmHWM`) from `/proc/PID/status`, in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// S1, sustained load: `phones` phones paired with a real `deskhand serve` each write `per`
/// requests (one durable change each) all at once; the desktop makes a task of every one and runs
/// it (`list ~`, allowed by default). Checks that every phone ends with every request and every
/// task finished (`done`), none lost and none twice, and reports throughput and the desktop's
/// memory: peak, at the end of the burst, and after it idled.
async fn s1(r: &mut Report, quick: bool) -> Result<()> {
    use std::collections::HashSet;
    use std::sync::Arc;
    let (phones_n, per, idle) = if quick {
        (4, 25, Duration::from_secs(2))
    } else {
        (16, 1000, Duration::from_secs(10))
    };
    let total = phones_n * per;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("desk");
    let listen = deskhand_tests::free_udp_addr().to_string();
    let serve = Serve::spawn(&[], None, &data, &["--listen", &listen], &[])?;
    std::fs::write(data.with_extension("home").join("a.txt"), "a file to list")?;
    let pid = serve.pid();
    let mut phones = Vec::new();
    for i in 0..phones_n {
        let payload = if i == 0 {
            serve.payload.clone()
        } else {
            let data_arg = data.display().to_string();
            let out = deskhand_tests::deskhand(&["pair", "--data", &data_arg, "--ttl", "300"])?;
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix("pairing payload: "))
                .map(str::to_owned)
                .with_context(|| format!("`deskhand pair` printed no payload: {}", out.stderr))?
        };
        let node = Node::open(NodeConfig::new(
            dir.path().join(format!("p{i}")),
            NodeRole::Phone,
        ))
        .await?;
        let payload = deskhand_core::PairingPayload::parse(&payload)?;
        node.pair(&payload, &format!("p{i}"), "terminal").await?;
        wait_for(&node, Duration::from_secs(30), |d| {
            Workspace::check_version(d).is_ok()
        })
        .await?;
        phones.push(Arc::new(node));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(proc_kib(pid, "VmRSS:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    };
    let t0 = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for p in &phones {
        let p = p.clone();
        writers.spawn(async move {
            let mut ids = Vec::with_capacity(per);
            for i in 0..per {
                let m = Message {
                    text: "list ~".into(),
                    ..message(&p, i)
                };
                let key = p.conversation_doc_at(m.created_at).await?;
                p.write_doc(&key, |tx| Workspace::append_message(tx, &m))
                    .await?;
                ids.push(m.id.to_string());
            }
            anyhow::Ok(ids)
        });
    }
    let mut wanted = HashSet::new();
    while let Some(ids) = writers.join_next().await {
        wanted.extend(ids??);
    }
    let written = t0.elapsed();
    if wanted.len() != total {
        bail!(
            "{} distinct requests written, expected {total}",
            wanted.len()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(if quick { 120 } else { 1800 });
    let (mut converged, mut finished) = (vec![None; phones_n], vec![None; phones_n]);
    let mut outcome = (0, 0);
    while finished.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            bail!(
                "S1 did not converge: {} of {phones_n} phones hold every request, {} see every task finished",
                converged.iter().flatten().count(),
                finished.iter().flatten().count()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, p) in phones.iter().enumerate() {
            let held: usize = each_week(p, Workspace::message_count).into_iter().sum();
            if converged[i].is_none() && held >= total {
                let have = (|| -> Result<usize> {
                    let mut msgs = Vec::new();
                    for m in each_week(p, |d| Workspace::messages_from(d, 0)) {
                        msgs.extend(m?);
                    }
                    let mine: Vec<_> = msgs
                        .iter()
                        .filter(|m| m.role == Role::User)
                        .map(|m| m.id.to_string())
                        .collect();
                    let distinct: HashSet<_> = mine.iter().collect();
                    if distinct.len() != mine.len() {
                        bail!("a request appears twice in a phone's conversation");
                    }
                    Ok(mine.iter().filter(|id| wanted.contains(*id)).count())
                })()?;
                if have == total {
                    converged[i] = Some(t0.elapsed());
                }
            }
            if converged[i].is_some() && finished[i].is_none() {
                let statuses: Vec<_> = each_week(p, Workspace::task_statuses)
                    .into_iter()
                    .flatten()
                    .collect();
                let ours = statuses
                    .iter()
                    .filter(|(id, _)| {
                        id.as_str()
                            .strip_prefix("m-")
                            .is_some_and(|m| wanted.contains(m))
                    })
                    .collect::<Vec<_>>();
                if ours.len() > total {
                    bail!("{} tasks for {total} requests", ours.len());
                }
                if ours.len() == total && ours.iter().all(|(_, s)| s.is_some_and(|s| s.is_final()))
                {
                    let count =
                        |want: TaskStatus| ours.iter().filter(|(_, s)| *s == Some(want)).count();
                    let (done, failed) = (count(TaskStatus::Done), count(TaskStatus::Failed));
                    if done + failed != total || done == 0 {
                        bail!(
                            "of {total} tasks {done} done and {failed} failed (refused: too many from one phone); the rest ended otherwise"
                        );
                    }
                    outcome = (done, failed);
                    finished[i] = Some(t0.elapsed());
                }
            }
        }
    }
    let last = |v: &[Option<Duration>]| {
        v.iter()
            .flatten()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let (conv_ms, done_ms) = (last(&converged), last(&finished));
    let rss_end = proc_kib(pid, "VmRSS:").unwrap_or(0);
    tokio::time::sleep(idle).await;
    let rss_idle = proc_kib(pid, "VmRSS:").unwrap_or(0);
    let peak = proc_kib(pid, "VmHWM:").unwrap_or(0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.join().unwrap_or(0);
    let what = format!("{phones_n} phones × {per} requests, one durable change each, at once");
    r.put(
        "S1",
        "all_written_ms",
        written.as_secs_f64() * 1000.0,
        &what,
    );
    r.put(
        "S1",
        "every_phone_has_every_request_ms",
        conv_ms,
        "from the first write",
    );
    r.put(
        "S1",
        "requests_per_s",
        total as f64 / (conv_ms / 1000.0).max(0.001),
        "relayed to every phone",
    );
    r.put(
        "S1",
        "every_task_done_on_every_phone_ms",
        done_ms,
        &format!(
            "a task per request: {} ran (`list ~`), {} refused (the cap on tasks waiting per phone)",
            outcome.0, outcome.1
        ),
    );
    r.put(
        "S1",
        "tasks_per_s",
        total as f64 / (done_ms / 1000.0).max(0.001),
        "tasks finished (run or refused) per second",
    );
    r.put(
        "S1",
        "desktop_peak_rss_mb",
        peak.max(sampled) as f64 / 1024.0,
        "VmHWM",
    );
    r.put(
        "S1",
        "desktop_rss_end_mb",
        rss_end as f64 / 1024.0,
        "when every phone saw every task done",
    );
    r.put(
        "S1",
        "desktop_rss_after_idle_mb",
        rss_idle as f64 / 1024.0,
        &format!("{} s later, idle", idle.as_secs()),
    );
    for p in phones {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.shutdown().await;
        }
    }
    drop(serve);
    Ok(())
}

fn pump(
    x: &mut Automerge,
    sx: &mut sync::State,
    y: &mut Automerge,
    sy: &mut sync::State,
) -> Result<()> {
    loop {
        let m1 = x.generate_sync_message(sx);
        let m2 = y.generate_sync_message(sy);
        if m1.is_none() && m2.is_none() {
            return Ok(());
        }
        if let Some(m) = m1 {
            y.receive_sync_message(sy, sync::Message::decode(&m.encode())?)?;
        }
        if let Some(m) = m2 {
            x.receive_sync_message(sx, sync::Message::decode(&m.encode())?)?;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    if !node_bin().exists() {
        bail!(
            "{} is missing: build with `cargo build --release -p deskhand-tests`",
            node_bin().display()
        );
    }
    let mut r = Report { rows: Vec::new() };
    let all = which == "all";
    if all || which == "floor" || which == "w1" {
        floor(&mut r, quick).await?;
    }
    if all || which == "w1" {
        w1(&mut r, quick).await?;
    }
    if all || which == "w2" || which == "w5" {
        w2(&mut r, quick).await?;
    }
    if all || which == "w3" {
        w3(&mut r, quick).await?;
    }
    if all || which == "w4" {
        w4(&mut r, quick).await?;
    }
    if all || which == "a1" {
        a1(&mut r, quick).await?;
    }
    if all || which == "s1" {
        s1(&mut r, quick).await?;
    }
    if all || which == "w6" {
        println!(
            "{}",
            json!({"workload": "W6", "metric": "skipped", "value": null, "why": "measured by `bash scripts/binding-tests w6` (two LTO builds), not here"})
        );
    }
    println!("\n{:<6} {:<32} {:>12}  note", "id", "metric", "value");
    for (w, m, v, note) in &r.rows {
        println!("{w:<6} {m:<32} {v:>12.1}  {note}");
    }
    Ok(())
}
