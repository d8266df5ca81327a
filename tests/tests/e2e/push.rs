//! Wake-up pushes that carry nothing: a real `deskhand serve`, a phone through the apps' phone
//! API (`deskhand-node --role app`) with a P-256 key pair and auth secret made here, and a push
//! endpoint on loopback that records every request. The pushes are decrypted here, with an
//! RFC 8291 / RFC 8188 decryption written from the RFCs (checked against RFC 8291 Appendix A),
//! not with the library the desktop encrypts with.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use anyhow::{Context, Result, bail, ensure};
use base64ct::{Base64UrlUnpadded, Encoding as _};
use deskhand_tests::NodeProc;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::json;

use crate::clocks::{Desk, ok, task_id};

/// What the desktop must send, and all it may send.
const PAYLOAD: &[u8] = br#"{"v":1,"sync":true}"#;

/// One request the endpoint received.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The request exactly as it came over the socket.
    raw: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A push endpoint on 127.0.0.1: records every request, answers with `status`.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<Recorded>>>,
    status: Arc<AtomicU16>,
}

impl Endpoint {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(201));
        let (sink, answer) = (seen.clone(), status.clone());
        // Ends with the test process (the listener is never closed before).
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Ok(r) = read_request(&conn) {
                    let code = answer.load(Ordering::SeqCst);
                    let _ = (&conn).write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    if let Ok(mut s) = sink.lock() {
                        s.push(r);
                    }
                }
            }
        });
        Ok(Self { port, seen, status })
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `n` requests arrived.
    fn wait_for(&self, n: usize, limit: Duration) -> Result<Vec<Recorded>> {
        let start = Instant::now();
        loop {
            let r = self.requests();
            if r.len() >= n {
                return Ok(r);
            }
            if start.elapsed() > limit {
                bail!("{} push requests within {limit:?}, expected {n}", r.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(conn: &std::net::TcpStream) -> Result<Recorded> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn);
    let mut raw = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    raw.extend_from_slice(line.as_bytes());
    let mut parts = line.split_whitespace();
    let method = parts.next().context("method")?.to_owned();
    let path = parts.next().context("path")?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        raw.extend_from_slice(h.as_bytes());
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').context("header")?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    Ok(Recorded {
        method,
        path,
        headers,
        body,
        raw,
    })
}

/// RFC 8291 §3.3–3.4 and RFC 8188 §2: decrypts one `aes128gcm` Web Push body with the user
/// agent's private key and auth secret.
fn decrypt(body: &[u8], ua_secret: &p256::SecretKey, auth: &[u8]) -> Result<Vec<u8>> {
    use hkdf::Hkdf;
    use sha2::Sha256;
    // RFC 8188 §2.1: salt (16) | rs (u32be) | idlen (u8) | keyid (idlen) | records.
    ensure!(body.len() > 21, "shorter than the header");
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into()?) as usize;
    let idlen = body[20] as usize;
    // RFC 8291 §4: the key id is the application server's public key, 65 bytes.
    ensure!(idlen == 65, "key id of {idlen} bytes");
    ensure!(body.len() > 21 + idlen, "no record");
    let as_public_bytes = &body[21..21 + idlen];
    let record = &body[21 + idlen..];
    ensure!(
        rs >= 18 && record.len() <= rs,
        "one record of at most rs bytes"
    );
    let as_public = p256::PublicKey::from_sec1_bytes(as_public_bytes)
        .map_err(|_| anyhow::anyhow!("key id is not a P-256 point"))?;
    let ecdh = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_public.as_affine());
    // RFC 8291 §3.3: PRK_key = HMAC(auth, ecdh); IKM = HMAC(PRK_key, "WebPush: info" 0x00
    // ua_public as_public 0x01).
    let ua_public = ua_secret.public_key().to_encoded_point(false);
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(as_public_bytes);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh.raw_secret_bytes().as_slice())
        .expand(&key_info, &mut ikm)
        .map_err(|_| anyhow::anyhow!("hkdf"))?;
    // RFC 8188 §2.2–2.3 (RFC 8291 §3.4): PRK = HMAC(salt, IKM); CEK and NONCE (record 0).
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| anyhow::anyhow!("hkdf"))?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| anyhow::anyhow!("hkdf"))?;
    let plain = aes_gcm::Aes128Gcm::new_from_slice(&cek)
        .map_err(|_| anyhow::anyhow!("AES key"))?
        .decrypt(aes_gcm::Nonce::from_slice(&nonce), record)
        .map_err(|_| anyhow::anyhow!("AES-GCM: the record does not authenticate"))?;
    // RFC 8188 §2: the last record ends with the delimiter 0x02, then zero padding.
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .context("no padding delimiter")?;
    ensure!(
        plain[end] == 2,
        "the last record's delimiter is {}",
        plain[end]
    );
    Ok(plain[..end].to_vec())
}

