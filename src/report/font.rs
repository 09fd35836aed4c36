//! The one font of every figure, DejaVu Sans, embedded in the binary (the `dejavu` crate):
//! figures look the same on every machine and need no system fonts.
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use std::sync::{Once, OnceLock};

/// The family name plotters knows the embedded font by.
pub const FAMILY: &str = "sans-serif";

pub fn sans() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        // The bytes are a font shipped in a crate we depend on; failing to parse them is a bug.
        FontRef::try_from_slice(dejavu::sans::regular()).expect("DejaVu Sans is a valid font")
    })
}

/// Registers DejaVu Sans (regular and bold) as plotters' `sans-serif`, once per process.
pub fn register_plotters_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use plotters::style::{FontStyle, register_font};
        let _ = register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Line height in pixels of text drawn at `px`.
pub fn line_height(px: f32) -> u32 {
    let f = sans().as_scaled(PxScale::from(px));
    (f.ascent() - f.descent() + f.line_gap()).ceil() as u32
}

/// Width in pixels of `text` at `px`.
pub fn text_width(text: &str, px: f32) -> f32 {
    let f = sans().as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            width += f.kern(p, id);
        }
        width += f.h_advance(id);
        prev = Some(id);
    }
    width
}

/// `text` cut with an ellipsis so that it fits in `max_width` pixels.
pub fn fit(text: &str, px: f32, max_width: f32) -> String {
    if text_width(text, px) <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let cut: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&cut, px) <= max_width {
            return cut;
        }
    }
    String::new()
}

/// Draws `text` with its top-left at (x, y), blending `color` over the image by coverage.
pub fn draw_text(img: &mut RgbImage, text: &str, x: f32, y: f32, px: f32, color: Rgb<u8>) {
    let f = sans().as_scaled(PxScale::from(px));
    let baseline = y + f.ascent();
    let mut caret = x;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, ab_glyph::point(caret, baseline));
        if let Some(outline) = f.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px_x = bounds.min.x as i64 + gx as i64;
                let px_y = bounds.min.y as i64 + gy as i64;
                if px_x < 0 || px_y < 0 || px_x >= img.width() as i64 || px_y >= img.height() as i64
                {
                    return;
                }
                let p = img.get_pixel_mut(px_x as u32, px_y as u32);
                let a = coverage.clamp(0.0, 1.0);
                for ch in 0..3 {
                    p.0[ch] = (p.0[ch] as f32 * (1.0 - a) + color.0[ch] as f32 * a).round() as u8;
                }
            });
        }
        caret += f.h_advance(id);
        prev = Some(id);
    }
}
