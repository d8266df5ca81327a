//! Pairing by QR, device management, and trust enforcement, driven through the `deskhand` CLI
//! as a user would, plus a crafted peer that speaks the protocol by hand.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use automerge::Automerge;
use automerge::ReadDoc;
use automerge::transaction::Transactable;
use deskhand_core::authorship::SignatureBook;
use deskhand_core::schema::{Message, Role, SchemaError, Task, Workspace};
use deskhand_core::session::SessionOutput;
use deskhand_core::trust::{AcceptAll, Standing};
use deskhand_core::{
    DeviceId, DeviceKey, Frame, FrameDecoder, PairingPayload, SYNC_ALPN, SyncSession,
};
use deskhand_sync::NetConfig;
use deskhand_tests::{NodeProc, Run, Serve, deskhand, free_udp_addr};
use serde_json::{Value, json};

pub(crate) fn ok(r: Run) -> Result<Run> {
    if r.code != 0 {
        bail!("deskhand failed ({}):\n{}\n{}", r.code, r.stdout, r.stderr);
    }
    Ok(r)
}

pub(crate) fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub(crate) fn show(phone: &std::path::Path) -> Result<Value> {
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(phone),
        "show",
        "--json",
    ])?)?;
    Ok(serde_json::from_str(&r.stdout)?)
}

pub(crate) fn texts(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                // What users wrote: the desktop's agent now answers each message.
                .filter(|m| m["role"] == "user")
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn devices(data: &std::path::Path) -> Result<Value> {
    let r = ok(deskhand(&["devices", "--data", path(data), "--json"])?)?;
    Ok(serde_json::from_str(&r.stdout)?)
}

pub(crate) fn fresh_code(data: &std::path::Path, ttl: &str) -> Result<String> {
    let r = ok(deskhand(&["pair", "--data", path(data), "--ttl", ttl])?)?;
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix("pairing payload: "))
        .map(str::to_owned)
        .context("no payload printed")
}

