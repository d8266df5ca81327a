//! Several phones answer one request: the decision rule of `[approvals]` holds when two phones
//! answer within milliseconds, and a phone whose decision came too late is told what happened.
//! Real `deskhand serve` and `deskhand phone …` processes, relays off, on loopback.

use std::time::Duration;

use anyhow::{Context, Result};
use deskhand_tests::{Run, deskhand_command};

use crate::clocks::{Desk, ok, task_id};

/// Desk with phones `A` and `B` (normal clocks) paired.
fn two_phones(config: &str) -> Result<Desk> {
    let desk = Desk::start(config)?;
    desk.pair("A", "0", &desk.serve.payload)?;
    desk.pair("B", "0", &desk.code()?)?;
    Ok(desk)
}

/// A asks to trash `file`; returns the task and the approval id once both phones hold it.
fn ask_trash(desk: &Desk, file: &str) -> Result<(String, String)> {
    std::fs::write(desk.home.join(file), file)?;
    let t = task_id(&ok(desk.phone(
        "A",
        "0",
        &["task", &format!("trash ~/{file}")],
    )?)?)?;
    let a = desk.approval_of("A", "0", &t)?;
    desk.approval_of("B", "0", &t)?;
    Ok((t, a["id"].as_str().context("id")?.to_owned()))
}

/// `deskhand phone --data <name> VERB ID` for each pair at once; their outcomes in order.
fn at_once(desk: &Desk, calls: &[(&str, &str, &str)]) -> Result<Vec<Run>> {
    let children: Vec<_> = calls
        .iter()
        .map(|(name, verb, id)| {
            let data = desk.phone_dir(name);
            deskhand_command(
                &[
                    "phone",
                    "--data",
                    data.to_str().unwrap_or_default(),
                    verb,
                    id,
                ],
                &[],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    children
        .into_iter()
        .map(|c| Ok(Run::of(c.wait_with_output()?)))
        .collect()
}

#[test]
fn with_the_default_rule_a_deny_at_the_same_moment_as_an_approve_wins_every_round() -> Result<()> {
    let desk = two_phones("")?;
    for round in 0..3 {
        let file = format!("round{round}.txt");
        let (t, id) = ask_trash(&desk, &file)?;
        let runs = at_once(&desk, &[("A", "approve", &id), ("B", "deny", &id)])?;
        let b = &runs[1];
        assert_eq!(
            b.code, 0,
            "round {round}: B's deny: {}\n{}",
            b.stdout, b.stderr
        );
        let task = desk.finished("A", "0", &t)?;
        assert_eq!(task["status"], "failed", "round {round}: {task}");
        assert!(
            task["result"]["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("denied on B"),
            "round {round}: {task}"
        );
        assert!(
            desk.home.join(&file).exists(),
            "round {round}: nothing was trashed"
        );
    }
    Ok(())
}

#[test]
fn a_deny_after_the_settle_window_is_told_it_came_too_late_and_what_happened() -> Result<()> {
    let desk = two_phones("[approvals]\nsettle_ms = 500\n")?;
    let (t, id) = ask_trash(&desk, "gone.txt")?;
    ok(desk.phone("A", "0", &["approve", &id])?)?;
    let task = desk.finished("A", "0", &t)?;
    assert_eq!(task["status"], "done", "{task}");
    assert!(!desk.home.join("gone.txt").exists());
    // B still shows the request as pending (it has not synced since) and denies it now.
    let r = desk.phone("B", "0", &["deny", &id, "--wait", "5"])?;
    assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("your deny on")
            && r.stderr.contains("came too late: approved on A at")
            && r.stderr.contains("(desktop time) and the action ran"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stdout.contains("the desktop has it"), "{}", r.stdout);
    Ok(())
}

#[test]
fn unanimous_waits_for_every_phone_and_one_deny_stops_it() -> Result<()> {
    let desk = two_phones("[approvals]\nrule = \"unanimous\"\n")?;
    let (t, id) = ask_trash(&desk, "both.txt")?;
    let r = ok(desk.phone("A", "0", &["approve", &id])?)?;
    assert!(r.stdout.contains("not resolved yet"), "{}", r.stdout);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        desk.home.join("both.txt").exists(),
        "one approve of two is not enough"
    );
    let r = ok(desk.phone("B", "0", &["approve", &id])?)?;
    assert!(
        r.stdout.contains("resolved: approved on A and B"),
        "{}",
        r.stdout
    );
    assert_eq!(desk.finished("A", "0", &t)?["status"], "done");
    assert!(!desk.home.join("both.txt").exists());
    // A deny from either phone stops the next one.
    let (t, id) = ask_trash(&desk, "kept.txt")?;
    ok(desk.phone("A", "0", &["approve", &id])?)?;
    ok(desk.phone("B", "0", &["deny", &id])?)?;
    assert_eq!(desk.finished("A", "0", &t)?["status"], "failed");
    assert!(desk.home.join("kept.txt").exists());
    Ok(())
}

#[test]
fn n_of_m_acts_on_the_nth_approve_of_three_phones() -> Result<()> {
    let desk = two_phones("[approvals]\nrule = \"n-of-m\"\napprovals_needed = 2\n")?;
    desk.pair("C", "0", &desk.code()?)?;
    let (t, id) = ask_trash(&desk, "two.txt")?;
    let r = ok(desk.phone("A", "0", &["approve", &id])?)?;
    assert!(r.stdout.contains("not resolved yet"), "{}", r.stdout);
    assert!(
        desk.home.join("two.txt").exists(),
        "one approve of the two needed"
    );
    let r = ok(desk.phone("B", "0", &["approve", &id])?)?;
    assert!(
        r.stdout.contains("resolved: approved on A and B"),
        "{}",
        r.stdout
    );
    assert_eq!(desk.finished("A", "0", &t)?["status"], "done");
    assert!(!desk.home.join("two.txt").exists());
    // C, which never answered, sees who decided; its approve now comes too late.
    let a = desk.approval_of("C", "0", &t)?;
    assert_eq!(a["status"]["state"], "resolved", "{a}");
    assert_eq!(
        a["status"]["counted"].as_array().map(Vec::len),
        Some(2),
        "{a}"
    );
    let r = desk.phone("C", "0", &["approve", &id])?;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("came too late: approved on A and B"),
        "{}",
        r.stderr
    );
    Ok(())
}
