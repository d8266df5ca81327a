//! The desktop does the work: a real `deskhand serve` process (with a temporary HOME) and a phone
//! process, relays off, on loopback. Tasks, policy decisions and signed approvals, end to end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use deskhand_tests::{NodeProc, Serve, deskhand, free_udp_addr};
use serde_json::{Value, json};

/// A desktop host with its own HOME, and one paired phone.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub serve: Option<Serve>,
    pub phone: NodeProc,
    listen: std::net::SocketAddr,
    env: Vec<(String, String)>,
}

fn node_bin() -> PathBuf {
    deskhand_tests::deskhand_bin().with_file_name("deskhand-node")
}

impl Rig {
    pub fn new(config: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/deskhand"))?;
        std::fs::write(home.join(".config/deskhand/config.toml"), config)?;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("HOME".into(), home.display().to_string()));
        let listen = free_udp_addr();
        let serve = start(&dir.path().join("desk"), listen, &env)?;
        let mut phone = NodeProc::spawn(&node_bin(), &dir.path().join("phone"), "phone", None)?;
        phone.ok(json!({"cmd": "pair", "payload": serve.payload, "name": "test-phone"}))?;
        phone.wait_doc()?;
        Ok(Self {
            dir,
            home,
            serve: Some(serve),
            phone,
            listen,
            env,
        })
    }

    pub fn restart(&mut self) -> Result<()> {
        self.serve = Some(start(
            &self.dir.path().join("desk"),
            self.listen,
            &self.env,
        )?);
        Ok(())
    }

    /// Starts the host again with extra environment (a crash test's `DESKHAND_CRASH_AT`).
    pub fn restart_with(&mut self, extra: &[(&str, &str)]) -> Result<()> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.serve = Some(start(&self.dir.path().join("desk"), self.listen, &env)?);
        Ok(())
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("desk")
    }

    /// Sends a command as a conversation message; returns the task it becomes.
    pub fn say(&mut self, text: &str) -> Result<String> {
        let id = self.phone.send(text)?;
        Ok(format!("m-{id}"))
    }

    pub fn wait_task(&mut self, task: &str, status: &[&str], timeout_ms: u64) -> Result<Value> {
        let v = self.phone.call(
            json!({"cmd": "wait_task", "task": task, "status": status, "timeout_ms": timeout_ms}),
        )?;
        ensure!(
            v["ok"] == true,
            "task {task} did not reach {status:?} within {timeout_ms} ms: {}",
            v["task"]
        );
        Ok(v["task"].clone())
    }

    pub fn finished(&mut self, task: &str) -> Result<Value> {
        self.wait_task(task, &[], 20_000)
    }

    pub fn approval(&mut self, task: &str) -> Result<Value> {
        let v = self
            .phone
            .call(json!({"cmd": "wait_approval", "task": task, "timeout_ms": 20_000}))?;
        ensure!(v["ok"] == true, "no approval request for task {task}");
        Ok(v["approval"].clone())
    }

    /// The task's next approval request, once `seen` (decided already) is out of the way.
    pub fn approval_other_than(&mut self, task: &str, seen: &Value) -> Result<Value> {
        let v = self
            .phone
            .call(json!({"cmd": "wait_approval", "task": task,
            "except": seen["id"], "timeout_ms": 20_000}))?;
        ensure!(
            v["ok"] == true,
            "no second approval request for task {task}"
        );
        Ok(v["approval"].clone())
    }

    pub fn decide(&mut self, approval: &Value, verdict: &str, forge: Option<Value>) -> Result<()> {
        let mut cmd = json!({"cmd": "decide", "approval": approval["id"], "verdict": verdict});
        if let Some(Value::Object(extra)) = forge {
            for (k, v) in extra {
                cmd[k] = v;
            }
        }
        self.phone.ok(cmd)?;
        Ok(())
    }
}

fn start(data: &Path, listen: std::net::SocketAddr, env: &[(String, String)]) -> Result<Serve> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Serve::start_with(data, listen, &env, &[])
}

pub(crate) fn status(task: &Value) -> &str {
    task["status"].as_str().unwrap_or_default()
}

