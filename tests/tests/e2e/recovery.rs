//! Recovery from real life (issue 13): a desktop restored from an older backup, a device that
//! still speaks the old protocol.

use std::time::Duration;

use anyhow::{Context, Result};
use deskhand_core::{DeviceKey, PairingPayload, SYNC_ALPN_V1, SYNC_ALPN_V2, SYNC_ALPN_V3};
use deskhand_sync::NetConfig;
use deskhand_tests::{Serve, deskhand, free_udp_addr};
use serde_json::Value;

use crate::pairing::{ok, path, show, texts};

/// Copies the files of a data directory (the desktop's, while it is stopped), as a backup tool would.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
        // The control socket is not data: a backup leaves it out.
    }
    Ok(())
}

/// Every message's text on a phone, replies included.
fn all_texts(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Syncs `phone` until its view satisfies `until` (the desktop answers asynchronously).
fn sync_until(
    phone: &std::path::Path,
    what: &str,
    until: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = deskhand(&["phone", "--data", path(phone), "sync", "--timeout", "5"])?;
        let v = show(phone)?;
        if r.code == 0 && until(&v) {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{what}: not seen within 30 s; last sync ({}): {} {}\nphone shows {:?}",
            r.code,
            r.stdout,
            r.stderr,
            all_texts(&v)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_desktop_restored_from_an_older_backup_takes_back_what_it_lost_and_locks_nobody_out()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_dir = dir.path().join("desk");
    let backup = dir.path().join("backup");
    let listen = free_udp_addr();
    let serve = Serve::start(&desk_dir, listen)?;
    let (p1, p2) = (dir.path().join("p1"), dir.path().join("p2"));
    for (p, name) in [(&p1, "one"), (&p2, "two")] {
        let code = crate::pairing::fresh_code(&desk_dir, "5m")?;
        ok(deskhand(&[
            "phone",
            "--data",
            path(p),
            "pair",
            &code,
            "--name",
            name,
        ])?)?;
    }

    // The backup, taken while the desktop is stopped.
    serve.kill9()?;
    copy_dir(&desk_dir, &backup)?;
    let serve = Serve::start(&desk_dir, listen)?;

    // Life goes on: phone one writes, the desktop answers, phone two sees it all.
    let r = ok(deskhand(&["phone", "--data", path(&p1), "send", "list ~"])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    let answered = |v: &Value| all_texts(v).len() >= 2;
    let before = sync_until(&p1, "the desktop's answer", answered)?;
    sync_until(&p2, "phone two has the answer", |v| {
        all_texts(v) == all_texts(&before)
    })?;

    // The disk dies; the desktop is restored from the backup, which lacks all of that.
    serve.kill9()?;
    std::fs::remove_dir_all(&desk_dir)?;
    copy_dir(&backup, &desk_dir)?;
    let serve = Serve::start(&desk_dir, listen)?;

    // Phone two (which never wrote anything) hands the desktop back its own lost answer and
    // phone one's message; phone one is not locked out and is answered again.
    sync_until(&p2, "phone two syncs with the restored desktop", |_| true)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "send",
        "after the restore",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    let after = sync_until(&p1, "an answer after the restore", |v| {
        all_texts(v).len() >= 4
    })?;
    assert_eq!(texts(&after), vec!["list ~", "after the restore"]);
    let all = all_texts(&after);
    assert_eq!(
        &all[..2],
        &all_texts(&before)[..],
        "the conversation before the loss is intact"
    );
    // The desktop holds what it had lost (its console printed it) and answered nothing twice.
    let out = serve.output();
    assert!(out.contains("list ~"), "{out}");
    assert_eq!(all.len(), 4, "{all:?}");
    drop(serve);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_the_old_protocol_is_told_to_update() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let serve = Serve::start(&dir.path().join("desk"), free_udp_addr())?;
    let payload = PairingPayload::parse(&serve.payload)?;
    let key = DeviceKey::from_secret_bytes(deskhand_sync::node::random_bytes());
    let ep = deskhand_sync::endpoint::bind(&key, &NetConfig::default(), vec![]).await?;
    let addr = deskhand_sync::endpoint::peer_addr(&payload.desktop, &payload.addrs, None)?;
    // Protocols 1 (unsigned changes), 2 (one document) and 3 (the workspace in one of several
    // documents) are all told to update.
    for alpn in [SYNC_ALPN_V1, SYNC_ALPN_V2, SYNC_ALPN_V3] {
        let conn = tokio::time::timeout(Duration::from_secs(10), ep.connect(addr.clone(), alpn))
            .await
            .context("connect")??;
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .context("closed")?
            .to_string();
        assert!(
            reason.contains("sync protocol 4") && reason.contains("update Deskhand on this device"),
            "{}: {reason}",
            String::from_utf8_lossy(alpn)
        );
    }
    ep.close().await;
    Ok(())
}

#[test]
fn a_revoked_phone_is_told_so_remembers_it_and_promises_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let desk_dir = dir.path().join("desk");
    let serve = Serve::start(&desk_dir, free_udp_addr())?;
    let p1 = dir.path().join("p1");
    ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "pair",
        &serve.payload,
        "--name",
        "one",
    ])?)?;
    let r = ok(deskhand(&["phone", "--data", path(&p1), "send", "hello"])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    let id = show(&p1)?["device"]
        .as_str()
        .context("device id")?
        .to_owned();
    ok(deskhand(&[
        "devices",
        "--data",
        path(&desk_dir),
        "revoke",
        &id[..12],
    ])?)?;

    // The first send after the revocation learns it: an error, no "queued" promise. The phone
    // learns it either before the write (its background session was refused first: nothing is
    // written) or after it (kept on the phone, sent only once it is paired again).
    let r = deskhand(&["phone", "--data", path(&p1), "send", "after the revoke"])?;
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(!r.stdout.contains("queued"), "{}", r.stdout);
    assert!(
        r.stderr.contains("this device was revoked by the desktop"),
        "{}",
        r.stderr
    );
    let kept = r
        .stderr
        .contains("is saved on this phone but was not delivered");
    assert_eq!(
        kept,
        all_texts(&show(&p1)?)
            .iter()
            .any(|t| t == "after the revoke"),
        "the error says whether the phone kept the message: {}",
        r.stderr
    );
    // Remembered: the next command says so at once, without dialling, and writes nothing.
    let r = deskhand(&["phone", "--data", path(&p1), "send", "again"])?;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("revoked"), "{}", r.stderr);
    let v = show(&p1)?;
    assert!(!v["desktop"]["revoked_at"].is_null(), "{v}");
    assert!(!all_texts(&v).iter().any(|t| t == "again"));
    let r = deskhand(&["phone", "--data", path(&p1), "sync", "--timeout", "2"])?;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("revoked"), "{}", r.stderr);

    // Paired again with a fresh code, it works again and delivers what it wrote meanwhile.
    let code = crate::pairing::fresh_code(&desk_dir, "5m")?;
    ok(deskhand(&["phone", "--data", path(&p1), "pair", &code])?)?;
    let r = ok(deskhand(&[
        "phone",
        "--data",
        path(&p1),
        "send",
        "back again",
    ])?)?;
    assert!(r.stdout.starts_with("sent"), "{}", r.stdout);
    let v = show(&p1)?;
    assert!(v["desktop"]["revoked_at"].is_null(), "{v}");
    let out = serve.output();
    assert!(out.contains("back again"), "{out}");
    assert_eq!(
        out.contains("after the revoke"),
        kept,
        "what the phone kept is delivered, nothing else: {out}\nthe phone holds: {:?}",
        all_texts(&v)
    );

    // The desktop logged a revoked device, not an unknown one.
    serve.kill9()?;
    let (store, _thread, _) = deskhand_sync::store::Store::open(&desk_dir.join("deskhand.redb"))?;
    let audit = block_on(store.read(deskhand_sync::store::read_audit))???.join("\n");
    assert!(audit.contains("refused_revoked_peer"), "{audit}");
    assert!(!audit.contains("refused_unknown_peer"), "{audit}");
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}
