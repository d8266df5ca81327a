//! Connectors end to end: a real `deskhand serve` whose config names the reference filesystem
//! MCP server (npm, installed by `scripts/mcp-servers`), driven from a paired phone with the
//! built-in agent's `call TOOL {JSON}`, through the same policy and signed approvals as every
//! other tool.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use serde_json::Value;

use super::executor::Rig;

fn npm() -> PathBuf {
    let dir = std::env::var_os("DESKHAND_NPM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/npm"));
    assert!(
        dir.join("node_modules/.bin/mcp-server-filesystem").exists(),
        "the MCP servers are not installed in {}: run scripts/mcp-servers first",
        dir.display()
    );
    dir
}

use crate::executor::{status, summary};

/// Two connectors on the same server program, rooted at the desktop's home (`cwd = "~"`):
/// `files` untrusted, `trusted` trusted.
fn config() -> String {
    let bin = npm().join("node_modules/.bin/mcp-server-filesystem");
    let server = |name: &str, trusted: bool| {
        format!(
            "[mcp_servers.{name}]\ncommand = {bin:?}\nargs = [\".\"]\ncwd = \"~\"\ntrusted = {trusted}\n",
            bin = bin.display().to_string()
        )
    };
    format!("{}\n{}", server("files", false), server("trusted", true))
}