pub(crate) fn summary(task: &Value) -> String {
    task["result"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn files(home: &Path) -> Result<()> {
    let docs = home.join("docs");
    std::fs::create_dir_all(docs.join("reports/2025"))?;
    std::fs::write(docs.join("notes.txt"), "first line of notes\nsecond line\n")?;
    std::fs::write(docs.join("reports/q1.pdf"), vec![0u8; 2048])?;
    std::fs::write(docs.join("reports/2025/q2.pdf"), vec![1u8; 4096])?;
    std::fs::write(docs.join("reports/summary.md"), "# Summary\n")?;
    std::fs::create_dir_all(home.join(".ssh"))?;
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY")?;
    Ok(())
}

#[test]
fn a_phone_lists_summarizes_and_finds_and_gets_correct_results() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;

    let t = rig.say("list ~/docs")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    let s = summary(&task);
    assert!(s.contains("reports/") && s.contains("notes.txt"), "{s}");
    assert!(task["claimed_by"].is_string() && task["started_at"].is_i64());

    let t = rig.say("summarize ~/docs")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    let s = summary(&task);
    assert!(s.contains("4 files"), "summary counts the four files: {s}");
    assert!(
        s.contains("first line of notes"),
        "summary shows first lines: {s}"
    );

    let t = rig.say("find *.pdf in ~/docs")?;
    let task = rig.finished(&t)?;
    let s = summary(&task);
    assert!(s.contains("2 matches"), "{s}");
    assert!(
        s.contains("~/docs/reports/q1.pdf") && s.contains("~/docs/reports/2025/q2.pdf"),
        "{s}"
    );

    // The home listing hides the secret folder; a task created directly (not a message) runs too.
    let v = rig.phone.ok(json!({"cmd": "task", "prompt": "list ~"}))?;
    let task = rig.finished(v["id"].as_str().context("id")?)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("docs/"), "{}", summary(&task));
    assert!(!summary(&task).contains(".ssh"), "{}", summary(&task));

    // Unknown input gets a helpful answer, not an error.
    let t = rig.say("please tidy up")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done");
    assert!(summary(&task).contains("list PATH"), "{}", summary(&task));

    // The agent's reply is in the conversation, linked to its task.
    let state = rig.phone.state()?;
    let n = state["messages"].as_array().map(Vec::len).unwrap_or(0);
    assert!(n >= 9, "five user messages and their replies: {state}");
    Ok(())
}

#[test]
fn trash_waits_for_a_signed_approval_restore_brings_it_back_and_deny_leaves_it() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;
    let notes = rig.home.join("docs/notes.txt");

    let t = rig.say("trash ~/docs/notes.txt")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "trash");
    assert!(
        approval["summary"]
            .as_str()
            .is_some_and(|s| s.contains("~/docs/notes.txt")),
        "{approval}"
    );
    rig.wait_task(&t, &["waiting_approval"], 10_000)?;
    assert!(notes.exists(), "nothing happens before the approval");
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(!notes.exists(), "the file left its place");
    let id = summary(&task)
        .rsplit(' ')
        .next()
        .context("trash id in the reply")?
        .to_owned();

    let data = rig.data();
    let r = deskhand(&["trash", "--data", data.to_str().context("utf8")?, "list"])?;
    assert!(r.stdout.contains(&id), "{}", r.stdout);
    let r = deskhand(&[
        "trash",
        "--data",
        data.to_str().context("utf8")?,
        "restore",
        &id,
    ])?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&notes)?,
        "first line of notes\nsecond line\n"
    );

    let t = rig.say("trash ~/docs/notes.txt")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "deny", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains("not approved"),
        "{}",
        summary(&task)
    );
    assert!(notes.exists(), "a denied trash leaves the file in place");
    let approvals = rig.phone.ok(json!({"cmd": "approvals"}))?;
    let resolved = &approvals["approvals"][approval["id"].as_str().context("id")?];
    assert_eq!(resolved["resolution"]["verdict"], "deny", "{resolved}");
    Ok(())
}

