//! Only the desktop's clock decides: terminal phones (`deskhand phone …` processes) whose clocks
//! are skewed with `DESKHAND_TEST_CLOCK_SKEW_MS` pair, approve and write tasks against a real
//! `deskhand serve`, relays off, on loopback.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deskhand_tests::{Run, Serve, deskhand, deskhand_env, free_udp_addr};
use serde_json::Value;

/// Six minutes fast, and two hours slow.
pub const FAST_6_MIN: &str = "360000";
pub const SLOW_2_H: &str = "-7200000";
const SKEW: &str = "DESKHAND_TEST_CLOCK_SKEW_MS";

/// A desktop host with its own HOME and config, and terminal phones in one temporary folder.
pub struct Desk {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub serve: Serve,
}

pub(crate) use crate::pairing::{ok, path};

impl Desk {
    pub fn start(config: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home)?;
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, config)?;
        let home_s = home.display().to_string();
        let serve = Serve::start_with(
            &dir.path().join("desk"),
            free_udp_addr(),
            &[("HOME", home_s.as_str())],
            &["--config", path(&config_file)],
        )?;
        Ok(Self { dir, home, serve })
    }

    pub fn phone_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh one-time code from the running host.
    pub fn code(&self) -> Result<String> {
        let r = ok(deskhand(&[
            "pair",
            "--data",
            path(&self.serve.data),
            "--ttl",
            "300",
        ])?)?;
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix("pairing payload: "))
            .map(str::to_owned)
            .context("no payload printed")
    }

    /// `deskhand phone --data <dir of name> ARGS…` with the phone's clock skewed by `skew` ms.
    pub fn phone(&self, name: &str, skew: &str, args: &[&str]) -> Result<Run> {
        let data = self.phone_dir(name);
        let mut all = vec!["phone", "--data", path(&data)];
        all.extend_from_slice(args);
        deskhand_env(&all, &[(SKEW, skew)])
    }

    /// Pairs phone `name` with `code` and waits for the workspace.
    pub fn pair(&self, name: &str, skew: &str, code: &str) -> Result<Run> {
        let r = ok(self.phone(name, skew, &["pair", code, "--name", name])?)?;
        ensure!(r.stdout.contains("Workspace received"), "{}", r.stdout);
        Ok(r)
    }

    pub fn show(&self, name: &str, skew: &str) -> Result<Value> {
        let r = ok(self.phone(name, skew, &["show", "--json"])?)?;
        Ok(serde_json::from_str(&r.stdout)?)
    }

    /// Syncs phone `name` until `pick` finds something in its view, for at most 20 s.
    pub fn wait_for<T>(
        &self,
        name: &str,
        skew: &str,
        what: &str,
        pick: impl Fn(&Value) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _ = self.phone(name, skew, &["sync", "--timeout", "3"])?;
            let v = self.show(name, skew)?;
            if let Some(t) = pick(&v) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!("phone {name} never saw {what}: {v:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The approval request of task `task` as phone `name` sees it.
    pub fn approval_of(&self, name: &str, skew: &str, task: &str) -> Result<Value> {
        self.wait_for(name, skew, "the approval request", |v| {
            v["approvals"]
                .as_array()?
                .iter()
                .find(|a| a["task_id"] == task)
                .cloned()
        })
    }

    /// Task `task` once it has finished, as phone `name` sees it.
    pub fn finished(&self, name: &str, skew: &str, task: &str) -> Result<Value> {
        self.wait_for(name, skew, "the task finish", |v| {
            let t = v["tasks"].as_array()?.iter().find(|t| t["id"] == task)?;
            matches!(t["status"].as_str(), Some("done" | "failed" | "cancelled")).then(|| t.clone())
        })
    }
}

/// The id of the task a `phone task` command created (`sent task <id> …` / `queued task <id> …`).
pub fn task_id(r: &Run) -> Result<String> {
    r.stdout
        .split_whitespace()
        .skip_while(|w| *w != "task")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no task id in {:?}", r.stdout))
}

#[test]
fn a_phone_six_minutes_fast_pairs_with_a_fresh_code_and_learns_the_offset() -> Result<()> {
    let desk = Desk::start("")?;
    // The code printed at start is valid for 5 minutes; this phone thinks it expired a minute ago.
    let r = desk.pair("fast", FAST_6_MIN, &desk.serve.payload)?;
    assert!(r.stdout.contains("Paired with"), "{}", r.stdout);
    let v = desk.show("fast", FAST_6_MIN)?;
    let offset = v["desktop"]["clock_offset_ms"]
        .as_i64()
        .context("the offset to the desktop's clock is known")?;
    assert!(
        (-365_000..=-355_000).contains(&offset),
        "desktop − phone should be about −6 min: {offset}"
    );
    // Shown in the desktop's time: `desktop_now` is the phone's clock minus six minutes.
    let taken = v["desktop_now"].as_i64().context("desktop_now")?;
    let real = deskhand_sync::presence::now_unix_ms();
    assert!((taken - real).abs() < 60_000, "{taken} vs {real}");
    // The phone's clock is set right: the next sync's hello teaches it the new offset, which is
    // kept for offline display.
    ok(desk.phone("fast", "0", &["sync"])?)?;
    let v = desk.show("fast", "0")?;
    let offset = v["desktop"]["clock_offset_ms"].as_i64().context("offset")?;
    assert!(
        offset.abs() < 5_000,
        "learned from the sync hello: {offset}"
    );
    Ok(())
}

#[test]
fn a_phone_six_minutes_fast_approves_a_request_with_five_minutes_left_and_it_runs() -> Result<()> {
    let desk = Desk::start("")?;
    std::fs::write(desk.home.join("old.txt"), "old")?;
    desk.pair("fast", FAST_6_MIN, &desk.serve.payload)?;
    let t = task_id(&ok(desk.phone(
        "fast",
        FAST_6_MIN,
        &["task", "trash ~/old.txt"],
    )?)?)?;
    let a = desk.approval_of("fast", FAST_6_MIN, &t)?;
    // By its own clock it expired a minute ago; by the desktop's it has about 5 minutes left,
    // and that is what the phone shows.
    let left = a["expires_in_ms"].as_i64().context("expires_in_ms")?;
    assert!((230_000..=300_000).contains(&left), "{left}");
    assert_eq!(a["status"]["state"], "pending", "{a}");
    let id = a["id"].as_str().context("id")?;
    let r = ok(desk.phone("fast", FAST_6_MIN, &["approve", id])?)?;
    assert!(!r.stdout.contains("warning"), "{}", r.stdout);
    let task = desk.finished("fast", FAST_6_MIN, &t)?;
    assert_eq!(task["status"], "done", "{task}");
    assert!(
        !desk.home.join("old.txt").exists(),
        "the desktop acted on it"
    );
    Ok(())
}

#[test]
fn a_truly_expired_request_is_refused_by_the_desktop_even_when_the_phone_is_slow() -> Result<()> {
    let desk = Desk::start("approval_timeout_secs = 2\n")?;
    std::fs::write(desk.home.join("keep.txt"), "keep")?;
    desk.pair("slow", SLOW_2_H, &desk.serve.payload)?;
    let t = task_id(&ok(desk.phone(
        "slow",
        SLOW_2_H,
        &["task", "trash ~/keep.txt"],
    )?)?)?;
    let a = desk.approval_of("slow", SLOW_2_H, &t)?;
    let id = a["id"].as_str().context("id")?.to_owned();
    // By the phone's own clock it has two hours left; the desktop's expiry passes now.
    std::thread::sleep(Duration::from_millis(3_000));
    let r = desk.phone("slow", SLOW_2_H, &["approve", &id])?;
    assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("came too late") && r.stderr.contains("expired"),
        "the desktop's refusal must reach the phone: {}\n{}",
        r.stdout,
        r.stderr
    );
    let task = desk.finished("slow", SLOW_2_H, &t)?;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["result"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{task}"
    );
    assert!(desk.home.join("keep.txt").exists(), "nothing ran");
    Ok(())
}

