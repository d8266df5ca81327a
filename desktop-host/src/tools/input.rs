//! Keyboard and mouse, simulated with `enigo` (its pure-Rust x11rb/XTEST backend on Linux).
//!
//! One `Enigo` lives for the whole session on a thread of its own, and [`InputDriver`] is the
//! async handle to it. Long-lived because enigo types characters missing from the keyboard map
//! (capitals, shifted symbols, non-ASCII) by remapping spare keycodes, and dropping `Enigo`
//! undoes the remaps, possibly before the X client has read the keys: text then arrives with
//! characters missing. A thread of its own because enigo's types are not `Send` everywhere and
//! its calls block.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use enigo::{Direction, Enigo, Keyboard, Mouse, Settings};
use tokio::sync::{mpsc, oneshot};

use super::ToolError;

/// A modifier key of a [`KeyCombo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Modifier {
    /// Control.
    Ctrl,
    /// Shift.
    Shift,
    /// Alt (Option on macOS).
    Alt,
    /// Super / Windows / Command.
    Super,
}

/// The main key of a [`KeyCombo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A letter `a`–`z` or a digit `0`–`9` (letters are lower case: Shift is a modifier).
    Char(char),
    /// Enter / Return.
    Enter,
    /// Tab.
    Tab,
    /// Escape.
    Escape,
    /// The space bar.
    Space,
    /// Backspace.
    Backspace,
    /// Delete (forward).
    Delete,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Arrow left.
    Left,
    /// Arrow right.
    Right,
    /// Home.
    Home,
    /// End.
    End,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// A function key, `F1`–`F12`.
    F(u8),
}

/// Names accepted by [`KeyCombo::from_str`], for error messages.
pub const ACCEPTED_KEYS: &str = "modifiers ctrl/control, shift, alt, super/meta/cmd; keys a-z, \
     0-9, enter/return, tab, esc/escape, space, backspace, delete, up, down, left, right, home, \
     end, pageup, pagedown, f1-f12";

/// A key pressed with modifiers held, e.g. `ctrl+shift+t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCombo {
    /// Held while the key is pressed, in the order given, without repeats.
    pub modifiers: Vec<Modifier>,
    /// The key.
    pub key: Key,
}

impl FromStr for KeyCombo {
    type Err = ToolError;

    /// Parses `mod+mod+key`, case-insensitively, spaces around names allowed.
    fn from_str(combo: &str) -> Result<Self, ToolError> {
        let fail = |reason: String| ToolError::KeyCombo {
            combo: combo.to_string(),
            reason,
        };
        let mut modifiers = Vec::new();
        let mut key = None;
        for part in combo.split('+') {
            let name = part.trim().to_lowercase();
            if name.is_empty() {
                return Err(fail(format!(
                    "an empty key name; accepted: {ACCEPTED_KEYS}"
                )));
            }
            if let Some(m) = modifier(&name) {
                if key.is_some() {
                    return Err(fail("modifiers must come before the key".to_string()));
                }
                if !modifiers.contains(&m) {
                    modifiers.push(m);
                }
                continue;
            }
            let Some(k) = key_name(&name) else {
                return Err(fail(format!(
                    "`{}` is not a key name I know; accepted: {ACCEPTED_KEYS}",
                    part.trim()
                )));
            };
            if key.replace(k).is_some() {
                return Err(fail(
                    "only one key besides the modifiers can be pressed".to_string(),
                ));
            }
        }
        let key = key.ok_or_else(|| fail("no key after the modifiers".to_string()))?;
        Ok(KeyCombo { modifiers, key })
    }
}

impl fmt::Display for KeyCombo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.modifiers {
            let name = match m {
                Modifier::Ctrl => "ctrl",
                Modifier::Shift => "shift",
                Modifier::Alt => "alt",
                Modifier::Super => "super",
            };
            write!(f, "{name}+")?;
        }
        match self.key {
            Key::Char(c) => write!(f, "{c}"),
            Key::F(n) => write!(f, "f{n}"),
            k => f.write_str(&format!("{k:?}").to_lowercase()),
        }
    }
}