/// Issue 14, item 3: mkdir, copy and write from the command language wait for a phone's signed
/// approval and land on disk as the approval said; a copy that would carry a secret is never
/// asked; grep finds lines by content.
#[test]
fn mkdir_copy_and_write_run_after_a_signed_approval_and_land_on_disk() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;
    let year = rig.home.join("docs/Taxes/2026");

    let t = rig.say("mkdir ~/docs/Taxes/2026")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "mkdir", "{approval}");
    assert_eq!(
        approval["summary"],
        "Create the folder ~/docs/Taxes/2026 and the missing folders above it"
    );
    rig.wait_task(&t, &["waiting_approval"], 10_000)?;
    ensure!(!year.exists(), "nothing happens before the approval");
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(year.is_dir());

    let t = rig.say("copy ~/docs/reports ~/docs/Taxes/2026")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "copy", "{approval}");
    assert_eq!(
        approval["summary"],
        "Copy ~/docs/reports and everything in it to ~/docs/Taxes/2026/reports"
    );
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert_eq!(
        std::fs::read(year.join("reports/2025/q2.pdf"))?,
        vec![1u8; 4096]
    );
    assert_eq!(
        std::fs::read(year.join("reports/summary.md"))?,
        b"# Summary\n"
    );
    assert!(
        rig.home.join("docs/reports/q1.pdf").exists(),
        "a copy keeps the source"
    );

    let t = rig.say("write ~/docs/Taxes/2026/total.txt Total: 42 EUR")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "write", "{approval}");
    assert!(
        approval["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("Create ~/docs/Taxes/2026/total.txt with 13 bytes")),
        "{approval}"
    );
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert_eq!(
        std::fs::read_to_string(year.join("total.txt"))?,
        "Total: 42 EUR"
    );

    // A copy carrying a secret is denied without asking.
    std::fs::create_dir_all(rig.home.join("docs/app"))?;
    std::fs::write(rig.home.join("docs/app/.env"), "TOKEN=1")?;
    let t = rig.say("copy ~/docs/app ~/docs/app-copy")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains("~/docs/app holds ~/docs/app/.env"),
        "{}",
        summary(&task)
    );
    assert!(!rig.home.join("docs/app-copy").exists());

    let t = rig.say("grep \"SECOND LINE\" in ~/docs")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(
        summary(&task).contains("~/docs/notes.txt:2: second line"),
        "{}",
        summary(&task)
    );
    Ok(())
}

#[test]
fn forged_replayed_and_expired_approvals_are_not_acted_on() -> Result<()> {
    let mut rig = Rig::new("approval_timeout_secs = 4\n", &[])?;
    files(&rig.home)?;
    let target = rig.home.join("docs/notes.txt");

    // A first request, approved honestly, gives a signature to replay later.
    let t0 = rig.say("run true")?;
    let first = rig.approval(&t0)?;
    rig.decide(&first, "approve", None)?;
    assert_eq!(status(&rig.finished(&t0)?), "done");

    let t = rig.say("trash ~/docs/notes.txt")?;
    let approval = rig.approval(&t)?;
    for forge in [
        json!({"forge": "bad_signature"}),
        json!({"forge": "replay", "from": first["id"]}),
        json!({"forge": "other_desktop"}),
    ] {
        rig.decide(&approval, "approve", Some(forge.clone()))?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        let task = rig.wait_task(&t, &["waiting_approval"], 5_000)?;
        assert_eq!(status(&task), "waiting_approval", "{forge}: {task}");
        assert!(target.exists(), "{forge} must not be acted on");
    }
    // Nobody decides validly: it expires, which is a deny.
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(target.exists());
    let approvals = rig.phone.ok(json!({"cmd": "approvals"}))?;
    let a = &approvals["approvals"][approval["id"].as_str().context("id")?];
    assert_eq!(a["resolution"]["verdict"], "deny");
    assert_eq!(a["resolution"]["by"], "expired", "{a}");
    // A valid approve arriving after expiry changes nothing.
    rig.decide(&approval, "approve", None)?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(target.exists());
    Ok(())
}

