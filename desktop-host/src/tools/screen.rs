//! Screenshots of the desktop, as PNG.
//!
//! Captured with `xcap`, the maintained successor of `screenshots`: the `screenshots` author
//! deprecated that crate ("Move to XCap"), and Rust warns its code will be rejected by a future
//! version of the compiler.
//!
//! X11 versus Wayland: xcap picks its Wayland path whenever `XDG_SESSION_TYPE=wayland` or
//! `WAYLAND_DISPLAY` is set, even if the X server in `DISPLAY` would work (an Xvfb started from a
//! Wayland desktop's terminal, say). A library cannot safely change the process environment, so
//! the host that should capture X must be started without those variables; when capture fails
//! with them set, the error says so.

use std::fmt;

use super::ToolError;

/// A screenshot.
#[derive(Clone)]
pub struct CapturedImage {
    /// The PNG file's bytes (8-bit RGBA).
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl fmt::Debug for CapturedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedImage")
            .field("png", &format_args!("{} bytes", self.png.len()))
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Captures the primary monitor, or the first one when none says it is primary (Xvfb's only
/// monitor does not), and encodes it as PNG. Blocks for the capture and the encoding; from async
/// code use [`capture_png_async`].
pub fn capture_png() -> Result<CapturedImage, ToolError> {
    check_session()?;
    let capture_err = |reason: String| ToolError::Capture {
        reason: explain(reason),
    };
    let monitors = xcap::Monitor::all().map_err(|e| capture_err(e.to_string()))?;
    let monitor = monitors
        .iter()
        .find(|m| m.is_primary().unwrap_or(false))
        .or_else(|| monitors.first())
        .ok_or_else(|| capture_err("no monitor found".to_string()))?;
    let image = monitor
        .capture_image()
        .map_err(|e| capture_err(e.to_string()))?;
    let (width, height) = (image.width(), image.height());
    let png = encode_png(image.as_raw(), width, height)?;
    Ok(CapturedImage { png, width, height })
}

/// [`capture_png`] on tokio's blocking pool, so the async runtime keeps running meanwhile.
pub async fn capture_png_async() -> Result<CapturedImage, ToolError> {
    tokio::task::spawn_blocking(capture_png)
        .await
        .map_err(|e| ToolError::Capture {
            reason: format!("the capture thread failed: {e}"),
        })?
}

/// Encodes 8-bit RGBA pixels as PNG. Fast compression: a screenshot is sent once and shown once,
/// so encoding time matters more than the last few percent of size.
pub(crate) fn encode_png(rgba: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ToolError> {
    let encode_err = |e: png::EncodingError| ToolError::Capture {
        reason: format!("could not encode the screenshot as PNG: {e}"),
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(encode_err)?;
    writer.write_image_data(rgba).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    Ok(out)
}

#[cfg(all(unix, not(target_os = "macos")))]
fn check_session() -> Result<(), ToolError> {
    // A pure Wayland session (no Xwayland) has no DISPLAY but may still be captured through the
    // portal.
    if super::session::wayland_hint().is_some() {
        return Ok(());
    }
    super::session::x_display().map(|_| ())
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn check_session() -> Result<(), ToolError> {
    Ok(())
}

/// Adds the likely cause when the environment sent xcap down its Wayland path.
#[cfg(all(unix, not(target_os = "macos")))]
fn explain(reason: String) -> String {
    match (super::session::wayland_hint(), std::env::var("DISPLAY")) {
        (Some(vars), Ok(display)) if !display.is_empty() => format!(
            "{reason} ({vars} is set, so the Wayland capture path was used although DISPLAY={display} \
             is also set; if this is an X session, start the host without WAYLAND_DISPLAY and with \
             XDG_SESSION_TYPE=x11)"
        ),
        (Some(vars), _) => format!("{reason} (Wayland session: {vars})"),
        _ => reason,
    }
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
fn explain(reason: String) -> String {
    reason
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn encodes_a_decodable_png() {
        let (w, h) = (3u32, 2u32);
        let pixels: Vec<u8> = (0..w * h).flat_map(|i| [i as u8, 10, 20, 255]).collect();
        let png_bytes = encode_png(&pixels, w, h).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w, h));
        assert_eq!(&buf[..info.buffer_size()], &pixels[..]);
    }

    #[test]
    fn wrong_buffer_size_is_an_error_not_a_panic() {
        assert!(encode_png(&[0; 5], 3, 2).is_err());
    }
}
