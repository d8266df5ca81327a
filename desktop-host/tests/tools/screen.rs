//! Screen capture against Xvfb: the exact colour painted on the root window comes back.

use std::time::{Duration, Instant};

use deskhand_desktop_host::tools::ToolError;
use deskhand_desktop_host::tools::screen::{capture_png, capture_png_async};

use crate::x11::{EnvLock, HEIGHT, WIDTH, Xvfb};

/// Decodes a PNG into (width, height, RGBA pixels).
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::ALPHA);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn assert_solid(png_bytes: &[u8], rgb: [u8; 3]) {
    let (w, h, pixels) = decode(png_bytes);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    let wrong: Vec<(usize, &[u8])> = pixels
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, p)| p[..3] != rgb)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} pixels are not #{:02x}{:02x}{:02x}; the first is at ({}, {}): {:?}",
        wrong.len(),
        w * h,
        rgb[0],
        rgb[1],
        rgb[2],
        wrong[0].0 % w as usize,
        wrong[0].0 / w as usize,
        wrong[0].1
    );
}

#[tokio::test]
async fn capture_returns_exactly_the_painted_colour() {
    let x = Xvfb::start();
    x.run("xsetroot", ["-solid", "#12ab34"]);
    let shot = capture_png().unwrap();
    assert_eq!((shot.width, shot.height), (WIDTH, HEIGHT));
    assert_solid(&shot.png, [0x12, 0xab, 0x34]);

    // A second colour proves the first was not a lucky default; this time on the blocking pool.
    x.run("xsetroot", ["-solid", "#c0ffee"]);
    let shot = capture_png_async().await.unwrap();
    assert_solid(&shot.png, [0xc0, 0xff, 0xee]);

    // Timing, for the record (`--no-capture` shows it): capture + PNG encoding.
    let mut times: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            capture_png().unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    eprintln!(
        "capture_png at {WIDTH}x{HEIGHT}: median {:?}, max {:?}, {} KB",
        times[5],
        times[9],
        shot.png.len() / 1024
    );
}

#[test]
fn without_a_display_the_error_says_so() {
    let env = EnvLock::take();
    let saved: Vec<(&str, Option<String>)> = ["DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"]
        .into_iter()
        .map(|k| (k, std::env::var(k).ok()))
        .collect();
    for (k, _) in &saved {
        env.set(k, None);
    }
    let capture = capture_png();
    let input = deskhand_desktop_host::tools::input::InputDriver::new();
    for (k, v) in &saved {
        env.set(k, v.as_deref());
    }
    let e = capture.unwrap_err();
    assert!(matches!(e, ToolError::NoDisplay), "{e}");
    assert_eq!(e.to_string(), "no graphical session: DISPLAY is not set");
    let e = input.unwrap_err();
    assert_eq!(e.to_string(), "no graphical session: DISPLAY is not set");
}

/// The field notes' trap: a stray Wayland variable sends xcap down its Wayland path although X
/// works. The error must name the variable and the fix.
#[test]
fn a_stray_wayland_variable_is_explained() {
    let x = Xvfb::start();
    x.env.set("WAYLAND_DISPLAY", Some("wayland-deskhand-test"));
    let result = capture_png();
    x.env.set("WAYLAND_DISPLAY", None);
    let e = result.unwrap_err().to_string();
    assert!(e.starts_with("screen capture failed: "), "{e}");
    assert!(
        e.contains("WAYLAND_DISPLAY=wayland-deskhand-test is set"),
        "{e}"
    );
    assert!(e.contains("start the host without WAYLAND_DISPLAY"), "{e}");
    // And with it cleared, the same server captures fine.
    capture_png().unwrap();
}