#[test]
fn secrets_and_escapes_are_denied_even_when_approval_is_offered() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;
    let outside = rig.dir.path().join("outside");
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("secret.txt"), "outside the roots")?;
    std::os::unix::fs::symlink(&outside, rig.home.join("docs/link"))?;
    std::os::unix::fs::symlink(rig.home.join(".ssh"), rig.home.join("docs/keys"))?;
    std::fs::write(rig.home.join("docs/.env"), "TOKEN=abc")?;

    for (cmd, why) in [
        ("read ~/.ssh/id_ed25519", "secret location"),
        ("read ~/docs/keys/id_ed25519", "secret location"),
        ("read ~/docs/link/secret.txt", "outside the folders"),
        (
            "read ~/docs/../../outside/secret.txt",
            "outside the folders",
        ),
        ("read ~/docs/.env", "secret location"),
        ("trash ~/.ssh/id_ed25519", "secret location"),
        ("move ~/docs/notes.txt ~/.ssh/", "secret location"),
        (
            "list ~/.local/share/../../../outside",
            "outside the folders",
        ),
    ] {
        let t = rig.say(cmd)?;
        let task = rig.finished(&t)?;
        assert_eq!(status(&task), "failed", "{cmd}: {task}");
        assert!(summary(&task).contains(why), "{cmd}: {}", summary(&task));
        assert!(
            !summary(&task).contains("PRIVATE KEY")
                && !summary(&task).contains("outside the roots\n")
        );
    }
    // Denied before any request is written: there is nothing to approve.
    let approvals = rig.phone.ok(json!({"cmd": "approvals"}))?;
    assert_eq!(
        approvals["approvals"].as_object().map(|m| m.len()),
        Some(0),
        "{approvals}"
    );
    assert!(rig.home.join(".ssh/id_ed25519").exists());
    assert!(rig.home.join("docs/notes.txt").exists());
    Ok(())
}

#[test]
fn the_readme_allow_rule_covers_git_status_only_and_an_approved_command_cannot_read_the_key()
-> Result<()> {
    let mut rig = Rig::new("[permissions]\nallow = [\"run(git status*)\"]\n", &[])?;
    files(&rig.home)?;
    let approvals = |rig: &mut Rig| -> Result<usize> {
        let v = rig.phone.ok(json!({"cmd": "approvals"}))?;
        Ok(v["approvals"].as_object().map_or(0, |m| m.len()))
    };

    // The rule covers `git status` itself: it runs without a request.
    let t = rig.say("run git status --short")?;
    let task = rig.finished(&t)?;
    assert!(summary(&task).contains("git status --short"), "{task}");
    assert_eq!(approvals(&mut rig)?, 0);

    // The red team's line is not `git status`: it needs an approval.
    let t = rig.say("run git status; cd .ssh; cat id_ed25519")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "run");
    // Approved, it still cannot read the key, nor can a shell it starts.
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains("Permission denied"),
        "{}",
        summary(&task)
    );
    assert!(!task.to_string().contains("PRIVATE KEY"), "{task}");

    let t = rig.say("run sh -c 'cat ~/.ssh/id_ed25519' || echo refused")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("Permission denied") && summary(&task).contains("refused"));
    assert!(!task.to_string().contains("PRIVATE KEY"), "{task}");
    Ok(())
}

#[test]
fn an_approved_command_cannot_drive_the_host_through_its_control_socket() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    let data = rig.data();
    std::fs::create_dir_all(rig.home.join("work"))?;
    // A same-user program with a socket library: it reaches the socket, not the token.
    std::fs::write(
        rig.home.join("work/probe.py"),
        "import socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect(sys.argv[1])\n\
         s.sendall(b'{\"cmd\": \"pair\", \"png\": \"' + sys.argv[2].encode() + b'\"}\\n')\n\
         print(s.recv(65536).decode())\n",
    )?;
    let planted = rig.home.join("work/planted.png");
    let cmd = format!(
        "run python3 ~/work/probe.py {} {}; cat {}",
        data.join("control.sock").display(),
        planted.display(),
        data.join("control.token").display()
    );
    let t = rig.say(&cmd)?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    let s = summary(&task);
    assert!(s.contains("refused: the request does not carry"), "{s}");
    assert!(s.contains("Permission denied"), "{s}");
    assert!(!s.contains("deskhand://pair"), "{s}");
    assert!(
        !planted.exists(),
        "the host wrote a file for the sandboxed command"
    );
    // The owner's own commands still work.
    let r = deskhand(&["status", "--data", data.to_str().context("utf8")?, "--json"])?;
    assert_eq!(r.code, 0, "{}", r.stderr);
    Ok(())
}

