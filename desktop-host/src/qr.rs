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

/// Writes the code as a black-on-white greyscale PNG.
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
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().context("writing the PNG header")?;
    w.write_image_data(&pixels).context("writing the PNG")?;
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
}