#[test]
fn pairing_by_payload_and_png_refusals_revocation_and_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_dir = dir.path().join("desk");
    let listen = free_udp_addr();
    let serve = Serve::start(&desk_dir, listen)?;
    let (p1, p2, p3) = (
        dir.path().join("p1"),
        dir.path().join("p2"),
        dir.path().join("p3"),
    );

    // Phone 1 pairs with the payload printed at start; phone 2 by decoding a fresh PNG.
    let t = Instant::now();
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "pair",
        &serve.payload,
        "--name",
        "one",
    ])?)?;
    eprintln!(
        "[pairing] phone 1 paired in {:?}: {}",
        t.elapsed(),
        r.stdout.trim()
    );
    assert!(r.stdout.contains("Workspace received"));
    let png = dir.path().join("code2.png");
    ok(deskhand(&[
        "pair",
        "--data",
        path(&desk_dir),
        "--png",
        path(&png),
    ])?)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p2),
        "pair",
        "--qr-png",
        path(&png),
        "--name",
        "two",
    ])?)?;
    assert!(
        r.stdout.contains("Paired with \"test-desktop\""),
        "{}",
        r.stdout
    );

    // A message from one reaches the other.
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "send",
        "hello from one",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    ok(deskhand(&["phone", "--data", path(&p2), "sync"])?)?;
    assert_eq!(texts(&show(&p2)?), vec!["hello from one"]);

    // Refusals: each with a clear message and no state change.
    let before = devices(&desk_dir)?["devices"]
        .as_array()
        .map_or(0, |a| a.len());
    let reused = deskhand(&["phone", "--data", path(&p3), "pair", &serve.payload])?;
    eprintln!("[pairing] reused token: {}", reused.stderr.trim());
    assert_ne!(reused.code, 0);
    assert!(reused.stderr.contains("already used"), "{}", reused.stderr);

    let mut wrong = PairingPayload::parse(&fresh_code(&desk_dir, "5m")?)?;
    wrong.token = deskhand_core::PairingToken::from_bytes([0x5a; 16]);
    let r = deskhand(&["phone", "--data", path(&p3), "pair", &wrong.to_uri()])?;
    eprintln!("[pairing] wrong token: {}", r.stderr.trim());
    assert!(
        r.code != 0 && r.stderr.contains("not valid for this desktop"),
        "{}",
        r.stderr
    );

    let short = fresh_code(&desk_dir, "1s")?;
    std::thread::sleep(Duration::from_millis(2100));
    let r = deskhand(&["phone", "--data", path(&p3), "pair", &short])?;
    eprintln!("[pairing] expired token: {}", r.stderr.trim());
    // Only the desktop's clock decides: the phone tries, the desktop refuses.
    assert!(
        r.code != 0 && r.stderr.contains("expired") && r.stderr.contains("by the desktop's clock"),
        "{}",
        r.stderr
    );
    // The expiry printed in the code does not matter either: the desktop holds its own.
    let mut lying = PairingPayload::parse(&short)?;
    lying.expires_at += 3600;
    let r = deskhand(&["phone", "--data", path(&p3), "pair", &lying.to_uri()])?;
    eprintln!(
        "[pairing] expired token, printed expiry pushed out: {}",
        r.stderr.trim()
    );
    assert!(
        r.code != 0 && r.stderr.contains("by the desktop's clock"),
        "{}",
        r.stderr
    );

    let r = deskhand(&["phone", "--data", path(&p3), "sync"])?;
    eprintln!("[pairing] unpaired phone: {}", r.stderr.trim());
    assert!(
        r.code != 0 && r.stderr.contains("not paired"),
        "{}",
        r.stderr
    );
    assert!(
        show(&p3)?["desktop"].is_null(),
        "a refused phone must not be paired"
    );
    let after = devices(&desk_dir)?;
    assert_eq!(
        after["devices"].as_array().map_or(0, |a| a.len()),
        before,
        "a refusal changed the registry"
    );

    // Revocation closes a live connection at once and keeps the device out.
    let mut live = NodeProc::spawn(
        &deskhand_tests_bin(),
        &dir.path().join("live"),
        "phone",
        None,
    )?;
    live.ok(json!({"cmd": "pair", "payload": fresh_code(&desk_dir, "5m")?, "name": "live"}))?;
    live.wait_doc()?;
    let live_id = live.id.clone();
    let r = ok(deskhand(&[
        "devices",
        "--data",
        path(&desk_dir),
        "revoke",
        &live_id[..12],
    ])?)?;
    assert!(r.stdout.contains("revoked"));
    let t = Instant::now();
    let err = loop {
        let s = live.state()?;
        let e = s["peers"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if !e.is_empty() || t.elapsed() > Duration::from_secs(10) {
            break e;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "[pairing] revoked phone was cut off after {:?}: {err}",
        t.elapsed()
    );
    assert!(err.contains("revoked"), "{err}");
    live.quit()?;
    let r = deskhand(&["phone", "--data", path(&p2), "sync", "--timeout", "3"])?;
    assert_eq!(r.code, 0, "phone two is unaffected: {}", r.stderr);
    let list = devices(&desk_dir)?;
    let revoked = list["devices"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == live_id))
        .cloned()
        .unwrap_or_default();
    assert!(!revoked["revoked_at"].is_null());

    // Pairing survives a restart of the desktop.
    serve.kill9()?;
    let serve = Serve::start(&desk_dir, listen)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p2),
        "send",
        "after the restart",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    ok(deskhand(&["phone", "--data", path(&p1), "sync"])?)?;
    assert_eq!(
        texts(&show(&p1)?),
        vec!["hello from one", "after the restart"]
    );
    assert!(serve.output().contains("after the restart"));

    // Forget and pair again, without deleting anything by hand.
    ok(deskhand(&["phone", "--data", path(&p1), "forget"])?)?;
    assert!(show(&p1)?["desktop"].is_null());
    ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "pair",
        &fresh_code(&desk_dir, "5m")?,
    ])?)?;
    assert_eq!(
        texts(&show(&p1)?),
        vec!["hello from one", "after the restart"]
    );
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "send",
        "one is back",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    drop(serve);
    Ok(())
}