#[test]
fn cancel_stops_a_running_shell_command() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    // In the sandbox nothing new can be made directly in ~ (it holds ~/.ssh): use a folder.
    std::fs::create_dir_all(rig.home.join("work"))?;
    let t = rig.say("run echo started > ~/work/started; sleep 30; echo late > ~/work/late")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    rig.wait_task(&t, &["running"], 10_000)?;
    let started = rig.home.join("work/started");
    let t0 = std::time::Instant::now();
    while !started.exists() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(started.exists(), "the command never started");
    rig.phone.ok(json!({"cmd": "cancel", "task": t}))?;
    let task = rig.wait_task(&t, &["cancelled"], 10_000)?;
    assert_eq!(status(&task), "cancelled");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !rig.home.join("work/late").exists(),
        "the command was stopped"
    );
    Ok(())
}

#[test]
fn kill9_during_a_task_leaves_it_interrupted_and_it_never_runs_twice() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    std::fs::create_dir_all(rig.home.join("work"))?;
    let t = rig.say("run echo once >> ~/work/count; sleep 30")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    let count = rig.home.join("work/count");
    let t0 = std::time::Instant::now();
    while !count.exists() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(count.exists(), "the command never ran");
    rig.serve.take().context("serve")?.kill9()?;
    rig.restart()?;
    rig.phone.ok(json!({"cmd": "sync_now"}))?;
    let task = rig.wait_task(&t, &["interrupted"], 15_000)?;
    assert!(task["events"].to_string().contains("not resumed"), "{task}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        std::fs::read_to_string(&count)?,
        "once\n",
        "the action ran exactly once"
    );
    // The desktop still works after the restart.
    let t = rig.say("list ~")?;
    assert_eq!(status(&rig.finished(&t)?), "done");
    Ok(())
}

/// Issue 12, findings 3 and 9: a move or trash is judged by what it carries (secrets inside, rules
/// on sub-paths), and secrets are known by a wide list of names and by file identity.
#[test]
fn file_tools_cannot_carry_a_secret_out() -> Result<()> {
    let mut rig = Rig::new(
        "[permissions]\ndeny = [\"trash(~/docs/reports/2025/**)\"]\n",
        &[],
    )?;
    files(&rig.home)?;
    let home = rig.home.clone();
    std::fs::create_dir_all(home.join(".docker"))?;
    std::fs::write(
        home.join(".docker/config.json"),
        r#"{"auths":{"registry":{"auth":"REGISTRYTOKEN"}}}"#,
    )?;
    std::fs::create_dir_all(home.join(".config/gcloud"))?;
    std::fs::write(home.join(".config/gcloud/credentials.db"), "GCLOUDTOKEN")?;
    std::fs::write(
        home.join(".git-credentials"),
        "https://u:GITTOKEN@example.org",
    )?;
    std::fs::write(home.join("docs/prod.env"), "DB_PASSWORD=ENVTOKEN")?;
    std::fs::hard_link(
        home.join(".ssh/id_ed25519"),
        home.join("docs/notes-copy.txt"),
    )?;

    for (cmd, why) in [
        ("move ~/.docker ~/dk", "~/.docker is a secret location"),
        ("move ~/.config ~/cfg", "~/.config holds ~/.config/"),
        ("trash ~", "~ holds ~/."),
        ("trash ~/docs/reports", "trash(~/docs/reports/2025/**)"),
        (
            "read ~/.git-credentials",
            "secret location (.git-credentials)",
        ),
        ("read ~/docs/prod.env", "secret location (*.env)"),
        (
            "read ~/docs/notes-copy.txt",
            "same file as ~/.ssh/id_ed25519",
        ),
        (
            "move ~/docs/notes-copy.txt ~/Public.txt",
            "same file as ~/.ssh/id_ed25519",
        ),
    ] {
        let t = rig.say(cmd)?;
        let task = rig.finished(&t)?;
        let s = summary(&task);
        assert_eq!(status(&task), "failed", "{cmd}: {task}");
        assert!(s.contains(why), "{cmd}: {s}");
        for secret in [
            "REGISTRYTOKEN",
            "GCLOUDTOKEN",
            "GITTOKEN",
            "ENVTOKEN",
            "PRIVATE KEY",
        ] {
            assert!(!s.contains(secret), "{cmd} leaked {secret}: {s}");
        }
    }
    // Denied before any request is written: there was nothing to approve.
    let approvals = rig.phone.ok(json!({"cmd": "approvals"}))?;
    assert_eq!(
        approvals["approvals"].as_object().map(|m| m.len()),
        Some(0),
        "{approvals}"
    );
    assert!(home.join(".docker/config.json").exists());
    assert!(home.join(".config/gcloud/credentials.db").exists());
    assert!(home.join(".ssh/id_ed25519").exists());

    // A summary never previews the hard link, nor names the env file.
    let t = rig.say("summarize ~/docs")?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    let s = summary(&task);
    assert!(!s.contains("PRIVATE KEY") && !s.contains("prod.env"), "{s}");
    assert!(s.contains("first line of notes"), "{s}");

    // Errors show paths as replies do (issue 13).
    let t = rig.say("read ~/docs/missing.txt")?;
    let s = summary(&rig.finished(&t)?);
    assert_eq!(s, "`~/docs/missing.txt` does not exist", "{s}");
    Ok(())
}