fn modifier(name: &str) -> Option<Modifier> {
    Some(match name {
        "ctrl" | "control" => Modifier::Ctrl,
        "shift" => Modifier::Shift,
        "alt" => Modifier::Alt,
        "super" | "meta" | "cmd" => Modifier::Super,
        _ => return None,
    })
}

fn key_name(name: &str) -> Option<Key> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return (c.is_ascii_lowercase() || c.is_ascii_digit()).then_some(Key::Char(c));
    }
    Some(match name {
        "enter" | "return" => Key::Enter,
        "tab" => Key::Tab,
        "esc" | "escape" => Key::Escape,
        "space" => Key::Space,
        "backspace" => Key::Backspace,
        "delete" => Key::Delete,
        "up" => Key::Up,
        "down" => Key::Down,
        "left" => Key::Left,
        "right" => Key::Right,
        "home" => Key::Home,
        "end" => Key::End,
        "pageup" => Key::PageUp,
        "pagedown" => Key::PageDown,
        _ => {
            let n: u8 = name.strip_prefix('f')?.parse().ok()?;
            return (1..=12).contains(&n).then_some(Key::F(n));
        }
    })
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseButton {
    /// The primary button.
    Left,
    /// The secondary (context menu) button.
    Right,
    /// The middle button / wheel click.
    Middle,
}

impl FromStr for MouseButton {
    type Err = ToolError;

    fn from_str(s: &str) -> Result<Self, ToolError> {
        match s.trim().to_lowercase().as_str() {
            "left" => Ok(MouseButton::Left),
            "right" => Ok(MouseButton::Right),
            "middle" => Ok(MouseButton::Middle),
            _ => Err(ToolError::Input {
                reason: format!("`{s}` is not a mouse button (accepted: left, right, middle)"),
            }),
        }
    }
}

/// Time for the X client to read typed keys before enigo may remap the keycodes it borrowed.
const AFTER_TYPING: Duration = Duration::from_millis(100);
/// Time for other events to be read before the next request.
const AFTER_EVENT: Duration = Duration::from_millis(20);

enum Request {
    Type(String),
    Combo(KeyCombo),
    Click(i32, i32, MouseButton),
    Move(i32, i32),
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<(), ToolError>>,
}