fn deskhand_tests_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_deskhand-node"))
}

enum Forge {
    AnotherActor(DeviceId),
    TaskStatus,
    /// Red team 1: a message, then a second change whose first operation counter is below its
    /// dependency's operations, re-putting `author` on that message with another device's id.
    StartOpBelowDependency(DeviceId),
    /// Red team 5: a compressed change chunk that inflates to 64 MiB, in a small frame.
    CompressionBomb,
    /// Red team 6: a message whose `text` is a number.
    TextIsANumber,
    /// Red team 7: a message of 40 KiB (over the 32 KiB limit).
    OversizedText,
}

/// A sync frame carrying exactly `chunks`, written by hand (as a crafted peer would).
fn raw_sync(heads: Vec<automerge::ChangeHash>, chunks: Vec<Vec<u8>>) -> Frame {
    let msg = automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: chunks.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    Frame::Sync(msg.encode())
}

/// A peer that pairs honestly, then speaks the sync protocol by hand with a document it
/// tampers with. Returns why the desktop closed the connection.
async fn crafted_peer(code: &str, forge: Forge) -> Result<String> {
    let key = DeviceKey::from_secret_bytes(deskhand_sync::node::random_bytes());
    let me = key.device_id();
    let ep = deskhand_sync::endpoint::bind(&key, &NetConfig::default(), vec![]).await?;
    let payload = PairingPayload::parse(code)?;
    let paired = deskhand_sync::pairing::pair_with(&ep, &payload, "crafted", "terminal").await?;
    let workspace = paired.doc_id.context("the desktop named its workspace")?;
    let addr = deskhand_sync::endpoint::peer_addr(&payload.desktop, &payload.addrs, None)?;
    let conn = ep.connect(addr, SYNC_ALPN).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut doc = Automerge::new().with_actor(me.actor_id());
    // It signs what it writes, as every device does: the desktop's content rules are what
    // these forgeries test (a change under another actor gets the crafted peer's own
    // signature, which does not verify for that actor's device).
    let mut book = SignatureBook::new();
    let sign_last = |book: &mut SignatureBook, doc: &Automerge| {
        if let Some(c) = doc.get_last_local_change() {
            book.sign_local(doc, &key, c.hash());
        }
    };
    let mut session = SyncSession::new(payload.desktop, None, None, 0);
    let mut out: Vec<SessionOutput> = session.start(&doc);
    let mut dec = FrameDecoder::new();
    let mut bye: Option<String> = None;

    // Exchange frames until `until(doc)` holds or the desktop closes the connection.
    macro_rules! pump {
        ($until:expr) => {{
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                for o in std::mem::take(&mut out) {
                    if let SessionOutput::Send(f) = o {
                        // The desktop may have closed already; its reason is read below.
                        let _ = send.write_all(&f.encode()).await;
                    }
                }
                if $until(&doc, &session) {
                    break None;
                }
                if Instant::now() > deadline {
                    bail!("crafted peer: no progress");
                }
                match tokio::time::timeout(Duration::from_millis(200), recv.read_chunk(65536)).await
                {
                    Err(_) => continue,
                    Ok(Ok(Some(bytes))) => {
                        dec.push(&bytes);
                        while let Some(frame) = dec.next_frame()? {
                            if let Frame::Goodbye { reason, .. } = &frame {
                                bye = Some(reason.clone());
                                continue;
                            }
                            for o in session
                                .on_frame(frame, 0, &doc, &book, 0)
                                .map_err(|e| anyhow::anyhow!("{e}"))?
                            {
                                match o {
                                    SessionOutput::Received(p) => out.extend(
                                        session
                                            .apply(
                                                p,
                                                &mut doc,
                                                &book,
                                                &AcceptAll,
                                                &|_| Standing::Paired,
                                                0,
                                            )
                                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                                    ),
                                    other => out.push(other),
                                }
                            }
                            // Nothing is stored here: lift the hold `apply` puts on the answer.
                            session.set_hold(false);
                            out.extend(session.on_local_change(&doc, &book, 0));
                        }
                    }
                    Ok(_) => break Some(()),
                }
            }
        }};
    }
    let _ =
        pump!(|d: &Automerge, s: &SyncSession| s.in_sync(d) && Workspace::check_version(d).is_ok());

    // The conversation is in this week's document, on a stream of its own (the root's stays
    // open: the connection lives with it).
    let week = deskhand_core::conversation::ConversationWeek::of_unix_ms(
        deskhand_sync::presence::now_unix_ms(),
    )?;
    let (week_send, week_recv) = conn.open_bi().await?;
    let _root_stream = (
        std::mem::replace(&mut send, week_send),
        std::mem::replace(&mut recv, week_recv),
    );
    doc = deskhand_core::conversation::conversation_genesis(&workspace, week)
        .with_actor(me.actor_id());
    session = SyncSession::new(
        payload.desktop,
        Some(deskhand_core::conversation::conversation_doc_id(
            &workspace, week,
        )),
        None,
        0,
    );
    out.extend(session.start(&doc));
    dec = FrameDecoder::new();
    let _ = pump!(|d: &Automerge, s: &SyncSession| s.in_sync(d));

    // An honest task of our own first: it must be accepted.
    let task_id = format!("crafted-{}", me.short());
    let task = Task::queued(task_id.as_str().into(), "list ~", &me, 1);
    doc.transact::<_, _, SchemaError>(|tx| Workspace::add_task(tx, &task))
        .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
    sign_last(&mut book, &doc);
    out.extend(session.on_local_change(&doc, &book, 0));
    let _ = pump!(|d: &Automerge, s: &SyncSession| s.in_sync(d));

    match forge {
        Forge::AnotherActor(victim) => {
            doc.set_actor(victim.actor_id());
            let msg = Message {
                id: "forged".into(),
                author: victim.to_string(),
                role: Role::User,
                text: "forged".into(),
                created_at: 2,
                task_id: None,
            };
            doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &msg))
                .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
        }
        Forge::TaskStatus => {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                let tasks = tx
                    .get(automerge::ROOT, "tasks")?
                    .map(|(_, id)| id)
                    .context_err()?;
                let t = tx
                    .get(&tasks, task_id.as_str())?
                    .map(|(_, id)| id)
                    .context_err()?;
                // A status the desktop never writes while running, so it cannot be mistaken
                // for the executor's own.
                tx.put(&t, "status", "interrupted")
            })
            .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
        }
        Forge::StartOpBelowDependency(victim) => {
            let before = doc.get_heads();
            let msg = Message {
                id: "mine".into(),
                author: me.to_string(),
                role: Role::User,
                text: "mine".into(),
                created_at: 2,
                task_id: None,
            };
            doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &msg))
                .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
            let c1 = doc.get_changes(&before).remove(0);
            let e1 = c1.decode();
            let at = e1.operations.iter().position(|op| op.insert).unwrap_or(0);
            let obj = automerge::legacy::OpId::new(e1.start_op.get() + at as u64, &e1.actor_id);
            let mut e2 = e1.clone();
            e2.seq = e1.seq + 1;
            e2.deps = vec![c1.hash()];
            e2.start_op = std::num::NonZeroU64::MIN;
            e2.hash = None;
            e2.operations = vec![automerge::legacy::Op {
                action: automerge::legacy::OpType::Put(victim.to_string().into()),
                obj: automerge::legacy::ObjectId::Id(obj),
                key: automerge::legacy::Key::Map("author".into()),
                pred: automerge::legacy::SortedVec::new(),
                insert: false,
            }];
            let c2 = automerge::Change::from(e2);
            out.push(SessionOutput::Send(raw_sync(
                vec![c2.hash()],
                vec![c1.raw_bytes().to_vec(), c2.raw_bytes().to_vec()],
            )));
        }
        Forge::CompressionBomb => {
            use std::io::Write;
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..64 {
                enc.write_all(&zeros)?;
            }
            let body = enc.finish()?;
            let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
            let mut n = body.len() as u64;
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                chunk.push(if n == 0 { b } else { b | 0x80 });
                if n == 0 {
                    break;
                }
            }
            chunk.extend(body);
            out.push(SessionOutput::Send(raw_sync(doc.get_heads(), vec![chunk])));
        }
        Forge::TextIsANumber | Forge::OversizedText => {
            let number = matches!(forge, Forge::TextIsANumber);
            doc.transact::<_, _, automerge::AutomergeError>(|tx| {
                let list = tx
                    .get(automerge::ROOT, "messages")?
                    .map(|(_, id)| id)
                    .context_err()?;
                let at = tx.length(&list);
                let m = tx.insert_object(&list, at, automerge::ObjType::Map)?;
                tx.put(&m, "id", "typed")?;
                tx.put(&m, "author", me.to_string())?;
                tx.put(&m, "role", "user")?;
                if number {
                    tx.put(&m, "text", 42)?;
                } else {
                    tx.put(&m, "text", "x".repeat(40 << 10))?;
                }
                tx.put(&m, "created_at", 3)
            })
            .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
        }
    }
    sign_last(&mut book, &doc);
    out.extend(session.on_local_change(&doc, &book, 0));
    let closed = pump!(|_: &Automerge, _: &SyncSession| false);
    let _ = closed;
    let reason = match (bye, conn.close_reason()) {
        (Some(b), _) => b,
        (None, Some(r)) => r.to_string(),
        (None, None) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            conn.close_reason()
                .map(|r| r.to_string())
                .unwrap_or_default()
        }
    };
    ep.close().await;
    Ok(reason)
}