/// Issue 12, finding 8: a rule on `read` governs every tool that reads content.
#[test]
fn a_read_rule_governs_summarize_too() -> Result<()> {
    let mut rig = Rig::new("[permissions]\nask = [\"read(~/Private/**)\"]\n", &[])?;
    std::fs::create_dir_all(rig.home.join("Private"))?;
    std::fs::write(rig.home.join("Private/diary.txt"), "Dear diary, today I\n")?;
    let t = rig.say("summarize ~/Private")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "summarize", "{approval}");
    let task = rig.wait_task(&t, &["waiting_approval"], 10_000)?;
    assert!(!task.to_string().contains("Dear diary"), "{task}");
    rig.decide(&approval, "deny", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(!summary(&task).contains("Dear diary"), "{}", summary(&task));
    // Reading it directly asks too; approved, it runs.
    let t = rig.say("read ~/Private/diary.txt")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert!(summary(&task).contains("Dear diary"), "{}", summary(&task));
    Ok(())
}

/// Issue 12, finding 16: a FIFO is refused at once (it used to block the executor for good),
/// and the next task runs.
#[test]
fn reading_a_fifo_is_refused_at_once_and_the_next_task_runs() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;
    let made = std::process::Command::new("mkfifo")
        .arg(rig.home.join("pipe"))
        .status()?;
    ensure!(made.success(), "mkfifo failed");
    let t = rig.say("read ~/pipe")?;
    let task = rig.wait_task(&t, &[], 10_000)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains("`~/pipe` is a named pipe (FIFO)"),
        "{}",
        summary(&task)
    );
    let t = rig.say("read ~/docs/notes.txt")?;
    let task = rig.wait_task(&t, &[], 10_000)?;
    assert_eq!(status(&task), "done", "{task}");
    Ok(())
}

/// Issue 12: a move into a place whose files run later is risk high and says so.
#[test]
fn a_move_into_a_persistence_location_is_high_risk() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    files(&rig.home)?;
    std::fs::create_dir_all(rig.home.join(".config/autostart"))?;
    let t = rig.say("move ~/docs/notes.txt ~/.config/autostart/notes.desktop")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["risk"], "high", "{approval}");
    let s = approval["summary"].as_str().unwrap_or_default();
    assert!(
        s.contains("persistence location (~/.config/autostart"),
        "{approval}"
    );
    rig.decide(&approval, "deny", None)?;
    assert_eq!(status(&rig.finished(&t)?), "failed");
    assert!(rig.home.join("docs/notes.txt").exists());
    Ok(())
}

