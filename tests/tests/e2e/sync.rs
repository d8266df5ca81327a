//! The sync spine across processes: convergence, offline catch-up, SIGKILL, unknown peers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use deskhand_tests::{NodeProc, free_udp_addr, message_ids};
use serde_json::{Value, json};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deskhand-node"))
}

fn peer<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == id))
        .unwrap_or(&Value::Null)
}

fn ids(state: &Value) -> BTreeSet<String> {
    message_ids(state).into_iter().collect()
}

#[test]
fn desktop_and_two_phones_converge_survive_sigkill_and_resume_without_full_resend() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_addr = free_udp_addr();
    let mut desk = NodeProc::spawn(&bin(), &dir.path().join("desk"), "desktop", Some(desk_addr))?;
    let mut a = NodeProc::spawn(&bin(), &dir.path().join("a"), "phone", None)?;
    let mut b = NodeProc::spawn(&bin(), &dir.path().join("b"), "phone", None)?;
    desk.allow(&a)?;
    desk.allow(&b)?;
    a.home(&desk)?;
    b.home(&desk)?;
    a.wait_doc()?;
    b.wait_doc()?;

    // 1. Both phones receive the desktop's document and see each other's messages.
    let t = Instant::now();
    let mut written = BTreeSet::new();
    for i in 0..20 {
        written.insert(a.send(&format!("from A #{i}"))?);
    }
    written.insert(b.send("from B")?);
    a.wait_messages(21, 20_000)?;
    let sb = b.wait_messages(21, 20_000)?;
    eprintln!(
        "[e2e] first convergence of 21 messages on both phones: {:?}",
        t.elapsed()
    );
    assert_eq!(ids(&sb["state"]), written);

    // 2. B goes offline; A writes; B comes back and catches up.
    let b_data = b.data.clone();
    b.quit()?;
    for i in 0..300 {
        written.insert(a.send(&format!(
            "while B away, message number {i} with some ordinary text"
        ))?);
    }
    let t = Instant::now();
    let mut b = NodeProc::spawn(&bin(), &b_data, "phone", None)?;
    let sb = b.wait_messages(written.len(), 20_000)?;
    eprintln!(
        "[e2e] B back online caught up 300 messages in {:?}",
        t.elapsed()
    );
    assert_eq!(ids(&sb["state"]), written);

    // 3. Desktop killed with SIGKILL right after phones and desktop reported commits.
    let desk_msg = desk.ok(json!({"cmd": "send", "text": "agent says hi", "role": "agent"}))?;
    written.insert(desk_msg["id"].as_str().unwrap_or_default().to_owned());
    for i in 0..10 {
        written.insert(a.send(&format!("just before the crash #{i}"))?);
    }
    let desk_data = desk.data.clone();
    desk.kill9()?;
    // Written while the desktop is down: committed on A, queued.
    for i in 0..5 {
        written.insert(a.send(&format!("while desktop down #{i}"))?);
    }
    let t = Instant::now();
    let mut desk = NodeProc::spawn(&bin(), &desk_data, "desktop", Some(desk_addr))?;
    for n in [&mut a, &mut b] {
        n.ok(json!({"cmd": "sync_now"}))?;
    }
    let sd = desk.wait_messages(written.len(), 30_000)?;
    let sa = a.wait_messages(written.len(), 30_000)?;
    let sb = b.wait_messages(written.len(), 30_000)?;
    eprintln!(
        "[e2e] after desktop SIGKILL + restart, all three converged in {:?}",
        t.elapsed()
    );
    for s in [&sd, &sa, &sb] {
        assert_eq!(ids(&s["state"]), written, "a committed message was lost");
    }
    // Same heads everywhere once quiet.
    let (ha, hb, hd) = (
        a.state()?["heads"].clone(),
        b.state()?["heads"].clone(),
        desk.state()?["heads"].clone(),
    );
    assert_eq!(ha, hd);
    assert_eq!(hb, hd);

    // 4. A reconnect sends only what is missing. Baseline: a brand-new phone C receives the
    //    whole document; then B, offline while A writes one message, reconnects.
    let b_data = b.data.clone();
    b.quit()?;
    written.insert(a.send("one more while B is away")?);
    let mut c = NodeProc::spawn(&bin(), &dir.path().join("c"), "phone", None)?;
    desk.allow(&c)?;
    c.home(&desk)?;
    let sc = c.wait_messages(written.len(), 20_000)?;
    // Everything C received, over every session: under load its first dial can be restarted,
    // and the document then arrives in a session that is no longer the last one.
    let cstats = &peer(&sc["state"], &desk.id)["stats"];
    let full = cstats["bytes_received"].as_u64().unwrap_or(0)
        + cstats["last_session_received"].as_u64().unwrap_or(0);
    let t = Instant::now();
    let mut b = NodeProc::spawn(&bin(), &b_data, "phone", None)?;
    let sb = b.wait_messages(written.len(), 20_000)?;
    let took = t.elapsed();
    assert_eq!(ids(&sb["state"]), written);
    // Let the closing exchange (acknowledgements) finish before reading the counters.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sb = b.state()?;
    let st = &peer(&sb, &desk.id)["stats"];
    let (recv, sent) = (
        st["last_session_received"].as_u64().unwrap_or(0),
        st["last_session_sent"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "[e2e] fresh phone received the whole document: {full} B; B's reconnect for 1 missing message: received {recv} B, sent {sent} B, converged in {took:?}"
    );
    assert!(
        full > 5_000,
        "baseline should be the whole document, got {full}"
    );
    assert!(
        recv * 5 < full,
        "reconnect resent too much: {recv} B against {full} B for everything"
    );
    for n in [desk, a, b, c] {
        n.quit()?;
    }
    Ok(())
}