#[test]
fn a_task_from_a_phone_two_hours_slow_is_listed_after_older_tasks() -> Result<()> {
    let desk = Desk::start("")?;
    desk.pair("good", "0", &desk.serve.payload)?;
    desk.pair("slow", SLOW_2_H, &desk.code()?)?;
    let older = task_id(&ok(desk.phone("good", "0", &["task", "list ~"])?)?)?;
    desk.finished("good", "0", &older)?;
    let newer = task_id(&ok(desk.phone("slow", SLOW_2_H, &["task", "list ~"])?)?)?;
    desk.finished("slow", SLOW_2_H, &newer)?;
    for (name, skew) in [("good", "0"), ("slow", SLOW_2_H)] {
        let v = desk
            .finished(name, skew, &newer)
            .and_then(|_| desk.show(name, skew))?;
        let tasks = v["tasks"].as_array().context("tasks")?;
        let at = |id: &str| tasks.iter().position(|t| t["id"] == id);
        let (o, n) = (at(&older).context("older")?, at(&newer).context("newer")?);
        let created = |i: usize| tasks[i]["created_at"].as_i64().unwrap_or_default();
        assert!(
            created(n) < created(o),
            "the slow phone's clock wrote an earlier time"
        );
        assert!(
            o < n,
            "{name}: the newer task is listed after the older one: {v:#}"
        );
    }
    Ok(())
}

