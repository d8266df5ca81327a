//! Keyboard and mouse against Xvfb: typed text arrives in an xterm exactly, key combos act, and
//! clicks arrive in xev at the coordinates asked for.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deskhand_desktop_host::tools::input::{InputDriver, MouseButton};

use crate::x11::{Proc, Xvfb};

/// Polls `check` every 20 ms for up to `limit`; returns its last answer.
fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn typed_text_and_key_combos_arrive_in_a_terminal() {
    let x = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typed.txt");
    let mut xterm = x.typing_terminal("deskhand-typing", &file);

    let input = InputDriver::with_display(&x.display).unwrap();
    let text = "Hello, World! 123";
    input.type_text(text).await.unwrap();
    input.key_combo("enter").await.unwrap();
    let expected = format!("{text}\n");
    let got = wait_until(Duration::from_secs(10), || {
        let got = std::fs::read_to_string(&file).unwrap_or_default();
        (got == expected).then_some(got)
    });
    assert_eq!(
        got.unwrap_or_else(|| std::fs::read_to_string(&file).unwrap_or_default()),
        expected,
        "the typed text did not arrive intact"
    );

    // A modifier combo: ctrl+d ends `cat`, which closes the xterm.
    input.key_combo("ctrl+d").await.unwrap();
    assert!(
        xterm.exits_within(Duration::from_secs(10)),
        "ctrl+d did not reach the terminal"
    );
    input.shutdown().await;
}

/// One ButtonPress as xev reports it.
#[derive(Debug, PartialEq, Eq)]
struct Press {
    root: (i32, i32),
    button: u8,
}

/// Parses xev's ButtonPress blocks:
/// `ButtonPress event, … (48,58), root:(150,160),` / `state 0x0, button 1, same_screen YES`.
fn presses(xev_output: &str) -> Vec<Press> {
    xev_output
        .split("\n\n")
        .filter(|block| block.trim_start().starts_with("ButtonPress"))
        .filter_map(|block| {
            let root = block.split("root:(").nth(1)?.split(')').next()?;
            let (rx, ry) = root.split_once(',')?;
            let button = block.split("button ").nth(1)?.split(',').next()?;
            Some(Press {
                root: (rx.trim().parse().ok()?, ry.trim().parse().ok()?),
                button: button.trim().parse().ok()?,
            })
        })
        .collect()
}

#[tokio::test]
async fn clicks_and_moves_arrive_where_asked() {
    let x = Xvfb::start();
    let mut xev = x.command("xev");
    xev.args(["-geometry", "400x300+100+100", "-event", "button"])
        .stdout(Stdio::piped());
    let mut xev = Proc::spawn(xev);
    let stdout = xev.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = String::new();
    let mut read_until = |limit: Duration, done: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        while !done(&output) && start.elapsed() < limit {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                output.push_str(&line);
                output.push('\n');
            }
        }
        output.clone()
    };
    // xev flushes its output only after an event, so its window is found by title instead.
    let window = x.wait_for_window("^Event Tester$");
    x.wait_viewable(&window);

    // Through DISPLAY, the way the host will use it.
    let input = InputDriver::new().unwrap();
    input.click(150, 160, MouseButton::Left).await.unwrap();
    input.click(420, 333, MouseButton::Right).await.unwrap();
    input.click(300, 200, MouseButton::Middle).await.unwrap();
    let all = read_until(Duration::from_secs(10), &|o| presses(o).len() >= 3);
    assert_eq!(
        presses(&all),
        [
            Press {
                root: (150, 160),
                button: 1
            },
            Press {
                root: (420, 333),
                button: 3
            },
            Press {
                root: (300, 200),
                button: 2
            },
        ],
        "xev saw:\n{all}"
    );

    input.move_mouse(640, 401).await.unwrap();
    let out = x.run("xdotool", ["getmouselocation"]);
    let location = String::from_utf8_lossy(&out.stdout);
    assert!(location.starts_with("x:640 y:401 "), "{location}");
    input.shutdown().await;
}

#[test]
fn xev_parser_reads_button_presses() {
    let sample = "Outer window is 0x200001, inner window is 0x200002\n\n\
        ButtonPress event, serial 25, synthetic NO, window 0x200001,\n    \
        root 0x50d, subw 0x200002, time 9254800, (48,58), root:(150,160),\n    \
        state 0x0, button 1, same_screen YES\n\n\
        ButtonRelease event, serial 25, synthetic NO, window 0x200001,\n    \
        root 0x50d, subw 0x200002, time 9254800, (48,58), root:(150,160),\n    \
        state 0x100, button 1, same_screen YES\n";
    assert_eq!(
        presses(sample),
        [Press {
            root: (150, 160),
            button: 1
        }]
    );
}
