//! QR codes: shown in the terminal, written as PNG, and read back from PNG (the terminal phone
//! decodes the image the desktop wrote, which proves the PNG is scannable).

use std::path::Path;

use anyhow::{Context, Result, bail};
use qrcode::render::unicode::Dense1x2;
use qrcode::{Color, EcLevel, QrCode};

const MODULE_PX: usize = 8;
const QUIET_MODULES: usize = 4;

fn code(text: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).context("encoding the QR code")
}

/// The code drawn with half-block characters for a terminal.
pub fn terminal(text: &str) -> Result<String> {
    Ok(code(text)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the code as a black-on-white greyscale PNG, readable by its owner only (0600): the
/// code of a pairing payload is a live secret. The image goes to a new file created 0600 beside
/// `path` (never chmod-ed after the fact) and is renamed over `path`, so an existing file, or a
/// symlink planted at `path`, is replaced rather than written through, and no reader ever sees
/// a partial image.
pub fn write_png(text: &str, path: &Path) -> Result<()> {
    let qr = code(text)?;
    let modules = qr.width();
    let colors = qr.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * MODULE_PX;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == Color::Dark {
                for dy in 0..MODULE_PX {
                    let row = (y + QUIET_MODULES) * MODULE_PX + dy;
                    let start = row * side + (x + QUIET_MODULES) * MODULE_PX;
                    pixels[start..start + MODULE_PX].fill(0);
                }
            }
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates its files with mode 0600 (O_CREAT|O_EXCL).
    let mut file = tempfile::Builder::new()
        .prefix(".deskhand-qr-")
        .suffix(".png")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    {
        let mut enc = png::Encoder::new(file.as_file_mut(), side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("writing the PNG header")?;
        w.write_image_data(&pixels).context("writing the PNG")?;
        w.finish().context("writing the PNG")?;
    }
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Finds and decodes the first QR code in a PNG.
pub fn read_png(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .with_context(|| format!("{} is not a PNG image", path.display()))?;
    let mut buf = vec![0u8; reader.output_buffer_size().context("PNG too large")?];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("decoding {}", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let luma = |x: usize, y: usize| -> u8 {
        let i = (y * info.line_size) + x * channels;
        match channels {
            1 | 2 => buf[i],
            _ => {
                ((buf[i] as u32 * 299 + buf[i + 1] as u32 * 587 + buf[i + 2] as u32 * 114) / 1000)
                    as u8
            }
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    for grid in img.detect_grids() {
        if let Ok((_, text)) = grid.decode() {
            return Ok(text);
        }
    }
    bail!("no readable QR code found in {}", path.display())
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qr.png");
        let text = "deskhand://pair?v=1&id=abc&addr=127.0.0.1%3A9&token=00&name=x&exp=1";
        super::write_png(text, &p).unwrap();
        assert_eq!(super::read_png(&p).unwrap(), text);
        assert!(super::terminal(text).unwrap().lines().count() > 10);
    }

    #[test]
    fn the_png_of_a_live_code_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let p = dir.path().join("code.png");
        super::write_png("deskhand://pair?token=secret", &p).unwrap();
        assert_eq!(mode(&p), 0o600);
        // An existing world-readable file is replaced by a 0600 one, not written through.
        let old = dir.path().join("old.png");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_png("deskhand://pair?token=secret", &old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(
            super::read_png(&old).unwrap(),
            "deskhand://pair?token=secret"
        );
        // A symlink planted at the path is replaced; its target is untouched.
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        super::write_png("deskhand://pair?token=secret", &link).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(mode(&link), 0o600);
        // Nothing is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
}