#[test]
fn a_connector_write_waits_for_a_signed_approval_reads_ask_unless_trusted_and_secrets_never_reach_it()
-> Result<()> {
    let mut rig = Rig::new(&config(), &[])?;
    let docs = rig.home.join("docs");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(docs.join("notes.txt"), "first line of notes\n")?;
    std::fs::create_dir_all(rig.home.join(".ssh"))?;
    std::fs::write(rig.home.join(".ssh/id_ed25519"), "PRIVATE KEY")?;
    let new = docs.join("new.txt");

    // A write: asked, shown exactly, high risk; nothing happens before a phone signs.
    let t = rig.say(
        r#"call mcp__files__write_file {"path": "~/docs/new.txt", "content": "written by a connector"}"#,
    )?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "mcp__files__write_file", "{approval}");
    assert_eq!(approval["risk"], "high", "{approval}");
    let s = approval["summary"].as_str().unwrap_or_default();
    assert_eq!(
        s,
        r#"Use write_file of connector files with {"content":"written by a connector","path":"~/docs/new.txt"} (paths: ~/docs/new.txt)"#,
        "{approval}"
    );
    let args: Value = serde_json::from_str(approval["args"].as_str().unwrap_or("null"))?;
    assert_eq!(
        args["path"], "~/docs/new.txt",
        "the arguments sent are the ones signed"
    );
    rig.wait_task(&t, &["waiting_approval"], 10_000)?;
    ensure!(!new.exists(), "nothing is written before the approval");
    rig.decide(&approval, "approve", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert_eq!(std::fs::read_to_string(&new)?, "written by a connector");

    // A read from an untrusted server asks; a deny is final.
    let t = rig.say(r#"call mcp__files__read_text_file {"path": "~/docs/notes.txt"}"#)?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["risk"], "low", "{approval}");
    rig.decide(&approval, "deny", None)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    assert!(
        summary(&task).contains("not approved"),
        "{}",
        summary(&task)
    );

    // The same read from a trusted server runs without asking.
    let t = rig.say(r#"call mcp__trusted__read_text_file {"path": "~/docs/notes.txt"}"#)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("first line of notes"), "{task}");

    // The second wall: the server could read the key (its root is home), but the call is denied
    // before it is sent, even from the trusted server, and no approval is offered.
    for call in [
        r#"call mcp__trusted__read_text_file {"path": "~/.ssh/id_ed25519"}"#,
        r#"call mcp__trusted__read_multiple_files {"paths": ["~/docs/notes.txt", "~/.ssh/id_ed25519"]}"#,
        r#"call mcp__files__move_file {"source": "~/.ssh/id_ed25519", "destination": "~/docs/key"}"#,
    ] {
        let t = rig.say(call)?;
        let task = rig.finished(&t)?;
        assert_eq!(status(&task), "failed", "{call}: {task}");
        let s = summary(&task);
        assert!(
            s.contains("denied") && s.contains("secret location"),
            "{call}: {s}"
        );
        assert!(!task.to_string().contains("PRIVATE KEY"), "{task}");
    }
    let approvals = rig.phone.ok(serde_json::json!({"cmd": "approvals"}))?;
    let n = approvals["approvals"].as_object().map_or(0, |a| a.len());
    assert_eq!(
        n, 2,
        "only the write and the untrusted read asked: {approvals}"
    );
    assert!(rig.home.join(".ssh/id_ed25519").exists());
    assert!(!docs.join("key").exists());
    Ok(())
}

#[test]
fn agent_check_says_which_connectors_work_and_what_is_wrong_with_the_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("config.toml");
    let bin = npm().join("node_modules/.bin/mcp-server-filesystem");
    std::fs::write(
        &path,
        format!(
            "[mcp_servers.files]\ncommand = {:?}\nargs = [{:?}]\n\n\
             [mcp_servers.gone]\ncommand = \"deskhand-no-such-server\"\n",
            bin.display().to_string(),
            dir.path().display().to_string()
        ),
    )?;
    let r = deskhand_tests::deskhand(&["agent", "check", "--config", path.to_str().unwrap_or("")])?;
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let files = lines
        .iter()
        .find(|l| l.starts_with("mcp files: "))
        .copied()
        .unwrap_or_default();
    assert!(
        files.starts_with("mcp files: ok (") && files.ends_with(" tools)"),
        "{r:?}"
    );
    assert!(
        lines.contains(
            &"mcp gone: connector `gone`: command `deskhand-no-such-server` not found (is it installed, and in PATH?)"
        ),
        "{r:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("model: none")), "{r:?}");
    assert!(r.stderr.contains("1 check(s) failed"), "{r:?}");

    std::fs::write(&path, "")?;
    let r = deskhand_tests::deskhand(&["agent", "check", "--config", path.to_str().unwrap_or("")])?;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("mcp: no connectors ([mcp_servers] in config.toml adds MCP servers)"),
        "{r:?}"
    );
    Ok(())
}

/// The process ids whose command line holds `marker` (our own servers: the marker is an argument
/// only this test passes).
fn pids_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_connector_killed_mid_task_fails_that_task_clearly_and_the_next_task_starts_it_again()
-> Result<()> {
    let index = npm().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let marker = format!("deskhand-e2e-{}", std::process::id());
    let config = format!(
        "[mcp_servers.every]\ncommand = \"node\"\nargs = [{:?}, \"stdio\", {marker:?}]\ntrusted = true\n",
        index.display().to_string()
    );
    let mut rig = Rig::new(&config, &[])?;
    let t = rig.say(r#"call mcp__every__echo {"message": "first"}"#)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("first"), "{task}");

    // A long call (read-only, trusted: it runs at once); the server is killed while it runs.
    let t =
        rig.say(r#"call mcp__every__trigger-long-running-operation {"duration": 30, "steps": 3}"#)?;
    rig.wait_task(&t, &["running"], 10_000)?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pids = pids_with(&marker);
    ensure!(pids.len() == 1, "one server process: {pids:?}");
    std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "failed", "{task}");
    // What it said on stderr follows (here its start-up line).
    assert!(
        summary(&task).starts_with("server `every` was stopped by signal 9: Starting"),
        "{task}"
    );

    // The next task starts it again (after a 1 s backoff) and works; the host kept running.
    let t = rig.say(r#"call mcp__every__echo {"message": "again"}"#)?;
    let task = rig.finished(&t)?;
    assert_eq!(status(&task), "done", "{task}");
    assert!(summary(&task).contains("again"), "{task}");
    let pids_after = pids_with(&marker);
    ensure!(
        pids_after.len() == 1 && pids_after != pids,
        "a new server process: {pids_after:?} (was {pids:?})"
    );
    Ok(())
}