/// A desktop serving from `desk_dir` on `listen`, and a terminal phone "honest" paired with it.
fn desktop_with_an_honest_phone(
    dir: &tempfile::TempDir,
    desk_dir: &std::path::Path,
    listen: std::net::SocketAddr,
) -> Result<(Serve, std::path::PathBuf, DeviceId)> {
    let serve = Serve::start(desk_dir, listen)?;
    let honest = dir.path().join("honest");
    ok(deskhand(&[
        "phone",
        "--data",
        path(&honest),
        "pair",
        &serve.payload,
        "--name",
        "honest",
    ])?)?;
    let honest_id: DeviceId = show(&honest)?["device"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    Ok((serve, honest, honest_id))
}

trait ContextErr<T> {
    fn context_err(self) -> Result<T, automerge::AutomergeError>;
}
impl<T> ContextErr<T> for Option<T> {
    fn context_err(self) -> Result<T, automerge::AutomergeError> {
        self.ok_or(automerge::AutomergeError::Fail)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_phones_that_forge_are_refused_and_disconnected_while_honest_ones_sync()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_dir = dir.path().join("desk");
    let (serve, honest, honest_id) =
        desktop_with_an_honest_phone(&dir, &desk_dir, free_udp_addr())?;

    let code = fresh_code(&desk_dir, "5m")?;
    let reason = crafted_peer(&code, Forge::AnotherActor(honest_id)).await?;
    eprintln!("[trust] forged actor: {reason}");
    assert!(reason.contains("without its signature"), "{reason}");

    let code = fresh_code(&desk_dir, "5m")?;
    let reason = crafted_peer(&code, Forge::TaskStatus).await?;
    eprintln!("[trust] forged task status: {reason}");
    assert!(
        reason.contains("tasks/crafted-")
            && reason.contains("/status, which a phone may not write"),
        "{reason}"
    );

    // Nothing forged entered the desktop's document; honest phones keep syncing.
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&honest),
        "send",
        "still here",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    let v = show(&honest)?;
    assert_eq!(
        texts(&v),
        vec!["still here"],
        "a forged message reached an honest phone"
    );
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    assert!(
        tasks.iter().all(|t| t["status"] != "interrupted"),
        "a forged status reached an honest phone: {tasks:?}"
    );
    let list = devices(&desk_dir)?;
    let refusals = list["refusals"].to_string();
    assert!(
        refusals.contains("refused_changes"),
        "devices must show the refusals: {refusals}"
    );
    eprintln!(
        "[trust] deskhand devices shows: {}",
        ok(deskhand(&["devices", "--data", path(&desk_dir)])?)?.stdout
    );
    drop(serve);
    Ok(())
}

/// Red team findings 1, 5, 6 and 7 of the security issue: each crafted message is refused, the
/// desktop keeps serving honest phones, and it restarts on its database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_changes_that_would_break_the_desktop_are_refused_and_it_restarts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_dir = dir.path().join("desk");
    let listen = free_udp_addr();
    let (serve, honest, honest_id) = desktop_with_an_honest_phone(&dir, &desk_dir, listen)?;
    let cases: [(Forge, &str); 4] = [
        (
            Forge::StartOpBelowDependency(honest_id),
            "first operation counter",
        ),
        (Forge::CompressionBomb, "too large"),
        (Forge::TextIsANumber, "not a valid message"),
        (Forge::OversizedText, "the limit is 32768"),
    ];
    for (forge, expect) in cases {
        let code = fresh_code(&desk_dir, "5m")?;
        let reason = crafted_peer(&code, forge).await?;
        eprintln!("[trust] {expect}: {reason}");
        assert!(reason.contains(expect), "expected {expect:?} in {reason:?}");
        // The honest phone still syncs, and sees nothing of the crafted message.
        let r = ok(deskhand(&[
            "phone",
            "--data",
            path(&honest),
            "send",
            "still here",
        ])?)?;
        assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    }
    let v = show(&honest)?;
    let texts = texts(&v);
    assert!(
        texts.iter().all(|t| t == "still here"),
        "a crafted message reached an honest phone: {texts:?}"
    );
    // The database still loads: the desktop starts again and serves the phone.
    drop(serve);
    let serve = Serve::start(&desk_dir, listen)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&honest),
        "send",
        "after restart",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    drop(serve);
    Ok(())
}

