//! The local control socket of a running host: `<data>/control.sock`, readable only by its owner.
//! One JSON request per line, one JSON answer per line. The store is open in one process at a
//! time, so commands that act on a running host (`pair`, `devices`) go through here.
//!
//! Every request carries the token the host writes to `<data>/control.token` (0600) when it
//! starts. Being the same user is not enough: a shell command of a task runs as the user but in
//! a sandbox that hides the data directory, and Landlock (before ABI 9) does not stop it from
//! connecting to a socket there. Without the token it cannot ask for a pairing code or have the
//! host write a file for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deskhand_core::DeviceId;
use deskhand_sync::Node;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::qr;

/// The socket of the host whose data directory is `data`.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("control.sock")
}

/// The token file of the host whose data directory is `data`.
fn token_path(data: &Path) -> PathBuf {
    data.join("control.token")
}

/// Writes a fresh token (32 random bytes, hex), readable by the owner only.
fn write_token(data: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = [
        deskhand_sync::node::random_id_bytes(),
        deskhand_sync::node::random_id_bytes(),
    ]
    .concat();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = token_path(data);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Extra fields for the `status` answer (the executor's state).
pub type StatusFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// Serves the control socket until `cancel` fires.
pub async fn serve(
    node: Arc<Node>,
    data: PathBuf,
    status: StatusFn,
    cancel: CancellationToken,
) -> Result<()> {
    let path = socket_path(&data);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            bail!(
                "another desktop host is already running on {}",
                data.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let token = Arc::new(write_token(&data)?);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                conns.spawn(handle_conn(
                    node.clone(),
                    data.clone(),
                    status.clone(),
                    token.clone(),
                    stream,
                ));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn handle_conn(
    node: Arc<Node>,
    data: PathBuf,
    status: StatusFn,
    token: Arc<String>,
    stream: UnixStream,
) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(req)
                if !same(
                    req["token"].as_str().unwrap_or("").as_bytes(),
                    token.as_bytes(),
                ) =>
            {
                json!({"ok": false, "error": format!(
                    "refused: the request does not carry this host's control token ({})",
                    token_path(&data).display()
                )})
            }
            Ok(req) => handle(&node, &data, &status, &req)
                .await
                .unwrap_or_else(|e| json!({"ok": false, "error": format!("{e:#}")})),
            Err(e) => json!({"ok": false, "error": format!("malformed request: {e}")}),
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}

/// A pairing code: payload, terminal drawing, PNG.
pub fn pairing_answer(node: &Node, ttl: Duration, png: &Path) -> Result<Value> {
    let payload = node.create_pairing(ttl)?;
    let uri = payload.to_uri();
    qr::write_png(&uri, png)?;
    Ok(json!({
        "ok": true,
        "uri": uri,
        "png": png,
        "expires_at": payload.expires_at,
        "qr": qr::terminal(&uri)?,
    }))
}

/// Devices with presence, as `deskhand devices --json` prints them.
pub fn devices_json(node: &Node) -> Value {
    let devices: Vec<Value> = node
        .peers()
        .into_iter()
        .map(|p| {
            json!({
                "id": p.id.to_string(),
                "name": p.record.name,
                "platform": p.record.platform,
                "paired_at": p.record.paired_at,
                "revoked_at": p.record.revoked_at,
                "presence": p.presence,
                "last_seen": p.record.last_seen,
                "last_error": p.last_error,
            })
        })
        .collect();
    json!(devices)
}

fn parse_id(node: &Node, text: &str) -> Result<DeviceId> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    // Accept an unambiguous prefix, as `deskhand devices` shows short ids.
    let matches: Vec<DeviceId> = node
        .peers()
        .iter()
        .map(|p| p.id)
        .filter(|id| id.to_string().starts_with(text))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no paired device has the id {text:?}"),
        _ => bail!("{text:?} matches several devices; give more of the id"),
    }
}

async fn handle(node: &Node, data: &Path, status: &StatusFn, req: &Value) -> Result<Value> {
    match req["cmd"].as_str().unwrap_or("") {
        "pair" => {
            let ttl =
                Duration::from_secs(req["ttl_secs"].as_u64().unwrap_or(300).clamp(1, 24 * 3600));
            let png = req["png"]
                .as_str()
                .map(PathBuf::from)
                .unwrap_or_else(|| data.join("pairing-qr.png"));
            pairing_answer(node, ttl, &png)
        }
        "devices" => {
            let audit = node.audit_log().await.unwrap_or_default();
            let refusals: Vec<Value> = audit
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| {
                    e["event"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("refused") || k == "pairing_refused")
                })
                .collect();
            Ok(json!({"ok": true, "devices": devices_json(node), "refusals": refusals}))
        }
        "rename" => {
            let id = parse_id(node, req["id"].as_str().unwrap_or(""))?;
            let name = req["name"].as_str().context("name")?;
            Ok(json!({"ok": node.rename_peer(&id, name).await?}))
        }
        "revoke" => {
            let id = parse_id(node, req["id"].as_str().unwrap_or(""))?;
            Ok(json!({"ok": node.revoke_peer(&id).await?, "id": id.to_string()}))
        }
        "status" => Ok(json!({
            "ok": true,
            "id": node.id().to_string(),
            "workspace": node.doc_id().map(|d| d.to_string()),
            "addrs": node.direct_addrs(),
            "devices": devices_json(node),
            "pid": std::process::id(),
            "executor": status(),
        })),
        other => bail!("unknown command {other:?}"),
    }
}

/// Sends one request to the host running on `data`.
pub async fn request(data: &Path, mut req: Value) -> Result<Value> {
    let path = socket_path(data);
    let stream = UnixStream::connect(&path).await.map_err(|_| {
        anyhow::anyhow!(
            "no desktop host is running on {} (start it with `deskhand serve --data {}`)",
            data.display(),
            data.display()
        )
    })?;
    let token_file = token_path(data);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the host's control token {}", token_file.display()))?;
    req["token"] = json!(token.trim());
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{req}\n").as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let line = lines
        .next_line()
        .await?
        .context("the host closed the control connection")?;
    let v: Value = serde_json::from_str(&line)?;
    if v["ok"] == false && v["error"].is_string() {
        bail!("{}", v["error"].as_str().unwrap_or_default());
    }
    Ok(v)
}