fn b64(s: &str) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(s).expect("base64url")
}

#[test]
fn the_test_decryptor_reads_rfc_8291_appendix_a() -> Result<()> {
    let ua = p256::SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
        .map_err(|_| anyhow::anyhow!("RFC key"))?;
    assert_eq!(
        ua.public_key().to_encoded_point(false).as_bytes(),
        b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
        )
    );
    let body = b64(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    );
    let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
    assert_eq!(
        decrypt(&body, &ua, &auth)?,
        b"When I grow up, I want to be a watermelon"
    );
    // A wrong secret or a flipped byte does not decrypt.
    let mut wrong = auth.clone();
    wrong[0] ^= 1;
    assert!(decrypt(&body, &ua, &wrong).is_err());
    let mut flipped = body.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(decrypt(&flipped, &ua, &auth).is_err());
    Ok(())
}

fn node_bin() -> std::path::PathBuf {
    deskhand_tests::deskhand_bin().with_file_name("deskhand-node")
}

/// The phone's key pair and auth secret, made here as an app makes them.
fn phone_keys() -> Result<(p256::SecretKey, String, Vec<u8>, String)> {
    let mut scalar = [0u8; 32];
    getrandom::fill(&mut scalar).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret =
        p256::SecretKey::from_slice(&scalar).map_err(|_| anyhow::anyhow!("not a scalar"))?;
    let public =
        Base64UrlUnpadded::encode_string(secret.public_key().to_encoded_point(false).as_bytes());
    let mut auth = vec![0u8; 16];
    getrandom::fill(&mut auth).map_err(|e| anyhow::anyhow!("{e}"))?;
    let auth_s = Base64UrlUnpadded::encode_string(&auth);
    Ok((secret, public, auth, auth_s))
}