#[test]
fn a_device_not_in_the_registry_is_refused_before_any_document_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut desk = NodeProc::spawn(&bin(), &dir.path().join("desk"), "desktop", None)?;
    desk.send("secret plans")?;
    let mut stranger = NodeProc::spawn(&bin(), &dir.path().join("x"), "phone", None)?;
    stranger.home(&desk)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    let state = loop {
        let s = stranger.state()?;
        if !peer(&s, &desk.id)["last_error"].is_null() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let err = peer(&state, &desk.id)["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    eprintln!("[e2e] stranger sees: {err}");
    assert!(
        err.contains("not paired"),
        "refusal should say why, got {err:?}"
    );
    assert!(
        state["heads"].as_array().is_some_and(|h| h.is_empty()),
        "no document data may reach an unknown peer"
    );
    assert!(state["doc_id"].is_null());
    let audit = desk.ok(json!({"cmd": "audit"}))?;
    assert!(audit["events"].to_string().contains("refused_unknown_peer"));
    stranger.quit()?;
    desk.quit()?;
    Ok(())
}

#[test]
fn sigkill_in_the_middle_of_writes_loses_no_acknowledged_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut desk = NodeProc::spawn(&bin(), &dir.path().join("desk"), "desktop", None)?;
    let mut acked = BTreeSet::new();
    for round in 0..5u64 {
        // Queue a burst of writes, read some of the answers, then kill the process while the
        // rest are in flight: every write it acknowledged must be there after the restart.
        let burst = 40;
        for i in 0..burst {
            desk.send_only(json!({"cmd": "send", "text": format!("round {round} write {i}")}))?;
        }
        let read = 5 + (round as usize * 7) % 30;
        for _ in 0..read {
            let a = desk.answer()?;
            acked.insert(a["id"].as_str().unwrap_or_default().to_owned());
        }
        let data = desk.data.clone();
        desk.kill9()?;
        desk = NodeProc::spawn(&bin(), &data, "desktop", None)?;
        let have = ids(&desk.state()?);
        let lost: Vec<_> = acked.difference(&have).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost after SIGKILL: {lost:?}"
        );
        eprintln!(
            "[e2e] round {round}: {} acknowledged, {} stored after SIGKILL",
            acked.len(),
            have.len()
        );
    }
    desk.quit()?;
    Ok(())
}

#[test]
fn an_offline_burst_sent_as_a_whole_document_is_stored_before_it_is_acknowledged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_addr = free_udp_addr();
    let mut desk = NodeProc::spawn(&bin(), &dir.path().join("desk"), "desktop", Some(desk_addr))?;
    let mut a = NodeProc::spawn(&bin(), &dir.path().join("a"), "phone", None)?;
    desk.allow(&a)?;
    a.home(&desk)?;
    a.wait_doc()?;
    let mut written = BTreeSet::new();
    for i in 0..3 {
        written.insert(a.send(&format!("before the burst #{i}"))?);
    }
    desk.wait_messages(written.len(), 20_000)?;
    let desk_data = desk.data.clone();
    desk.quit()?;
    // Far more than a third of the document is new, so Automerge sends A's whole document,
    // which the desktop vets and adopts as its snapshot.
    for i in 0..60 {
        written.insert(a.send(&format!("offline burst #{i}"))?);
    }
    let mut desk = NodeProc::spawn(&bin(), &desk_data, "desktop", Some(desk_addr))?;
    a.ok(json!({"cmd": "sync_now"}))?;
    desk.wait_messages(written.len(), 20_000)?;
    // The desktop answers only once what it received is on disk: once A hears it is in sync,
    // a SIGKILL must not lose anything, and A is gone so it cannot send anything again.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sa = a.state()?;
        if peer(&sa, &desk.id)["in_sync"] == true && sa["heads"] == desk.state()?["heads"] {
            break;
        }
        assert!(Instant::now() < deadline, "A never saw the desktop in sync");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let heads = a.state()?["heads"].clone();
    a.quit()?;
    desk.kill9()?;
    let mut desk = NodeProc::spawn(&bin(), &desk_data, "desktop", Some(desk_addr))?;
    let sd = desk.state()?;
    assert_eq!(ids(&sd), written, "an acknowledged message was lost");
    assert_eq!(sd["heads"], heads);
    desk.quit()?;
    Ok(())
}