/// A week of milliseconds, back.
const A_WEEK_AGO: &str = "-604800000";

/// A phone offline across a week boundary writes into the week it wrote in, by the desktop's
/// clock as it last learned it: here a week before the desktop's now (the phone writes with its
/// clock a week back, as if the message were written last week and sent only now). The desktop,
/// restarted meanwhile, holds nothing of that week; when the phone syncs, the phone's catalog
/// has a week the desktop's lacks, so that week syncs on a stream of its own: the desktop runs
/// the message's task and answers in the old week, a message written now goes to this week, and
/// both sides end with the same conversation, in order.
#[test]
fn a_phone_offline_across_a_week_boundary_writes_into_the_old_week_and_converges() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("desk");
    let listen = free_udp_addr();
    let serve = Serve::start_with(&data, listen, &[], &[])?;
    let phone = |args: &[&str]| {
        let p = dir.path().join("p");
        let mut all = vec!["phone", "--data", path(&p)];
        all.extend_from_slice(args);
        deskhand(&all)
    };
    let r = ok(phone(&["pair", &serve.payload, "--name", "p"])?)?;
    ensure!(r.stdout.contains("Workspace received"), "{}", r.stdout);
    drop(serve);

    // Offline, last week: the message goes into last week's document.
    let p = dir.path().join("p");
    let r = ok(deskhand_env(
        &["phone", "--data", path(&p), "send", "list ~", "--wait", "1"],
        &[(SKEW, A_WEEK_AGO)],
    )?)?;
    ensure!(r.stdout.contains("queued"), "{}", r.stdout);

    // The desktop is back.
    let serve = Serve::start_with(&data, listen, &[], &[])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = Instant::now();
    let v = loop {
        let r = phone(&["sync", "--timeout", "5"])?;
        eprintln!(
            "[week boundary] {:?} sync: {} {}",
            t.elapsed(),
            r.stdout.trim(),
            r.stderr.trim()
        );
        let v: Value = serde_json::from_str(&ok(phone(&["show", "--json"])?)?.stdout)?;
        let answered = v["messages"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["role"] == "agent"));
        if answered {
            break v;
        }
        ensure!(
            Instant::now() < deadline,
            "the old week's message was never answered: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let texts = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                m["text"]
                    .as_str()
                    .map(|t| t.lines().next().unwrap_or("").to_owned())
            })
            .collect()
    };
    let before = texts(&v);
    ensure!(before.len() == 2 && before[0] == "list ~", "{before:?}");

    // Written now: the desktop's new week, after the old one.
    let r = ok(phone(&["send", "written this week", "--wait", "20"])?)?;
    ensure!(!r.stdout.contains("queued"), "{}", r.stdout);
    let v = loop {
        let _ = phone(&["sync", "--timeout", "5"])?;
        let v: Value = serde_json::from_str(&ok(phone(&["show", "--json"])?)?.stdout)?;
        if texts(&v).len() >= 4 {
            break v;
        }
        ensure!(
            Instant::now() < deadline + Duration::from_secs(30),
            "no answer this week: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let all = texts(&v);
    ensure!(all[..2] == before[..], "the old week comes first: {all:?}");
    ensure!(all[2] == "written this week", "{all:?}");
    // Both weeks sync to the end: the phone and the desktop hold the same changes.
    let r = ok(phone(&["sync", "--timeout", "20"])?)?;
    eprintln!("[week boundary] {}", r.stdout.trim());
    drop(serve);
    Ok(())
}