#[test]
fn a_phone_that_is_away_is_woken_by_pushes_that_carry_nothing() -> Result<()> {
    let endpoint = Endpoint::start()?;
    // The endpoint is on this machine: allowed only by the desktop's own setting.
    let desk = Desk::start(
        "approval_timeout_secs = 2\npush_min_interval_ms = 300\npush_to_loopback = true\n",
    )?;
    let secret_path = "/up/7f3c9e1d-capability-of-the-phone?t=s3cr3t";
    let url = format!("http://127.0.0.1:{}{secret_path}", endpoint.port);
    let (ua_secret, p256dh, auth, auth_s) = phone_keys()?;

    // The app phone pairs, writes its subscription, and syncs it to the desktop.
    let mut app = NodeProc::spawn(&node_bin(), &desk.phone_dir("app"), "app", None)?;
    app.ok(json!({"cmd": "pair", "payload": desk.serve.payload}))?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 20_000}))?;
    // Bad subscriptions are refused by the phone API before anything is written.
    let bad = app.call(
        json!({"cmd": "push_subscribe", "endpoint": "http://push.example.org/x",
        "p256dh": p256dh, "auth": auth_s}),
    )?;
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or_default()
            .contains("https://"),
        "{bad}"
    );
    app.ok(json!({"cmd": "push_subscribe", "endpoint": &url, "p256dh": &p256dh, "auth": &auth_s}))?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 20_000}))?;

    // A second phone (the terminal phone) drives the desktop.
    desk.pair("B", "0", &desk.code()?)?;

    // While the app is connected, a task's result wakes nobody.
    let t = task_id(&ok(desk.phone("B", "0", &["task", "list ~"])?)?)?;
    desk.finished("B", "0", &t)?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 20_000}))?;
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        endpoint.requests().is_empty(),
        "a connected phone got a push"
    );

    // The app goes away; an approval request, then its result (expired: denied).
    app.quit()?;
    std::thread::sleep(Duration::from_millis(1000));
    let secret_file = "secret-plans-4711.txt";
    std::fs::write(desk.home.join(secret_file), "x")?;
    let prompt = format!("trash ~/{secret_file}");
    let t = task_id(&ok(desk.phone("B", "0", &["task", &prompt])?)?)?;
    let approval = desk.approval_of("B", "0", &t)?;
    let first = endpoint.wait_for(1, Duration::from_secs(10))?;
    assert_eq!(
        first[0].header("urgency"),
        Some("high"),
        "{:?}",
        first[0].headers
    );
    let task = desk.finished("B", "0", &t)?;
    let pushes = endpoint.wait_for(2, Duration::from_secs(10))?;
    assert_eq!(pushes[1].header("urgency"), Some("normal"));

    let secrets: Vec<String> = vec![
        prompt.clone(),
        secret_file.into(),
        "secret-plans".into(),
        "trash".into(),
        t.clone(),
        approval["id"].as_str().context("approval id")?.to_owned(),
        task["result"]["summary"].as_str().unwrap_or("-").to_owned(),
    ];
    for p in &pushes {
        assert_eq!(p.method, "POST");
        assert_eq!(p.path, secret_path);
        assert_eq!(p.header("ttl"), Some("3600"));
        assert_eq!(p.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(p.header("content-type"), Some("application/octet-stream"));
        assert!(p.body.len() < 4096, "{} bytes", p.body.len());
        assert_eq!(decrypt(&p.body, &ua_secret, &auth)?, PAYLOAD);
        let raw = String::from_utf8_lossy(&p.raw);
        for s in &secrets {
            assert!(!raw.contains(s.as_str()), "the push shows {s:?}");
            assert!(
                !p.raw.windows(s.len()).any(|w| w == s.as_bytes()),
                "the push's bytes hold {s:?}"
            );
        }
    }

    // The subscription is gone (410): one more try, then nothing until the phone writes anew.
    endpoint.status.store(410, Ordering::SeqCst);
    let t = task_id(&ok(desk.phone("B", "0", &["task", "list ~"])?)?)?;
    desk.finished("B", "0", &t)?;
    endpoint.wait_for(3, Duration::from_secs(10))?;
    let t = task_id(&ok(desk.phone("B", "0", &["task", "list ~"])?)?)?;
    desk.finished("B", "0", &t)?;
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        endpoint.requests().len(),
        3,
        "pushed to a subscription that is gone"
    );
    Ok(())
}

#[test]
fn a_push_endpoint_on_the_desktop_itself_gets_nothing_unless_the_desktop_allows_it() -> Result<()> {
    let endpoint = Endpoint::start()?;
    // The default configuration: a phone's endpoint may not point at the desktop's own services.
    let desk = Desk::start("approval_timeout_secs = 2\npush_min_interval_ms = 300\n")?;
    let (_secret, p256dh, _auth, auth_s) = phone_keys()?;
    let mut app = NodeProc::spawn(&node_bin(), &desk.phone_dir("app"), "app", None)?;
    app.ok(json!({"cmd": "pair", "payload": desk.serve.payload}))?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 20_000}))?;
    // The phone's rules accept it (a push server on the phone's own loopback is its business);
    // the desktop, which dials it, refuses.
    let url = format!("http://127.0.0.1:{}/up/x", endpoint.port);
    app.ok(json!({"cmd": "push_subscribe", "endpoint": &url, "p256dh": &p256dh, "auth": &auth_s}))?;
    app.ok(json!({"cmd": "sync", "timeout_ms": 20_000}))?;
    app.quit()?;
    desk.pair("B", "0", &desk.code()?)?;
    let t = task_id(&ok(desk.phone("B", "0", &["task", "mkdir ~/x"])?)?)?;
    desk.approval_of("B", "0", &t)?;
    desk.finished("B", "0", &t)?;
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        endpoint.requests().is_empty(),
        "the desktop pushed to its own loopback {} times",
        endpoint.requests().len()
    );
    Ok(())
}
