//! A crash at every write (issue 15): a real `deskhand serve` kills itself with SIGKILL
//! (`DESKHAND_CRASH_AT`, compiled in by the `fault-injection` feature of the test build) at each
//! durable step of a task's life and at seeded write and sync calls of its store; then
//! - its database file opens and its document loads (read here, by the test, with nobody's help),
//! - every message the phone was told the desktop holds is in it,
//! - restarted on the same data, it leaves no task `running` or `waiting_approval`,
//! - and no action ran twice (the shell command appends one line per run to a file).
//!
//! CI runs a few seeded rounds per point; `DESKHAND_CRASH_ROUNDS` (and `DESKHAND_CRASH_SEED`)
//! run more, from `scripts/faults crash`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use automerge::Automerge;
use deskhand_core::schema::Workspace;
use serde_json::{Value, json};

use crate::executor::Rig;

/// Each round's crash point is reproducible from the seed printed on failure.
use deskhand_tests::netem::SplitMix64 as Rng;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The messages of every conversation document on the desktop's disk (a root and one document
/// per week), read straight from the store after a crash.
fn desktop_messages(data: &std::path::Path) -> Result<Vec<deskhand_core::schema::Message>> {
    use deskhand_sync::store::DocKey;
    let (store, thread, loaded) = deskhand_sync::store::Store::open(&data.join("deskhand.redb"))
        .context("the desktop's database does not open after the crash")?;
    let mut out = Vec::new();
    for key in &loaded.doc_keys {
        if *key == DocKey::WORKSPACE || *key == DocKey::LEGACY {
            continue;
        }
        let doc: Automerge = store
            .load_doc_blocking(key)?
            .map(|d| d.load())
            .transpose()
            .with_context(|| format!("the desktop's document {key} does not load"))?
            .unwrap_or_default();
        out.extend(
            Workspace::messages_from(&doc, 0)
                .with_context(|| format!("the messages of {key} do not read"))?,
        );
    }
    drop(store);
    drop(thread);
    Ok(out)
}

/// How a round went.
#[derive(Debug, Default)]
struct Tally {
    crashed: u64,
    crashed_at_start: u64,
    not_reached: u64,
}

