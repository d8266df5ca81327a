//! Issue 12, findings 10–15, seen from outside: a real `deskhand serve`; phones in this process
//! are real nodes that write what a hostile app would; the terminal phone, `deskhand devices`
//! and `deskhand pair` run as a user runs them; a stranger speaks the pairing ALPN by hand.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use automerge::Automerge;
use deskhand_core::schema::{Message, Role, Task, TaskStatus, Workspace};
use deskhand_core::{DeviceKey, MessageId, PairingPayload, PairingToken, TaskId};
use deskhand_sync::node::{random_bytes, random_id_bytes};
use deskhand_sync::presence::now_unix_ms;
use deskhand_sync::{NetConfig, Node, NodeConfig, NodeRole, RelaySetting};
use deskhand_tests::{Run, Serve, deskhand, deskhand_bin, free_udp_addr};
use serde_json::Value;

/// What the red team sent: clear the screen, set the window title, a fake red agent line, and
/// a right-to-left override.
const ATTACK: &str = "hi\x1b[2J\x1b[H\x1b]0;owned\x07\r\n\x1b[31m[agent] desktop: all good\x1b[0m \
                      \u{202e}gnp.exe\u{9b}31m";
/// The escaped start of [`ATTACK`] as a terminal shows it.
const ATTACK_SHOWN: &str = "hi\\u{1b}[2J";
/// A device name with a title escape and a bidi override.
const EVIL_NAME: &str = "\x1b]0;pwned\x07evil\u{202e}phone\r\n[agent] desktop";

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Runs `deskhand ARGS…` off the runtime's threads (the phones in this process keep syncing).
async fn cli(args: &[&str]) -> Result<Run> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        deskhand(&a)
    })
    .await?
}

async fn ok(args: &[&str]) -> Result<Run> {
    let r = cli(args).await?;
    ensure!(
        r.code == 0,
        "deskhand {args:?} failed ({}):\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    Ok(r)
}

async fn fresh_code(data: &Path) -> Result<String> {
    let r = ok(&["pair", "--data", path(data)]).await?;
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix("pairing payload: "))
        .map(str::to_owned)
        .context("no payload printed")
}

/// This week's conversation document on `node` (where the tests write), loaded.
async fn week(node: &Node) -> Result<deskhand_sync::store::DocKey> {
    Ok(node.conversation_doc_at(now_unix_ms()).await?)
}

