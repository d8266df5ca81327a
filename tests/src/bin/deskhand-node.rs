//! A desktop or phone node driven over stdin/stdout with JSON lines, for multi-process tests
//! and the benchmark. It uses the very same `deskhand-sync` library as the product.
//!
//! Prints `{"event":"ready","id":…,"addrs":[…]}` once open, then answers each command line with
//! one JSON line. See `deskhand_tests::NodeProc` for the commands.
//!
//! `--role app` is a phone driven through the phone API the mobile apps use
//! (`deskhand_sync::Phone`): commands `pair`, `send`, `task`, `sync`, `snapshot`, `latest`, `load_older`,
//! `push_subscribe`, `push_clear`, `quit`;
//! `--mdns on` turns its local-network discovery on.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deskhand_core::schema::{Message, Role, Task, TaskStatus, Workspace};
use deskhand_core::{DeviceId, MessageId};
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, PeerRecord};
use serde_json::{Value, json};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DESKHAND_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(arg(&args, "--data").context("--data DIR is required")?);
    if arg(&args, "--role").as_deref() == Some("app") {
        return app_main(&data, arg(&args, "--mdns").as_deref() == Some("on")).await;
    }
    let role = match arg(&args, "--role").as_deref() {
        Some("desktop") => NodeRole::Desktop {
            name: arg(&args, "--name").unwrap_or_else(|| "desk".into()),
        },
        Some("phone") => NodeRole::Phone,
        _ => bail!("--role desktop|phone is required"),
    };
    let mut net = NetConfig::default();
    if let Some(l) = arg(&args, "--listen") {
        net.listen = l.parse().context("--listen")?;
    }
    let node = match Node::open(NodeConfig::new(&data, role).with_net(net)).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let out = |v: Value| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    };
    out(json!({"event": "ready", "id": node.id().to_string(), "addrs": node.direct_addrs()}));

    let mut rx = stdin_lines();
    while let Some(line) = rx.recv().await {
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(cmd) => {
                if cmd["cmd"] == "quit" {
                    node.shutdown().await;
                    out(json!({"ok": true}));
                    return Ok(());
                }
                match handle(&node, &cmd).await {
                    Ok(v) => v,
                    Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                }
            }
            Err(e) => json!({"ok": false, "error": format!("bad command: {e}")}),
        };
        out(reply);
    }
    node.shutdown().await;
    Ok(())
}

fn id_of(cmd: &Value) -> Result<DeviceId> {
    Ok(cmd["id"].as_str().context("id")?.parse()?)
}