/// Issue 13, item 9: about one terminal phone command in ten printed `ERROR iroh::socket:
/// Endpoint dropped without calling Endpoint::close` (a dial given up mid-handshake, its close
/// cut short at exit). Every command here, with the desktop up and then down, closes its
/// endpoint; and a malformed code is refused with its reason said once.
#[test]
fn terminal_phone_commands_close_their_endpoint_and_say_a_reason_once() -> Result<()> {
    const DROPPED: &str = "Endpoint dropped without calling";
    let dir = tempfile::tempdir()?;
    let serve = Serve::start(&dir.path().join("desk"), free_udp_addr())?;
    let phone = dir.path().join("phone");
    let r = deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        "https://example.com/x",
    ])?;
    assert_ne!(r.code, 0);
    assert_eq!(
        r.stderr.trim(),
        "error: not a Deskhand pairing code (it should start with deskhand://pair?)"
    );
    ok(deskhand(&[
        "phone",
        "--data",
        path(&phone),
        "pair",
        &serve.payload,
    ])?)?;
    let mut seen = Vec::new();
    for i in 0..20 {
        for args in [
            vec!["show"],
            vec!["send", "list ~"],
            vec!["sync", "--timeout", "5"],
        ] {
            let mut all = vec!["phone", "--data", path(&phone)];
            all.extend(&args);
            let r = ok(deskhand(&all)?)?;
            if r.stderr.contains(DROPPED) {
                seen.push(format!("round {i}, {args:?}: {}", r.stderr.trim()));
            }
        }
    }
    assert!(
        seen.is_empty(),
        "{} of 60 commands:\n{}",
        seen.len(),
        seen.join("\n")
    );
    // The desktop down: dials are given up mid-handshake; still closed, and still quick.
    serve.kill9()?;
    for _ in 0..3 {
        let started = Instant::now();
        let r = deskhand(&["phone", "--data", path(&phone), "send", "--wait", "1", "hi"])?;
        assert!(!r.stderr.contains(DROPPED), "{}", r.stderr);
        assert!(r.stdout.contains("queued"), "{}", r.stdout);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let r = ok(deskhand(&["phone", "--data", path(&phone), "show"])?)?;
        assert!(!r.stderr.contains(DROPPED), "{}", r.stderr);
    }
    Ok(())
}