/// Waits until `f` holds on `node`'s conversation document of this week.
async fn until(
    node: &Node,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Automerge) -> bool,
) -> Result<()> {
    let key = week(node).await?;
    let holds = || node.read_doc(&key, &f).unwrap_or(false);
    let mut sub = node.subscribe();
    let wait = async {
        while !holds() {
            if sub.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(timeout, wait).await.is_err() || !holds() {
        bail!("timed out after {timeout:?} waiting until {what}");
    }
    Ok(())
}

/// A phone node in this process, paired and holding the workspace.
async fn phone(dir: &Path, payload: &str, name: &str) -> Result<Node> {
    let node = Node::open(NodeConfig::new(dir, NodeRole::Phone)).await?;
    node.pair(&PairingPayload::parse(payload)?, name, "terminal")
        .await?;
    let mut sub = node.subscribe();
    let arrived = async {
        while node.read(|d| Workspace::check_version(d).is_err()) {
            if sub.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), arrived)
        .await
        .is_err()
    {
        bail!("the workspace never arrived");
    }
    Ok(node)
}

/// Waits until the host's console shows a line for which `f` holds; returns all it printed.
async fn console_until(serve: &Serve, what: &str, f: impl Fn(&str) -> bool) -> Result<String> {
    let t = Instant::now();
    loop {
        let out = serve.output();
        if out.lines().any(&f) {
            return Ok(out);
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("the console never showed {what}:\n{out}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nothing a peer could use to drive or fool a terminal, and no line of peer text that passes
/// for the program's own agent line.
fn assert_clean(what: &str, out: &str) -> Result<()> {
    for bad in ['\x1b', '\x07', '\r', '\u{202e}', '\u{9b}'] {
        ensure!(
            !out.contains(bad),
            "{what} printed {bad:?} raw:\n{}",
            out.escape_debug()
        );
    }
    ensure!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("[agent] desktop")),
        "{what}: a line of peer text passes for the program's own:\n{out}"
    );
    Ok(())
}

fn task(prompt: &str, by: &Node) -> Task {
    Task::queued(
        TaskId::from_random(random_id_bytes()),
        prompt,
        &by.id(),
        now_unix_ms(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_text_reaches_no_terminal_raw_and_the_console_prints_each_message_once() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let desk = dir.path().join("desk");
    let serve = Serve::start(&desk, free_udp_addr())?;
    let a = phone(&dir.path().join("a"), &serve.payload, EVIL_NAME).await?;
    let b = dir.path().join("b");
    let code = fresh_code(&desk).await?;
    ok(&["phone", "--data", path(&b), "pair", &code, "--name", "bee"]).await?;

    // Phone A goes offline, does some work (so its ops sort first), and writes the attack; its
    // message will merge *before* B's newer one. Meanwhile B writes and the desktop answers.
    a.set_sync_paused(true);
    for _ in 0..10 {
        let t = task("help", &a);
        a.write_doc(&week(&a).await?, |tx| Workspace::add_task(tx, &t))
            .await?;
    }
    let attack = Message {
        id: MessageId::from_random(random_id_bytes()),
        author: a.id().to_string(),
        role: Role::User,
        text: ATTACK.into(),
        created_at: now_unix_ms(),
        task_id: None,
    };
    a.write_doc(&week(&a).await?, |tx| {
        Workspace::append_message(tx, &attack)
    })
    .await?;
    ok(&[
        "phone",
        "--data",
        path(&b),
        "send",
        "from b while a was away",
    ])
    .await?;
    console_until(&serve, "B's message answered", |l| {
        l.starts_with("[agent]") && l.contains("I don't know \"from\"")
    })
    .await?;
    a.set_sync_paused(false);
    a.sync_now();
    console_until(&serve, "A's message", |l| {
        l.starts_with("[user]") && l.contains(ATTACK_SHOWN)
    })
    .await?;
    // Let the replies to A's tasks arrive too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = serve.output();
    eprintln!("[hostile] the console printed:\n{out}");

    // The premise: A's message landed before B's, not at the end.
    ok(&["phone", "--data", path(&b), "sync"]).await?;
    let shown = ok(&["phone", "--data", path(&b), "show", "--json"]).await?;
    let v: Value = serde_json::from_str(&shown.stdout)?;
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .context("messages")?
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    let at = |t: &str| texts.iter().position(|x| *x == t);
    ensure!(
        at(ATTACK).is_some() && at(ATTACK) < at("from b while a was away"),
        "A's offline message should merge before B's: {texts:?}"
    );
    assert_clean("the JSON of `phone show --json`", &shown.stdout)?;

    // The console: each user message exactly once, nothing raw, nothing that fakes a line.
    let user_lines = |needle: &str| {
        out.lines()
            .filter(|l| l.starts_with("[user]") && l.contains(needle))
            .count()
    };
    ensure!(user_lines(ATTACK_SHOWN) == 1, "A's message once:\n{out}");
    ensure!(
        user_lines("from b while a was away") == 1,
        "B's message once:\n{out}"
    );
    // Index-based, the console re-printed the line that sat at the end (the reply to B).
    ensure!(
        out.lines()
            .filter(|l| l.starts_with("[agent]") && l.contains("I don't know \"from\""))
            .count()
            == 1,
        "an old line was printed again:\n{out}"
    );
    assert_clean("deskhand serve", &out)?;

    // The terminal phone and the device list.
    for args in [
        vec!["phone", "--data", path(&b), "show"],
        vec!["phone", "--data", path(&b), "watch", "--timeout", "2"],
        vec!["devices", "--data", path(&desk)],
        vec!["devices", "--data", path(&desk), "--json"],
        vec!["status", "--data", path(&desk)],
    ] {
        let r = ok(&args).await?;
        assert_clean(&format!("deskhand {}", args.join(" ")), &r.stdout)?;
    }
    let show = ok(&["phone", "--data", path(&b), "show"]).await?;
    ensure!(show.stdout.contains(ATTACK_SHOWN), "{}", show.stdout);
    let devices = ok(&["devices", "--data", path(&desk)]).await?;
    ensure!(devices.stdout.contains("evil"), "{}", devices.stdout);
    a.shutdown().await;
    Ok(())
}

/// A stranger who knows the address: a fresh key for every attempt, bound on `ip`.
async fn stranger(payload: &PairingPayload, ip: &str) -> Result<String> {
    let key = DeviceKey::from_secret_bytes(random_bytes());
    let net = NetConfig::default()
        .with_listen(format!("{ip}:0").parse()?)
        .with_relay(RelaySetting::Off);
    let ep = deskhand_sync::endpoint::bind(&key, &net, vec![]).await?;
    let r = deskhand_sync::pairing::pair_with(&ep, payload, "stranger", "terminal").await;
    ep.close().await;
    match r {
        Ok(_) => bail!("a wrong code was accepted"),
        Err(e) => Ok(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_shut_pairing_and_the_code_image_is_private() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let desk = dir.path().join("desk");
    let serve = Serve::start(&desk, free_udp_addr())?;
    let mode = |p: &Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    ensure!(mode(&serve.png)? == 0o600, "serve's pairing-qr.png");

    // Twelve wrong codes from one address, each from a new endpoint id.
    let mut wrong = PairingPayload::parse(&serve.payload)?;
    wrong.token = PairingToken::from_bytes([0x5a; 16]);
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(stranger(&wrong, "127.0.0.1").await?);
    }
    eprintln!("[pairing] the stranger was told: {answers:#?}");
    ensure!(
        answers[..5]
            .iter()
            .all(|a| a.contains("not valid for this desktop")),
        "{answers:#?}"
    );
    ensure!(
        answers[5..]
            .iter()
            .all(|a| a.contains("too many failed pairing attempts")),
        "{answers:#?}"
    );

    // The valid code still pairs, from the very same address.
    let phone = dir.path().join("phone");
    let t = Instant::now();
    let r = ok(&["phone", "--data", path(&phone), "pair", &serve.payload]).await?;
    ensure!(r.stdout.contains("Paired with"), "{}", r.stdout);
    eprintln!("[pairing] the valid code paired in {:?}", t.elapsed());

    // Another address that mistypes is told what is wrong, not that someone else is limited.
    let other = stranger(&wrong, "127.0.0.2").await?;
    ensure!(other.contains("not valid for this desktop"), "{other}");

    // The flood is in the audit log five times, not twelve (plus the other address once).
    let v: Value = serde_json::from_str(
        &ok(&["devices", "--data", path(&desk), "--json"])
            .await?
            .stdout,
    )?;
    let refused = v["refusals"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["event"] == "pairing_refused").count());
    ensure!(refused == Some(6), "audited refusals: {refused:?} in {v}");

    // `deskhand pair --png` with a relative path: written where the user stands, 0600.
    let cwd = dir.path().join("here");
    std::fs::create_dir_all(&cwd)?;
    let out = tokio::task::spawn_blocking({
        let (cwd, desk) = (cwd.clone(), desk.clone());
        move || {
            std::process::Command::new(deskhand_bin())
                .current_dir(cwd)
                .args(["pair", "--data"])
                .arg(desk)
                .args(["--png", "code.png"])
                .output()
        }
    })
    .await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(mode(&cwd.join("code.png"))? == 0o600, "pair --png");
    drop(serve);
    Ok(())
}

fn summaries(d: &Automerge, by: &Node) -> Vec<(TaskStatus, String)> {
    let me = by.id().to_string();
    let ids: Vec<TaskId> = Workspace::task_statuses(d)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.iter()
        .filter_map(|id| Workspace::task(d, id).ok().flatten())
        .filter(|t| t.created_by == me)
        .map(|t| (t.status, t.result.map(|r| r.summary).unwrap_or_default()))
        .collect()
}

fn pending_approvals(d: &Automerge) -> usize {
    Workspace::approvals(d)
        .unwrap_or_default()
        .values()
        .filter(|a| a.resolution.is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tasks_is_capped_and_does_not_starve_another_phone() -> Result<()> {
    const REFUSED: &str = "too many tasks waiting from this phone (16); it was not run";
    let dir = tempfile::tempdir()?;
    let desk = dir.path().join("desk");
    let serve = Serve::start(&desk, free_udp_addr())?;
    let a = phone(&dir.path().join("a"), &serve.payload, "flood").await?;
    let b = phone(&dir.path().join("b"), &fresh_code(&desk).await?, "patient").await?;

    // Phone A: 500 `run` tasks (each would ask for an approval), one change each.
    let t = Instant::now();
    let wk = week(&a).await?;
    for _ in 0..500 {
        let t = task("run true", &a);
        a.write_doc_queued(&wk, |tx| Workspace::add_task(tx, &t))?;
    }
    a.flush().await?;
    until(
        &a,
        "484 of A's tasks are refused",
        Duration::from_secs(30),
        |d| {
            summaries(d, &a)
                .iter()
                .filter(|(s, why)| *s == TaskStatus::Failed && why == REFUSED)
                .count()
                == 484
        },
    )
    .await?;
    eprintln!("[flood] 484 of 500 tasks refused after {:?}", t.elapsed());

    // Phone B's request runs at once, not behind A's.
    let t = Instant::now();
    let mine = task("list ~", &b);
    b.write_doc(&week(&b).await?, |tx| Workspace::add_task(tx, &mine))
        .await?;
    until(&b, "B's task is done", Duration::from_secs(20), |d| {
        Workspace::task(d, &mine.id)
            .ok()
            .flatten()
            .is_some_and(|t| t.status == TaskStatus::Done)
    })
    .await?;
    let waited = t.elapsed();
    eprintln!("[flood] B's task was done after {waited:?}");
    ensure!(waited < Duration::from_secs(10), "B waited {waited:?}");

    // At most 4 of A's requests wait at once; its other tasks wait their turn, queued.
    until(&a, "4 approval requests", Duration::from_secs(20), |d| {
        pending_approvals(d) == 4
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pending, queued) = a
        .read_doc(&week(&a).await?, |d| {
            (
                pending_approvals(d),
                summaries(d, &a)
                    .iter()
                    .filter(|(s, _)| *s == TaskStatus::Queued)
                    .count(),
            )
        })
        .context("this week is loaded")?;
    ensure!(
        pending == 4 && queued == 12,
        "pending approvals {pending}, queued {queued}"
    );
    let status = ok(&["status", "--data", path(&desk), "--json"]).await?;
    let v: Value = serde_json::from_str(&status.stdout)?;
    ensure!(
        v["executor"]["queued"].as_array().map(Vec::len) == Some(12),
        "{v}"
    );
    a.shutdown().await;
    b.shutdown().await;
    drop(serve);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_data_directory_is_protected_where_it_really_is() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let work = home.join("work");
    std::fs::create_dir_all(&work)?;
    let home_s = path(&home).to_owned();
    // `serve --data desk` run in ~/work: the data lives in ~/work/desk, not ~/desk.
    let serve = Serve::start_in(
        Some(&work),
        Path::new("desk"),
        free_udp_addr(),
        &[("HOME", &home_s)],
        &[],
    )?;
    ensure!(work.join("desk/deskhand.redb").exists(), "data dir");
    let a = phone(&dir.path().join("a"), &serve.payload, "reader").await?;
    for prompt in ["list ~/work/desk", "read ~/work/desk/pairing-qr.png"] {
        let t = task(prompt, &a);
        a.write_doc(&week(&a).await?, |tx| Workspace::add_task(tx, &t))
            .await?;
        until(&a, "the task ends", Duration::from_secs(20), |d| {
            Workspace::task(d, &t.id)
                .ok()
                .flatten()
                .is_some_and(|t| t.status.is_final())
        })
        .await?;
        let done = a
            .read_doc(&week(&a).await?, |d| Workspace::task(d, &t.id))
            .context("this week is loaded")??
            .context("the task")?;
        let why = done.result.map(|r| r.summary).unwrap_or_default();
        eprintln!("[paths] {prompt}: {} — {why}", done.status);
        ensure!(
            done.status == TaskStatus::Failed && why.contains("protected location"),
            "{prompt}: {} {why}",
            done.status
        );
    }
    a.shutdown().await;
    drop(serve);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_requests_per_phone_are_capped_when_tasks_run_side_by_side() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/deskhand"))?;
    std::fs::write(
        home.join(".config/deskhand/config.toml"),
        "max_concurrent_tasks = 8\nmax_approvals_per_phone = 2\n",
    )?;
    let home_s = path(&home).to_owned();
    let desk = dir.path().join("desk");
    let serve = Serve::start_with(&desk, free_udp_addr(), &[("HOME", &home_s)], &[])?;
    let a = phone(&dir.path().join("a"), &serve.payload, "eager").await?;
    // Five `run` tasks in one change: all five start at once, and each asks.
    let tasks: Vec<Task> = (0..5).map(|_| task("run true", &a)).collect();
    a.write_doc(&week(&a).await?, |tx| {
        tasks.iter().try_for_each(|t| Workspace::add_task(tx, t))
    })
    .await?;
    const CAPPED: &str =
        "too many approval requests waiting from this phone (2); this call was not asked";
    until(
        &a,
        "3 tasks fail at the cap",
        Duration::from_secs(20),
        |d| {
            summaries(d, &a)
                .iter()
                .filter(|(s, why)| *s == TaskStatus::Failed && why.contains(CAPPED))
                .count()
                == 3
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = a
        .read_doc(&week(&a).await?, pending_approvals)
        .context("this week is loaded")?;
    ensure!(pending == 2, "pending approvals: {pending}");
    a.shutdown().await;
    drop(serve);
    Ok(())
}