/// One round: start the host armed with `spec`, give it a task that asks, runs a command and
/// answers, plus three messages; let it die; check; restart; check again.
fn round(rig: &mut Rig, spec: &str, round: u64, tally: &mut Tally) -> Result<()> {
    let ctx = format!("{spec} (round {round})");
    let count = rig.home.join("work/count");
    let mark = format!("r{round}");
    if let Some(s) = rig.serve.take() {
        s.kill9()?;
    }
    let started = rig.restart_with(&[("DESKHAND_CRASH_AT", spec)]);
    let mut task = None;
    let mut crashed = false;
    match started {
        Err(e) => {
            // The store point hit while the host was starting.
            ensure!(
                e.to_string().contains("before it printed"),
                "{ctx}: the host did not start: {e:#}"
            );
            tally.crashed_at_start += 1;
            crashed = true;
        }
        Ok(()) => {
            let t = rig.say(&format!("run echo {mark} >> ~/work/count; sleep 0.5"))?;
            for i in 0..3 {
                rig.phone.send(&format!("list ~/work {round}.{i}"))?;
            }
            task = Some(t.clone());
            // Approve its request when it comes; wait for the crash (or for everything to end).
            let deadline = Instant::now() + Duration::from_secs(25);
            let mut decided = false;
            while Instant::now() < deadline {
                let serve = rig.serve.as_mut().context("serve")?;
                if serve.exited(Duration::from_millis(50))?.is_some() {
                    crashed = true;
                    break;
                }
                if !decided {
                    let v = rig
                        .phone
                        .call(json!({"cmd": "wait_approval", "task": t, "timeout_ms": 300}))?;
                    if v["ok"] == true {
                        rig.phone.ok(json!({"cmd": "decide",
                            "approval": v["approval"]["id"], "verdict": "approve"}))?;
                        decided = true;
                    }
                    continue;
                }
                let all_final = all_tasks(rig)?.iter().all(is_final);
                if all_final && decided {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if crashed {
                tally.crashed += 1;
            } else {
                tally.not_reached += 1;
            }
        }
    }
    if let Some(s) = rig.serve.take() {
        s.kill9()?;
    }

    // What the phone was told is on the desktop, is on the desktop's disk.
    let acked: Vec<String> = rig.phone.ok(json!({"cmd": "acked"}))?["ids"]
        .as_array()
        .context("ids")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let held: Vec<String> = desktop_messages(&rig.data())
        .with_context(|| ctx.clone())?
        .into_iter()
        .map(|m| m.id.as_str().to_owned())
        .collect();
    for id in &acked {
        ensure!(
            held.contains(id),
            "{ctx}: message {id} was acknowledged to the phone but is not on the desktop's disk"
        );
    }

    // Restarted on the same data: every task ends in a state that tells the truth.
    rig.restart()?;
    rig.phone.ok(json!({"cmd": "sync_now"}))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_approvals: Vec<Value> = Vec::new();
    loop {
        let tasks = all_tasks(rig)?;
        let open: Vec<&Value> = tasks.iter().filter(|t| !is_final(t)).collect();
        let ours_known = task
            .as_ref()
            .is_none_or(|id| tasks.iter().any(|t| t["id"] == id.as_str()));
        if open.is_empty() && ours_known {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{ctx}: after the restart these tasks never ended: {open:?}"
        );
        // A task the crash stopped before its claim runs now, and asks again.
        if let Some(t) = &task {
            let mut cmd = json!({"cmd": "wait_approval", "task": t, "timeout_ms": 300});
            if let Some(a) = seen_approvals.last() {
                cmd["except"] = a["id"].clone();
            }
            let v = rig.phone.call(cmd)?;
            if v["ok"] == true {
                rig.phone.ok(json!({"cmd": "decide",
                    "approval": v["approval"]["id"], "verdict": "approve"}))?;
                seen_approvals.push(v["approval"].clone());
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Give a wrongly resumed action the time to run, then count.
    std::thread::sleep(Duration::from_millis(600));
    let ran = std::fs::read_to_string(&count)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == mark)
        .count();
    ensure!(ran <= 1, "{ctx}: the command ran {ran} times");
    if let Some(t) = &task {
        let v = all_tasks(rig)?
            .into_iter()
            .find(|x| x["id"] == t.as_str())
            .context("the task")?;
        let status = v["status"].as_str().unwrap_or_default().to_owned();
        if status == "done" {
            ensure!(
                ran == 1,
                "{ctx}: the task says done but the command ran {ran} times"
            );
        }
        if crashed && status == "interrupted" {
            ensure!(
                v["events"].to_string().contains("not resumed"),
                "{ctx}: an interrupted task says nothing of why: {v}"
            );
        }
    }
    Ok(())
}

fn is_final(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("done" | "failed" | "cancelled" | "interrupted")
    )
}

/// Every task on the phone's replica.
fn all_tasks(rig: &mut Rig) -> Result<Vec<Value>> {
    let v = rig.phone.ok(json!({"cmd": "tasks"}))?;
    Ok(v["tasks"].as_array().cloned().unwrap_or_default())
}

/// Runs `rounds` rounds at `point`, each with an `nth` drawn below `range` from the seed.
fn crash_rounds(point: &str, range: u64, ci_rounds: u64) -> Result<()> {
    let rounds = env_u64("DESKHAND_CRASH_ROUNDS", ci_rounds);
    let seed = env_u64("DESKHAND_CRASH_SEED", 15);
    let mut rng = Rng(seed
        ^ point
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64));
    let mut rig = Rig::new("", &[])?;
    std::fs::create_dir_all(rig.home.join("work"))?;
    let mut tally = Tally::default();
    for r in 0..rounds {
        let nth = 1 + rng.below(range);
        let spec = format!("{point}:{nth}");
        round(&mut rig, &spec, r, &mut tally)
            .with_context(|| format!("seed {seed}: DESKHAND_CRASH_SEED={seed} reproduces it"))?;
    }
    eprintln!("crash {point}: {rounds} rounds (seed {seed}): {tally:?}");
    ensure!(
        tally.crashed + tally.crashed_at_start > 0,
        "{point}: no round reached its crash point: {tally:?}"
    );
    Ok(())
}

#[test]
fn a_crash_after_the_claim_leaves_the_task_interrupted_and_nothing_runs_twice() -> Result<()> {
    crash_rounds("claim", 2, 1)
}

#[test]
fn a_crash_after_a_progress_batch_loses_nothing_acknowledged() -> Result<()> {
    crash_rounds("progress", 3, 1)
}

#[test]
fn a_crash_while_an_approval_is_pending_closes_it_and_interrupts_the_task() -> Result<()> {
    crash_rounds("approval", 1, 1)
}

#[test]
fn a_crash_after_the_decision_never_runs_the_action() -> Result<()> {
    crash_rounds("decision", 1, 1)
}

#[test]
fn a_crash_in_the_middle_of_a_tool_leaves_its_one_run_and_an_interrupted_task() -> Result<()> {
    crash_rounds("tool", 1, 1)
}

#[test]
fn a_crash_after_the_result_keeps_the_result() -> Result<()> {
    crash_rounds("result", 2, 1)
}

#[test]
fn a_crash_at_a_seeded_write_of_the_store_loses_nothing_acknowledged() -> Result<()> {
    crash_rounds("store-write", 120, 2)
}

#[test]
fn a_crash_at_a_seeded_sync_of_the_store_loses_nothing_acknowledged() -> Result<()> {
    crash_rounds("store-sync", 30, 2)
}
