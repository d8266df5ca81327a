//! The host on a real X server (a private Xvfb the test starts): a screenshot task returns a PNG
//! blob the phone fetches and verifies, whose pixels are the colour the test painted; typed text
//! and a click asked for from the phone arrive in real X clients once approved.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deskhand_tests::x11::{HEIGHT, Proc, WIDTH, Xvfb};
use serde_json::json;

use crate::executor::Rig;

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    ok()
}

#[test]
fn a_screenshot_task_returns_a_verified_png_blob_of_the_painted_screen() -> Result<()> {
    let x = Xvfb::start();
    x.run("xsetroot", ["-solid", "#12ab34"]);
    let mut rig = Rig::new("", &[("DISPLAY", &x.display)])?;
    let t = rig.say("screenshot")?;
    let task = rig.finished(&t)?;
    assert_eq!(task["status"], "done", "{task}");
    let blob = task["result"]["blobs"][0].clone();
    assert_eq!(blob["media_type"], "image/png", "{task}");
    let hash = blob["hash"].as_str().context("hash")?;

    let out = rig.dir.path().join("shot.png");
    let got = rig
        .phone
        .ok(json!({"cmd": "fetch", "hash": hash, "out": out}))?;
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["size"], blob["size"]);

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("png size")?];
    let info = reader.next_frame(&mut buf)?;
    assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    let channels = info.line_size / info.width as usize;
    let px = |x: usize, y: usize| {
        let i = y * info.line_size + x * channels;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    for (x, y) in [(0, 0), (640, 400), (1279, 799), (17, 701)] {
        assert_eq!(px(x, y), (0x12, 0xab, 0x34), "pixel ({x},{y})");
    }
    Ok(())
}

#[test]
fn typed_text_and_a_click_arrive_in_real_x_clients_after_approval() -> Result<()> {
    let x = Xvfb::start();
    let mut rig = Rig::new("", &[("DISPLAY", &x.display)])?;

    // Typing: an xterm running `cat > FILE` receives what the desktop types.
    let file = rig.dir.path().join("typed.txt");
    let _xterm = x.typing_terminal("deskhand-e2e-typing", &file);

    let t = rig.say("type Hello, World! 123")?;
    let approval = rig.approval(&t)?;
    assert_eq!(approval["tool"], "type");
    rig.decide(&approval, "approve", None)?;
    assert_eq!(rig.finished(&t)?["status"], "done");
    let t = rig.say("key enter")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    assert_eq!(rig.finished(&t)?["status"], "done");
    let expected = "Hello, World! 123\n";
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&file)
            .is_ok_and(|s| s == expected)),
        "typed text did not arrive intact: {:?}",
        std::fs::read_to_string(&file)
    );

    // Clicking: xev reports the press at the root coordinates asked for.
    let mut xev = x.command("xev");
    xev.args(["-geometry", "400x300+300+300", "-event", "button"])
        .stdout(Stdio::piped());
    let mut xev = Proc::spawn(xev);
    let stdout = xev.child.stdout.take().context("xev stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let w = x.wait_for_window("Event Tester");
    x.wait_viewable(&w);
    let t = rig.say("click 450 420")?;
    let approval = rig.approval(&t)?;
    rig.decide(&approval, "approve", None)?;
    assert_eq!(rig.finished(&t)?["status"], "done");
    let mut seen = String::new();
    let arrived = wait_until(Duration::from_secs(10), || {
        while let Ok(l) = rx.try_recv() {
            seen.push_str(&l);
            seen.push('\n');
        }
        seen.contains("ButtonPress") && seen.contains("root:(450,420)")
    });
    assert!(arrived, "no ButtonPress at (450,420) in xev: {seen}");
    Ok(())
}