/// Issue 13, items 7 and 9, against a real `deskhand serve`: paths with ` in ` and quotes, and
/// the approval summary of a long command.
#[test]
fn quoted_and_ambiguous_paths_work_and_long_commands_are_summarized_by_head_and_tail() -> Result<()>
{
    let mut rig = Rig::new("", &[])?;
    let notes = rig.home.join("Notes in Progress");
    std::fs::create_dir_all(&notes)?;
    std::fs::write(notes.join("a b.txt"), "the line inside a b\n")?;
    std::fs::write(notes.join("c.txt"), "c\n")?;

    // Observed: looked in ~/Progress.
    let t = rig.say("find *.txt in ~/Notes in Progress")?;
    let task = rig.finished(&t)?;
    let s = summary(&task);
    assert_eq!(status(&task), "done", "{task}");
    assert!(
        s.contains("2 matches") && s.contains("~/Notes in Progress/a b.txt"),
        "{s}"
    );
    // Observed: looked for a path holding the quotes.
    let t = rig.say(r#"read "~/Notes in Progress/a b.txt""#)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("the line inside a b"), "{task}");
    let t = rig.say(r"read ~/Notes\ in\ Progress/a\ b.txt")?;
    assert!(summary(&rig.finished(&t)?).contains("the line inside a b"));
    // Both readings exist: the answer asks for quotes.
    std::fs::create_dir_all(rig.home.join("Progress"))?;
    let t = rig.say("find *.txt in ~/Notes in Progress")?;
    let s = summary(&rig.finished(&t)?);
    assert!(
        s.contains("Put quotes") && s.contains(r#"find *.txt in "~/Notes in Progress""#),
        "{s}"
    );

    // A 20 KB command: the summary shows its head and its end; the signed args hold it all.
    let command = format!("echo {} ; echo THE-END", "x".repeat(20 * 1024));
    let t = rig.say(&format!("run {command}"))?;
    let approval = rig.approval(&t)?;
    let shown = approval["summary"].as_str().context("summary")?;
    assert!(shown.len() < 300, "{} bytes", shown.len());
    assert!(
        shown.starts_with("Run `echo xxx")
            && shown.contains("…")
            && shown.contains("echo THE-END` (20 KB) in a shell"),
        "{shown}"
    );
    let args: Value = serde_json::from_str(approval["args"].as_str().context("args")?)?;
    assert_eq!(args["command"], command.as_str());
    rig.decide(&approval, "deny", None)?;
    rig.finished(&t)?;
    Ok(())
}

/// An X display that accepts connections and never answers, like a display (or a network file
/// system) that hangs: a screenshot blocks in the X handshake, in the operating system, for
/// real. `DISPLAY` is `127.0.0.1:N` (TCP port 6000 + N).
struct SilentDisplay {
    display: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentDisplay {
    fn start() -> Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (listener, n) = (100..400)
            .find_map(|n| {
                std::net::TcpListener::bind(("127.0.0.1", 6000 + n))
                    .ok()
                    .map(|l| (l, n))
            })
            .context("no free X display port")?;
        listener.set_nonblocking(true)?;
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (count, stopped) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        held.push(conn);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            display: format!("127.0.0.1:{n}"),
            accepted,
            stop,
        })
    }

    /// Waits until `n` clients have connected (a screenshot is then stuck in the handshake).
    fn wait_clients(&self, n: usize) -> Result<()> {
        let t0 = std::time::Instant::now();
        while self.accepted.load(std::sync::atomic::Ordering::SeqCst) < n {
            ensure!(
                t0.elapsed().as_secs() < 20,
                "the screenshot never connected to the display"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for SilentDisplay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Issue 13, item 4: a tool call stuck in the operating system. Another task runs meanwhile, a
/// cancel from the phone ends it `cancelled` within seconds, SIGTERM ends `serve` within
/// seconds while one is stuck, and after a restart that task shows `interrupted`.
#[test]
fn a_stuck_tool_call_is_cancelled_blocks_no_other_task_and_sigterm_still_stops_the_host()
-> Result<()> {
    let x = SilentDisplay::start()?;
    let mut rig = Rig::new(
        "max_concurrent_tasks = 2\n",
        &[("DISPLAY", &x.display), ("XDG_SESSION_TYPE", "x11")],
    )?;
    files(&rig.home)?;
    let stuck = rig.say("screenshot")?;
    rig.wait_task(&stuck, &["running"], 10_000)?;
    x.wait_clients(1)?;
    // Another task runs and finishes while the screenshot is stuck.
    let t = rig.say("read ~/docs/notes.txt")?;
    let task = rig.wait_task(&t, &[], 20_000)?;
    assert_eq!(status(&task), "done", "{task}");
    let still = rig.wait_task(&stuck, &["running"], 1_000)?;
    assert_eq!(status(&still), "running", "{still}");
    // Cancelled from the phone: it stops at once (well within 10 s on a loaded machine).
    let asked = std::time::Instant::now();
    rig.phone.ok(json!({"cmd": "cancel", "task": stuck}))?;
    let task = rig.wait_task(&stuck, &["cancelled"], 10_000)?;
    assert_eq!(status(&task), "cancelled", "{task}");
    eprintln!(
        "[stuck] cancelled {:?} after the phone asked",
        asked.elapsed()
    );
    assert!(asked.elapsed().as_secs() < 10, "{:?}", asked.elapsed());
    // The desktop still works.
    let t = rig.say("list ~/docs")?;
    assert_eq!(status(&rig.finished(&t)?), "done");
    // Stuck again, then SIGTERM: the host exits within seconds all the same.
    let stuck = rig.say("screenshot")?;
    rig.wait_task(&stuck, &["running"], 10_000)?;
    x.wait_clients(2)?;
    let serve = rig.serve.take().context("serve")?;
    let took = serve.terminate(std::time::Duration::from_secs(10))?;
    eprintln!("[stuck] deskhand serve exited {took:?} after SIGTERM");
    assert!(
        took.is_some(),
        "deskhand serve did not exit within 10 s of SIGTERM"
    );
    // After a restart the task it could not finish is `interrupted`, never re-run.
    rig.restart()?;
    rig.phone.ok(json!({"cmd": "sync_now"}))?;
    let task = rig.wait_task(&stuck, &["interrupted"], 15_000)?;
    assert_eq!(status(&task), "interrupted", "{task}");
    Ok(())
}

/// Issue 13, item 4: every tool call has a time limit (`tool_timeout_secs`); a call past it is
/// abandoned with a clear reply, and the next task (waiting for the only slot) runs.
#[test]
fn a_tool_call_past_its_time_limit_fails_clearly_and_frees_its_slot() -> Result<()> {
    let x = SilentDisplay::start()?;
    let mut rig = Rig::new(
        "tool_timeout_secs = 2\n",
        &[("DISPLAY", &x.display), ("XDG_SESSION_TYPE", "x11")],
    )?;
    files(&rig.home)?;
    let stuck = rig.say("screenshot")?;
    let next = rig.say("read ~/docs/notes.txt")?;
    let task = rig.wait_task(&stuck, &[], 30_000)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains(
            "`screenshot` did not finish within 2 s and was abandoned (a file system, device or \
             display that does not answer?)"
        ),
        "{}",
        summary(&task)
    );
    let task = rig.wait_task(&next, &[], 20_000)?;
    assert_eq!(status(&task), "done", "{task}");
    Ok(())
}

/// Issue 13, item 4: SIGTERM ends `serve` within seconds while a shell command that ignores
/// SIGTERM runs: its process group is killed, and the task is `interrupted` after a restart.
#[test]
fn sigterm_stops_the_host_and_a_command_that_ignores_sigterm() -> Result<()> {
    let mut rig = Rig::new("", &[])?;
    std::fs::create_dir_all(rig.home.join("work"))?;
    let t = rig.say("run trap : TERM; echo $$ > ~/work/pid; while :; do sleep 1; done")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    rig.wait_task(&t, &["running"], 10_000)?;
    let pid_file = rig.home.join("work/pid");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n'))
        && t0.elapsed().as_secs() < 10
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let serve = rig.serve.take().context("serve")?;
    let took = serve.terminate(std::time::Duration::from_secs(10))?;
    eprintln!("[sigterm] deskhand serve exited {took:?} after SIGTERM");
    assert!(
        took.is_some(),
        "deskhand serve did not exit within 10 s of SIGTERM"
    );
    // The shell is gone (or a zombie nobody reaped yet in a container): not running.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
        .flatten();
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the command's shell (pid {pid}) still runs: state {state:?}"
    );
    rig.restart()?;
    rig.phone.ok(json!({"cmd": "sync_now"}))?;
    let task = rig.wait_task(&t, &["interrupted"], 15_000)?;
    assert_eq!(status(&task), "interrupted", "{task}");
    Ok(())
}
