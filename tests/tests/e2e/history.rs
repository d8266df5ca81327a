//! A year of history across processes (issue 16): a fresh phone app pairs with a desktop whose
//! workspace spans 52 week documents, shows the recent weeks, and pages back through all of it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use deskhand_tests::{NodeProc, free_udp_addr};
use serde_json::{Value, json};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deskhand-node"))
}

/// The weeks the snapshot's messages come from ("2025-W10", …), each once, in order.
fn weeks_shown(snapshot: &Value) -> Vec<String> {
    let mut weeks: Vec<String> = texts(snapshot)
        .iter()
        .map(|t| t.split('#').next().unwrap_or_default().to_owned())
        .collect();
    weeks.dedup();
    weeks
}

fn texts(snapshot: &Value) -> Vec<String> {
    snapshot["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_fresh_phone_pairs_with_a_year_of_weeks_and_pages_back_through_all_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_data = dir.path().join("desk");
    let desk_addr = free_udp_addr();

    // A desktop writes a year: 52 weeks of 30 messages, a task still open in week 10.
    let mut desk = NodeProc::spawn(&bin(), &desk_data, "desktop", Some(desk_addr))?;
    let year =
        desk.ok(json!({"cmd": "year", "year": 2025, "per_week": 30, "open_task_week": 10}))?;
    assert_eq!(year["weeks"], 52, "{year}");
    desk.quit()?;

    // Restarted, it loads this week and the week with the open task, not the year.
    let mut desk = NodeProc::spawn(&bin(), &desk_data, "desktop", Some(desk_addr))?;
    let state = desk.ok(json!({"cmd": "state"}))?;
    let loaded = state["messages"].as_array().map_or(0, Vec::len);
    assert_eq!(
        loaded, 30,
        "the desktop loaded only week 10 of the year's weeks"
    );

    // A fresh phone app pairs and shows the newest weeks (the latest 50 messages) and the
    // week with the open task; 49 older weeks wait.
    let mut app = NodeProc::spawn(&bin(), &dir.path().join("app"), "app", None)?;
    let code = desk.ok(json!({"cmd": "pairing_code"}))?;
    let uri = code["uri"].as_str().context("no pairing code")?.to_owned();
    app.ok(json!({"cmd": "pair", "payload": uri}))?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 30_000}))?;
    let snap = app.ok(json!({"cmd": "snapshot"}))?["snapshot"].clone();
    assert_eq!(weeks_shown(&snap), ["2025-W10", "2025-W51", "2025-W52"]);
    assert_eq!(texts(&snap).len(), 90);
    assert_eq!(snap["older_weeks"], 49);
    let tasks = snap["tasks"].to_string();
    assert!(tasks.contains("t-open"), "the open task is shown: {tasks}");

    // "Load older messages", ten weeks a page, until nothing is older.
    let mut pages = 0;
    loop {
        let before = app.ok(json!({"cmd": "snapshot"}))?["snapshot"]["older_weeks"]
            .as_u64()
            .context("older_weeks")?;
        let page = app.ok(json!({"cmd": "load_older", "weeks": 10}))?;
        assert_eq!(page["loaded"].as_u64(), Some(before.min(10)), "{page}");
        if before == 0 {
            break;
        }
        app.ok(json!({"cmd": "sync", "timeout_ms": 30_000}))?;
        pages += 1;
    }
    assert_eq!(pages, 5);
    let snap = app.ok(json!({"cmd": "snapshot"}))?["snapshot"].clone();
    let expected: Vec<String> = (1..=52)
        .flat_map(|w| (0..30).map(move |i| format!("2025-W{w:02}#{i}")))
        .collect();
    assert_eq!(texts(&snap), expected, "the whole year, in order");

    // Restarted with the desktop away, the app opens on the recent weeks again and pages back
    // through what it holds, offline.
    app.quit()?;
    desk.quit()?;
    let mut app = NodeProc::spawn(&bin(), &dir.path().join("app"), "app", None)?;
    let snap = app.ok(json!({"cmd": "snapshot"}))?["snapshot"].clone();
    assert_eq!(weeks_shown(&snap), ["2025-W10", "2025-W51", "2025-W52"]);
    assert_eq!(snap["older_weeks"], 49);
    let page = app.ok(json!({"cmd": "load_older", "weeks": 49}))?;
    assert_eq!(page["loaded"], 49, "{page}");
    let snap = app.ok(json!({"cmd": "snapshot"}))?["snapshot"].clone();
    assert_eq!(
        texts(&snap),
        expected,
        "the whole year from the phone's own disk"
    );
    app.quit()?;
    Ok(())
}