async fn handle(node: &Node, cmd: &Value) -> Result<Value> {
    match cmd["cmd"].as_str().unwrap_or("") {
        "allow" | "home" => {
            let addrs: Vec<SocketAddr> =
                serde_json::from_value(cmd["addrs"].clone()).unwrap_or_default();
            let platform = if cmd["cmd"] == "home" {
                "desktop"
            } else {
                "terminal"
            };
            node.put_peer(
                id_of(cmd)?,
                PeerRecord {
                    name: cmd["name"].as_str().unwrap_or("peer").to_owned(),
                    platform: platform.to_owned(),
                    paired_at: now_unix_ms(),
                    revoked_at: None,
                    last_seen: None,
                    addrs,
                    clock_offset_ms: None,
                    relay: None,
                },
            )
            .await?;
            Ok(json!({"ok": true}))
        }
        "pair" => {
            let payload =
                deskhand_core::PairingPayload::parse(cmd["payload"].as_str().context("payload")?)?;
            node.pair(
                &payload,
                cmd["name"].as_str().unwrap_or("harness"),
                "terminal",
            )
            .await?;
            Ok(json!({"ok": true}))
        }
        "pairing_code" => {
            let code = node.create_pairing(Duration::from_secs(300))?;
            Ok(json!({"ok": true, "uri": code.to_uri()}))
        }
        "revoke" => Ok(json!({"ok": node.revoke_peer(&id_of(cmd)?).await?})),
        "send" => {
            let text = cmd["text"].as_str().context("text")?.to_owned();
            let id = MessageId::from_random(deskhand_sync::node::random_id_bytes());
            let role = if cmd["role"] == "agent" {
                Role::Agent
            } else {
                Role::User
            };
            let msg = Message {
                id: id.clone(),
                author: node.id().to_string(),
                role,
                text,
                created_at: now_unix_ms(),
                task_id: None,
            };
            let key = node.conversation_doc_at(msg.created_at).await?;
            node.write_doc(&key, |tx| Workspace::append_message(tx, &msg))
                .await?;
            Ok(json!({"ok": true, "id": id.to_string()}))
        }
        "state" => Ok(state(node)),
        "peers" => Ok(json!({"ok": true, "peers": node.peers()})),
        "conversation" => {
            // Setup for W4: `count` messages written as the product writes them, one change
            // each: a phone's request, the task the desktop made of it (finished), the desktop's
            // reply. Queued to the store (group commit) and flushed at the end.
            let count = cmd["count"].as_u64().context("count")? as usize;
            let phone = DeviceId::from_bytes([7; 32]);
            let text = "x".repeat(cmd["text_len"].as_u64().unwrap_or(100) as usize);
            // Dated evenly over the last `span_weeks` weeks (0: all now), as a workspace used
            // that long would be.
            let span_ms = cmd["span_weeks"].as_u64().unwrap_or(0) as i64 * 7 * 86_400_000;
            let start = now_unix_ms() - span_ms;
            let pairs = (count / 2).max(1) as i64;
            for i in 0..count / 2 {
                let now = if span_ms == 0 {
                    now_unix_ms()
                } else {
                    start + span_ms * i as i64 / pairs
                };
                let ask = Message {
                    id: MessageId::from_random(deskhand_sync::node::random_id_bytes()),
                    author: phone.to_string(),
                    role: Role::User,
                    text: text.clone(),
                    created_at: now,
                    task_id: None,
                };
                // Into the document of the week it is dated in, as the product writes it.
                let key = node.conversation_doc_at(now).await?;
                node.write_doc_queued(&key, |tx| Workspace::append_message(tx, &ask))?;
                let mut task = Task::queued(
                    format!("m-{}", ask.id.as_str()).as_str().into(),
                    text.clone(),
                    &phone,
                    now,
                );
                task.status = TaskStatus::Done;
                task.claimed_by = Some(node.id().to_string());
                task.started_at = Some(now);
                task.finished_at = Some(now);
                node.write_doc_queued(&key, |tx| Workspace::add_task(tx, &task))?;
                let reply = Message {
                    id: MessageId::from_random(deskhand_sync::node::random_id_bytes()),
                    author: node.id().to_string(),
                    role: Role::Agent,
                    text: text.clone(),
                    created_at: now,
                    task_id: Some(task.id.clone()),
                };
                node.write_doc_queued(&key, |tx| Workspace::append_message(tx, &reply))?;
            }
            node.flush().await?;
            Ok(json!({"ok": true}))
        }
        "bulk" => {
            // Setup for benchmarks: `count` messages, `batch` per change.
            let count = cmd["count"].as_u64().context("count")? as usize;
            let batch = cmd["batch"].as_u64().unwrap_or(1000).max(1) as usize;
            let text = "x".repeat(cmd["text_len"].as_u64().unwrap_or(100) as usize);
            let mut done = 0;
            while done < count {
                let n = batch.min(count - done);
                let msgs: Vec<Message> = (0..n)
                    .map(|_| Message {
                        id: MessageId::from_random(deskhand_sync::node::random_id_bytes()),
                        author: node.id().to_string(),
                        role: Role::Agent,
                        text: text.clone(),
                        created_at: now_unix_ms(),
                        task_id: None,
                    })
                    .collect();
                let key = node.conversation_doc_at(now_unix_ms()).await?;
                node.write_doc(&key, |tx| {
                    msgs.iter()
                        .try_for_each(|m| Workspace::append_message(tx, m))
                })
                .await?;
                done += n;
            }
            Ok(json!({"ok": true}))
        }
        "year" => {
            // Setup for history tests: a year of conversation, `per_week` messages in each of
            // the 52 weeks' documents (texts "YYYY-Www#i", at that week's Monday 01:00 UTC plus
            // i ms), and one task left open in week `open_task_week` (id "t-open").
            let year = cmd["year"].as_i64().context("year")? as i32;
            let per_week = cmd["per_week"].as_u64().context("per_week")? as usize;
            let open_in = cmd["open_task_week"].as_u64().unwrap_or(0);
            for w in 1..=52u8 {
                let week = deskhand_core::conversation::ConversationWeek::new(year, w)?;
                let key = node.open_week(week).await?;
                let at = week.start_unix_ms() + 3_600_000;
                for i in 0..per_week {
                    let m = Message {
                        id: MessageId::from_random(deskhand_sync::node::random_id_bytes()),
                        author: node.id().to_string(),
                        role: Role::User,
                        text: format!("{}#{i}", week.label()),
                        created_at: at + i as i64,
                        task_id: None,
                    };
                    node.write_doc_queued(&key, |tx| Workspace::append_message(tx, &m))?;
                }
                if u64::from(w) == open_in {
                    let t = Task::queued("t-open".into(), "still running", &node.id(), at);
                    node.write_doc_queued(&key, |tx| Workspace::add_task(tx, &t))?;
                }
            }
            node.flush().await?;
            Ok(json!({"ok": true, "weeks": node.catalog().len()}))
        }
        "events" => {
            // The executor's pace: one change per progress event, queued to the store (group commit).
            let task = deskhand_core::TaskId::from(cmd["task"].as_str().context("task")?);
            let count = cmd["count"].as_u64().context("count")? as usize;
            let started = std::time::Instant::now();
            let t = deskhand_core::schema::Task {
                status: deskhand_core::TaskStatus::Running,
                claimed_by: Some(node.id().to_string()),
                ..deskhand_core::schema::Task::queued(
                    task.clone(),
                    "benchmark",
                    &node.id(),
                    now_unix_ms(),
                )
            };
            let key = match node.task_doc(&task) {
                Some(key) => key,
                None => {
                    let key = node.conversation_doc_at(t.created_at).await?;
                    node.write_doc(&key, |tx| Workspace::add_task(tx, &t))
                        .await?;
                    key
                }
            };
            for i in 0..count {
                let ev = deskhand_core::schema::TaskEvent {
                    at: now_unix_ms(),
                    kind: "progress".into(),
                    text: format!("step {i}"),
                    blob: None,
                };
                node.write_doc_queued(&key, |tx| Workspace::append_task_event(tx, &task, &ev))?;
            }
            node.flush().await?;
            Ok(json!({"ok": true, "elapsed_us": started.elapsed().as_micros() as u64}))
        }
        "wait_messages" => {
            let want = cmd["count"].as_u64().context("count")? as usize;
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let mut sub = node.subscribe();
            let started = std::time::Instant::now();
            let reached = tokio::time::timeout(timeout, async {
                loop {
                    if message_count(node) >= want {
                        return;
                    }
                    if sub.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await
            .is_ok();
            let observed_at_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            if cmd["brief"] == true {
                return Ok(
                    json!({"ok": reached, "waited_us": started.elapsed().as_micros() as u64, "observed_at_us": observed_at_us}),
                );
            }
            Ok(
                json!({"ok": reached, "waited_us": started.elapsed().as_micros() as u64, "observed_at_us": observed_at_us, "state": state(node)}),
            )
        }
        "wait_message" => {
            // Until a message with this id is in a loaded conversation document.
            let id = cmd["id"].as_str().context("id")?.to_owned();
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let mut sub = node.subscribe();
            let started = std::time::Instant::now();
            let reached = tokio::time::timeout(timeout, async {
                while !each_doc(node, |d| has_message(d, &id)).contains(&true) {
                    if sub.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await
            .is_ok();
            Ok(json!({"ok": reached, "waited_us": started.elapsed().as_micros() as u64}))
        }
        "wait_doc" => {
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let mut sub = node.subscribe();
            let ready = tokio::time::timeout(timeout, async {
                while node.read(|d| Workspace::check_version(d).is_err()) {
                    if sub.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await
            .is_ok();
            Ok(json!({"ok": ready}))
        }
        "tasks" => {
            // Every task of the replica (those that read), as the schema has them.
            let tasks: Vec<Task> = each_doc(node, |d| {
                Workspace::task_statuses(d)
                    .into_iter()
                    .filter_map(|(id, _)| Workspace::task(d, &id).ok().flatten())
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect();
            Ok(json!({"ok": true, "tasks": tasks}))
        }
        "acked" => {
            // Ids of this phone's messages the desktop has acknowledged: those in the history of
            // a change the desktop wrote (it sends its own changes only once they are stored, and
            // stores chunks in document order, so it stored them first).
            let (desktop, _) = node.home().context("no home desktop")?;
            let me = node.id().to_string();
            let ids: Vec<String> = each_doc(node, |d| {
                let theirs: Vec<_> = d
                    .get_changes(&[])
                    .iter()
                    .filter(|c| desktop.owns_actor(c.actor_id()))
                    .map(|c| c.hash())
                    .collect();
                let seen = d.fork_at(&theirs).ok();
                seen.map(|f| {
                    Workspace::messages_from(&f, 0)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| m.author == me)
                        .map(|m| m.id.as_str().to_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
            })
            .into_iter()
            .flatten()
            .collect();
            Ok(json!({"ok": true, "ids": ids}))
        }
        "sync_now" => {
            node.sync_now();
            Ok(json!({"ok": true}))
        }
        "audit" => Ok(json!({"ok": true, "events": node.audit_log().await?})),
        "task" => {
            let id = deskhand_core::TaskId::from_random(deskhand_sync::node::random_id_bytes());
            let t = deskhand_core::schema::Task::queued(
                id.clone(),
                cmd["prompt"].as_str().context("prompt")?,
                &node.id(),
                now_unix_ms(),
            );
            let key = node.conversation_doc_at(t.created_at).await?;
            node.write_doc(&key, |tx| Workspace::add_task(tx, &t))
                .await?;
            Ok(json!({"ok": true, "id": id.to_string()}))
        }
        "cancel" => {
            let id = deskhand_core::TaskId::from(cmd["task"].as_str().context("task")?);
            let me = node.id();
            let key = node.task_doc(&id).context("no such task")?;
            node.write_doc(&key, |tx| Workspace::request_cancel(tx, &id, &me))
                .await?;
            Ok(json!({"ok": true}))
        }
        "wait_task" => {
            // Until the task's status is one of `status` (default: any final one).
            let id = deskhand_core::TaskId::from(cmd["task"].as_str().context("task")?);
            let want: Vec<String> = cmd["status"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let done = |t: &deskhand_core::schema::Task| {
                if want.is_empty() {
                    t.status.is_final()
                } else {
                    want.iter().any(|w| w == t.status.as_str())
                }
            };
            let mut sub = node.subscribe();
            let found = tokio::time::timeout(timeout, async {
                loop {
                    if let Some(t) = find_task(node, &id)
                        && done(&t)
                    {
                        return t;
                    }
                    if sub.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            })
            .await;
            match found {
                Ok(t) => Ok(json!({"ok": true, "task": t})),
                Err(_) => {
                    let t = find_task(node, &id);
                    Ok(json!({"ok": false, "task": t}))
                }
            }
        }
        "wait_event" => {
            // Until the task has an event whose text holds `contains`; stamps when it was seen.
            let id = deskhand_core::TaskId::from(cmd["task"].as_str().context("task")?);
            let needle = cmd["contains"].as_str().context("contains")?.to_owned();
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let has = || {
                find_task(node, &id)
                    .is_some_and(|t| t.events.iter().any(|e| e.text.contains(&needle)))
            };
            let mut sub = node.subscribe();
            let seen = tokio::time::timeout(timeout, async {
                while !has() {
                    if sub.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            })
            .await
            .is_ok();
            let observed_at_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            Ok(json!({"ok": seen, "observed_at_us": observed_at_us}))
        }
        "approvals" => {
            let all = approvals(node)?;
            Ok(json!({"ok": true, "approvals": all}))
        }
        "wait_approval" => {
            // Until an unresolved approval request for `task` exists (other than `except`).
            let task = cmd["task"].as_str().context("task")?.to_owned();
            let except = cmd["except"].as_str().map(str::to_owned);
            let timeout = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(20_000));
            let mut sub = node.subscribe();
            let found = tokio::time::timeout(timeout, async {
                loop {
                    let hit = approvals(node).ok().and_then(|m| {
                        m.into_values().find(|a| {
                            a.task_id.as_str() == task
                                && a.resolution.is_none()
                                && except.as_deref() != Some(a.id.as_str())
                        })
                    });
                    if let Some(a) = hit {
                        return a;
                    }
                    if sub.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            })
            .await;
            match found {
                Ok(a) => Ok(json!({"ok": true, "approval": a})),
                Err(_) => Ok(json!({"ok": false})),
            }
        }
        "decide" => {
            // Signs a decision, or forges one for the tests: `forge` = "bad_signature" (flipped
            // verdict after signing), "replay" (the signature of `from`, another approval),
            // "other_desktop" (signed for another desktop id).
            use deskhand_core::approval::Verdict;
            let id =
                deskhand_core::ids::ApprovalId::from(cmd["approval"].as_str().context("approval")?);
            let verdict: Verdict = cmd["verdict"]
                .as_str()
                .context("verdict")?
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            let key = node.approval_doc(&id).context("no such approval")?;
            let approval = node
                .read_doc(&key, |d| Workspace::approval(d, &id))
                .context("no such approval")??
                .context("no such approval")?;
            let (desktop, _) = node.home().context("not paired")?;
            let mut decision = approval.sign(node.key(), &desktop, verdict, now_unix_ms());
            match cmd["forge"].as_str() {
                None => {}
                Some("bad_signature") => {
                    let flipped = if verdict == Verdict::Approve {
                        Verdict::Deny
                    } else {
                        Verdict::Approve
                    };
                    decision = approval.sign(node.key(), &desktop, flipped, now_unix_ms());
                    decision.verdict = verdict;
                }
                Some("replay") => {
                    let from =
                        deskhand_core::ids::ApprovalId::from(cmd["from"].as_str().context("from")?);
                    let old = approvals(node)?
                        .remove(from.as_str())
                        .context("no approval to replay from")?;
                    decision = old
                        .decisions
                        .get(&node.id().to_string())
                        .cloned()
                        .context("no decision of ours to replay")?;
                }
                Some("other_desktop") => {
                    decision = approval.sign(node.key(), &node.id(), verdict, now_unix_ms());
                }
                Some(other) => bail!("unknown forgery {other:?}"),
            }
            let me = node.id();
            node.write_doc(&key, |tx| Workspace::put_decision(tx, &id, &me, &decision))
                .await?;
            Ok(json!({"ok": true}))
        }
        "fetch" => {
            let hash = cmd["hash"].as_str().context("hash")?;
            match node.fetch_blob(hash).await {
                Ok(bytes) => {
                    let out = cmd["out"].as_str().map(PathBuf::from);
                    if let Some(out) = &out {
                        std::fs::write(out, &bytes)?;
                    }
                    Ok(json!({"ok": true, "size": bytes.len(),
                        "verified": deskhand_sync::blobs::hash_hex(&bytes) == hash}))
                }
                Err(e) => Ok(json!({"ok": false, "error": e.to_string()})),
            }
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// Runs `f` on each conversation document `node` has loaded, oldest first.
fn each_doc<R>(node: &Node, mut f: impl FnMut(&automerge::Automerge) -> R) -> Vec<R> {
    node.conversation_docs()
        .iter()
        .filter_map(|k| node.read_doc(k, &mut f))
        .collect()
}

/// Whether `doc` holds a message with id `id` (read newest first, ids only).
fn has_message(doc: &automerge::Automerge, id: &str) -> bool {
    use automerge::ReadDoc;
    let Ok(Some((_, list))) = doc.get(automerge::ROOT, "messages") else {
        return false;
    };
    (0..doc.length(&list)).rev().any(|i| {
        doc.get(&list, i)
            .ok()
            .flatten()
            .and_then(|(_, m)| doc.get(&m, "id").ok().flatten())
            .is_some_and(|(v, _)| v.as_str() == Some(id))
    })
}

/// Messages in every conversation document.
fn message_count(node: &Node) -> usize {
    each_doc(node, Workspace::message_count).into_iter().sum()
}

/// Task `id`, from whichever conversation document holds it.
fn find_task(node: &Node, id: &deskhand_core::TaskId) -> Option<Task> {
    let key = node.task_doc(id)?;
    node.read_doc(&key, |d| Workspace::task(d, id).ok().flatten())
        .flatten()
}

/// Every approval request of every conversation document, by id.
fn approvals(node: &Node) -> Result<std::collections::BTreeMap<String, deskhand_core::Approval>> {
    let mut all = std::collections::BTreeMap::new();
    for m in each_doc(node, Workspace::approvals) {
        all.extend(m?);
    }
    Ok(all)
}

fn state(node: &Node) -> Value {
    // Heads: the workspace's document and every conversation document, so that two replicas
    // that agree on everything show the same list.
    let mut heads: Vec<String> =
        node.read(|d| d.get_heads().iter().map(|h| h.to_string()).collect());
    let mut messages = Vec::new();
    for (h, msgs) in each_doc(node, |d| {
        let h: Vec<String> = d.get_heads().iter().map(|h| h.to_string()).collect();
        (h, Workspace::messages_from(d, 0).unwrap_or_default())
    }) {
        heads.extend(h);
        messages.extend(msgs);
    }
    heads.sort();
    heads.dedup();
    json!({
        "ok": true,
        "doc_id": node.doc_id().map(|d| d.to_string()),
        "heads": heads,
        "messages": messages.iter().map(|m| json!({"id": m.id.as_str(), "text": m.text, "author": m.author})).collect::<Vec<_>>(),
        "peers": node.peers(),
    })
}

/// Writes one JSON line to stdout.
fn out(v: Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

/// `--role app`: a phone as the apps run it, through `deskhand_sync::Phone`, listening on all
/// interfaces (so it works inside a network namespace), relays off, local-network discovery
/// only with `--mdns on`.
async fn app_main(data: &std::path::Path, mdns: bool) -> Result<()> {
    use deskhand_sync::{FileKeyProvider, Phone, PhoneConfig, RelaySetting};
    let config = PhoneConfig::new(data, "app", "terminal")
        .with_net(
            NetConfig::default()
                .with_listen(SocketAddr::from(([0, 0, 0, 0], 0)))
                .with_relay(RelaySetting::Off)
                .with_mdns(mdns),
        )
        .with_key_provider(std::sync::Arc::new(FileKeyProvider::in_data_dir(data)));
    let phone = match Phone::open(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if phone.home().is_some() {
        phone.start();
    }
    out(json!({"event": "ready", "id": phone.id().to_string(), "addrs": []}));
    let mut rx = stdin_lines();
    while let Some(line) = rx.recv().await {
        let cmd: Value = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                out(json!({"ok": false, "error": format!("bad command: {e}")}));
                continue;
            }
        };
        let reply: Result<Value> = async {
            match cmd["cmd"].as_str().unwrap_or("") {
                "quit" => {
                    phone.shutdown().await;
                    out(json!({"ok": true}));
                    std::process::exit(0);
                }
                "pair" => {
                    phone
                        .pair(cmd["payload"].as_str().context("payload")?)
                        .await?;
                    phone.start();
                    Ok(json!({"ok": true}))
                }
                "send" => {
                    let id = phone
                        .send_message(cmd["text"].as_str().context("text")?)
                        .await?;
                    Ok(json!({"ok": true, "id": id.to_string()}))
                }
                "task" => {
                    let id = phone
                        .create_task(cmd["prompt"].as_str().context("prompt")?)
                        .await?;
                    Ok(json!({"ok": true, "id": id.to_string()}))
                }
                "sync" => {
                    let t = Duration::from_millis(cmd["timeout_ms"].as_u64().unwrap_or(10_000));
                    phone.sync(t).await?;
                    Ok(json!({"ok": true}))
                }
                "snapshot" => Ok(json!({"ok": true, "snapshot": phone.snapshot()?})),
                // What a screen opening on the conversation reads: the latest `n` messages.
                "latest" => {
                    let n = cmd["n"].as_u64().unwrap_or(50) as usize;
                    let s = phone.snapshot()?;
                    let latest: Vec<&str> = s
                        .messages
                        .iter()
                        .rev()
                        .take(n)
                        .map(|m| m.message.id.as_str())
                        .collect();
                    Ok(json!({"ok": true, "total": s.messages.len(), "latest": latest.len()}))
                }
                // "Load older messages": the next `weeks` weeks the desktop announced.
                "load_older" => {
                    let weeks = cmd["weeks"].as_u64().unwrap_or(1) as u32;
                    let loaded = phone.load_older(weeks).await?;
                    Ok(json!({"ok": true, "loaded": loaded}))
                }
                "push_subscribe" => {
                    phone
                        .set_push_subscription(
                            cmd["endpoint"].as_str().context("endpoint")?,
                            cmd["p256dh"].as_str().context("p256dh")?,
                            cmd["auth"].as_str().context("auth")?,
                        )
                        .await?;
                    Ok(json!({"ok": true}))
                }
                "push_clear" => {
                    phone.clear_push_subscription().await?;
                    Ok(json!({"ok": true}))
                }
                other => bail!("unknown command {other:?}"),
            }
        }
        .await;
        out(reply.unwrap_or_else(|e| json!({"ok": false, "error": format!("{e:#}")})));
    }
    phone.shutdown().await;
    Ok(())
}

/// The harness's commands: stdin's lines, read on a thread of their own until it closes.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