/// The async handle to the input thread. Dropping it lets the thread finish the request in
/// hand and exit; [`InputDriver::shutdown`] also waits for that.
#[derive(Debug)]
pub struct InputDriver {
    tx: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl InputDriver {
    /// Connects to the X server named by `DISPLAY`. Fails clearly when there is none.
    pub fn new() -> Result<Self, ToolError> {
        Self::start(default_display()?)
    }

    /// Connects to the X server `display` (e.g. `":99"`), whatever `DISPLAY` says.
    pub fn with_display(display: &str) -> Result<Self, ToolError> {
        Self::start(Some(display.to_string()))
    }

    fn start(display: Option<String>) -> Result<Self, ToolError> {
        let (tx, mut rx) = mpsc::channel::<Job>(16);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let shown = display
            .clone()
            .unwrap_or_else(|| "the default display".into());
        let thread = std::thread::Builder::new()
            .name("deskhand-input".into())
            .spawn(move || {
                let settings = Settings {
                    x11_display: display,
                    ..Settings::default()
                };
                let mut enigo = match Enigo::new(&settings) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Some(job) = rx.blocking_recv() {
                    let result = perform(&mut enigo, job.request);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| ToolError::Input {
                reason: format!("could not start the input thread: {e}"),
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(InputDriver { tx, thread }),
            Ok(Err(e)) => Err(ToolError::Input {
                reason: format!("cannot connect to the X server at {shown}: {e}"),
            }),
            Err(_) => Err(ToolError::Input {
                reason: format!("the X server at {shown} did not answer within 10 s"),
            }),
        }
    }

    /// Types `text` into the focused window, then pauses briefly so every key is read before the
    /// next request.
    pub async fn type_text(&self, text: &str) -> Result<(), ToolError> {
        // enigo presses each key for a few ms; allow for that on top of a fixed margin.
        let limit =
            Duration::from_secs(10) + Duration::from_millis(50) * text.chars().count() as u32;
        self.ask(Request::Type(text.to_string()), limit).await
    }

    /// Presses a key combination like `ctrl+s`, `alt+f4` or `enter` (see [`ACCEPTED_KEYS`]).
    pub async fn key_combo(&self, combo: &str) -> Result<(), ToolError> {
        let combo: KeyCombo = combo.parse()?;
        self.ask(Request::Combo(combo), Duration::from_secs(10))
            .await
    }

    /// Moves the pointer to (`x`, `y`) in screen pixels, then clicks `button`.
    pub async fn click(&self, x: i32, y: i32, button: MouseButton) -> Result<(), ToolError> {
        self.ask(Request::Click(x, y, button), Duration::from_secs(10))
            .await
    }

    /// Moves the pointer to (`x`, `y`) in screen pixels.
    pub async fn move_mouse(&self, x: i32, y: i32) -> Result<(), ToolError> {
        self.ask(Request::Move(x, y), Duration::from_secs(10)).await
    }

    /// Stops the input thread and waits until it has released its keys and exited.
    pub async fn shutdown(self) {
        let InputDriver { tx, thread } = self;
        drop(tx);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    async fn ask(&self, request: Request, limit: Duration) -> Result<(), ToolError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ToolError::Input {
            reason: "the input thread has stopped".to_string(),
        };
        self.tx
            .send(Job { request, reply })
            .await
            .map_err(|_| gone())?;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(ToolError::Input {
                reason: format!(
                    "the display did not take the input within {} s",
                    limit.as_secs()
                ),
            }),
        }
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
fn default_display() -> Result<Option<String>, ToolError> {
    // Only the x11rb backend is built in, so a Wayland-only session cannot be driven.
    super::session::x_display().map(Some)
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn default_display() -> Result<Option<String>, ToolError> {
    Ok(None)
}

fn perform(enigo: &mut Enigo, request: Request) -> Result<(), ToolError> {
    let failed = |what: &str, e: enigo::InputError| ToolError::Input {
        reason: format!("{what}: {e}"),
    };
    match request {
        Request::Type(text) => {
            enigo.text(&text).map_err(|e| failed("typing", e))?;
            std::thread::sleep(AFTER_TYPING);
        }
        Request::Combo(combo) => {
            let mut held = Vec::new();
            let mut result = Ok(());
            for m in &combo.modifiers {
                let k = enigo_modifier(*m);
                if let Err(e) = enigo.key(k, Direction::Press) {
                    result = Err(failed(&format!("pressing {combo}"), e));
                    break;
                }
                held.push(k);
            }
            if result.is_ok() {
                result = enigo
                    .key(enigo_key(combo.key), Direction::Click)
                    .map_err(|e| failed(&format!("pressing {combo}"), e));
            }
            // Released even after a failure: a stuck Ctrl would change every later keystroke.
            for k in held.into_iter().rev() {
                let released = enigo.key(k, Direction::Release);
                if result.is_ok() {
                    result = released.map_err(|e| failed(&format!("releasing {combo}"), e));
                }
            }
            result?;
            std::thread::sleep(AFTER_EVENT);
        }
        Request::Click(x, y, button) => {
            enigo
                .move_mouse(x, y, enigo::Coordinate::Abs)
                .map_err(|e| failed("moving the mouse", e))?;
            let button = match button {
                MouseButton::Left => enigo::Button::Left,
                MouseButton::Right => enigo::Button::Right,
                MouseButton::Middle => enigo::Button::Middle,
            };
            enigo
                .button(button, Direction::Click)
                .map_err(|e| failed("clicking", e))?;
            std::thread::sleep(AFTER_EVENT);
        }
        Request::Move(x, y) => {
            enigo
                .move_mouse(x, y, enigo::Coordinate::Abs)
                .map_err(|e| failed("moving the mouse", e))?;
            std::thread::sleep(AFTER_EVENT);
        }
    }
    Ok(())
}

fn enigo_modifier(m: Modifier) -> enigo::Key {
    match m {
        Modifier::Ctrl => enigo::Key::Control,
        Modifier::Shift => enigo::Key::Shift,
        Modifier::Alt => enigo::Key::Alt,
        Modifier::Super => enigo::Key::Meta,
    }
}

fn enigo_key(k: Key) -> enigo::Key {
    use enigo::Key as E;
    match k {
        Key::Char(c) => E::Unicode(c),
        Key::Enter => E::Return,
        Key::Tab => E::Tab,
        Key::Escape => E::Escape,
        Key::Space => E::Space,
        Key::Backspace => E::Backspace,
        Key::Delete => E::Delete,
        Key::Up => E::UpArrow,
        Key::Down => E::DownArrow,
        Key::Left => E::LeftArrow,
        Key::Right => E::RightArrow,
        Key::Home => E::Home,
        Key::End => E::End,
        Key::PageUp => E::PageUp,
        Key::PageDown => E::PageDown,
        Key::F(n) => [
            E::F1,
            E::F2,
            E::F3,
            E::F4,
            E::F5,
            E::F6,
            E::F7,
            E::F8,
            E::F9,
            E::F10,
            E::F11,
            E::F12,
        ]
        .get(usize::from(n.saturating_sub(1)))
        .copied()
        .unwrap_or(E::F12),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(s: &str) -> Result<KeyCombo, ToolError> {
        s.parse()
    }

    #[test]
    fn parses_modifiers_and_keys() {
        assert_eq!(
            parse("ctrl+s").unwrap(),
            KeyCombo {
                modifiers: vec![Modifier::Ctrl],
                key: Key::Char('s')
            }
        );
        assert_eq!(
            parse(" Control + Shift + T ").unwrap(),
            KeyCombo {
                modifiers: vec![Modifier::Ctrl, Modifier::Shift],
                key: Key::Char('t')
            }
        );
        assert_eq!(
            parse("cmd+meta+super+q").unwrap().modifiers,
            [Modifier::Super]
        );
        assert_eq!(parse("alt+F4").unwrap().key, Key::F(4));
        assert_eq!(parse("f12").unwrap().key, Key::F(12));
        assert_eq!(parse("enter").unwrap().key, Key::Enter);
        assert_eq!(parse("Return").unwrap().key, Key::Enter);
        assert_eq!(parse("esc").unwrap().key, Key::Escape);
        assert_eq!(parse("escape").unwrap().key, Key::Escape);
        assert_eq!(parse("7").unwrap().key, Key::Char('7'));
        for (name, key) in [
            ("tab", Key::Tab),
            ("space", Key::Space),
            ("backspace", Key::Backspace),
            ("delete", Key::Delete),
            ("up", Key::Up),
            ("down", Key::Down),
            ("left", Key::Left),
            ("right", Key::Right),
            ("home", Key::Home),
            ("end", Key::End),
            ("pageup", Key::PageUp),
            ("pagedown", Key::PageDown),
        ] {
            assert_eq!(parse(name).unwrap().key, key, "{name}");
            assert_eq!(parse(name).unwrap().to_string(), name);
        }
        assert_eq!(parse("Ctrl+Shift+F5").unwrap().to_string(), "ctrl+shift+f5");
    }

    #[test]
    fn rejects_what_it_cannot_press() {
        for bad in [
            "",
            "ctrl+",
            "ctrl",
            "hyper+a",
            "ctrl+s+x",
            "s+ctrl",
            "f13",
            "f0",
            "é",
            "ctrl++",
            "printscreen",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, ToolError::KeyCombo { .. }), "{bad}: {e}");
        }
        let e = parse("ctrl+printscreen").unwrap_err().to_string();
        assert!(e.contains("`printscreen` is not a key name"), "{e}");
        assert!(
            e.contains("pageup"),
            "the message lists what is accepted: {e}"
        );
    }

    #[test]
    fn enigo_keys_cover_every_function_key() {
        for n in 1..=12u8 {
            let k = enigo_key(Key::F(n));
            assert_eq!(format!("{k:?}"), format!("F{n}"));
        }
    }

    #[test]
    fn mouse_buttons() {
        assert_eq!("Left".parse::<MouseButton>().unwrap(), MouseButton::Left);
        assert_eq!("right".parse::<MouseButton>().unwrap(), MouseButton::Right);
        assert_eq!(
            "middle".parse::<MouseButton>().unwrap(),
            MouseButton::Middle
        );
        assert!("back".parse::<MouseButton>().is_err());
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn no_display_is_a_clear_error() {
        let e = InputDriver::with_display(":54321").unwrap_err().to_string();
        assert!(
            e.contains("cannot connect to the X server at :54321"),
            "{e}"
        );
    }
}
