//! Filmstrips (`[plots] filmstrip`): a grid cell drawn as a row of its x̂₀ at the trace steps,
//! each labelled with its step, then the cell's picture (what `[plots] show` shows).
use super::font;
use crate::images::load_rgb;
use crate::run::records::Record;
use crate::scoring::traces::trace_files;
use anyhow::Result;
use image::{Rgb, RgbImage, imageops};
use std::collections::BTreeSet;
use std::path::Path;

/// Frames wider or taller than this are scaled down, so that a strip stays readable in a grid.
pub const MAX_FRAME: u32 = 256;
/// Smaller images are scaled up to this, so that the step labels fit.
pub const MIN_FRAME: u32 = 64;
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const MISSING: Rgb<u8> = Rgb([225, 225, 225]);

/// The geometry of the strips of one sheet.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    /// The trace steps shown (the union of the sheet's cells' steps).
    pub steps: Vec<usize>,
    pub frame_w: u32,
    pub frame_h: u32,
    pub label_h: u32,
    pub gap: u32,
    pub font_px: f32,
}

impl Frames {
    /// Strips for the traced cells among `members`; `None` when none is traced.
    pub fn of(records: &[Record], members: &[usize], img_w: u32, img_h: u32) -> Option<Frames> {
        let steps: BTreeSet<usize> = members
            .iter()
            .flat_map(|&i| trace_files(&records[i]))
            .map(|(s, _)| s)
            .collect();
        if steps.is_empty() {
            return None;
        }
        let side = img_w.max(img_h) as f32;
        let scale = side.clamp(MIN_FRAME as f32, MAX_FRAME as f32) / side;
        let frame_w = ((img_w as f32 * scale).round() as u32).max(8);
        let frame_h = ((img_h as f32 * scale).round() as u32).max(8);
        let font_px = (frame_w as f32 / 10.0).clamp(10.0, 18.0);
        Some(Frames {
            steps: steps.into_iter().collect(),
            frame_w,
            frame_h,
            label_h: font::line_height(font_px) + 2,
            gap: (frame_w / 32).clamp(2, 6),
            font_px,
        })
    }

    /// The strip's size: one frame per step and one for the picture.
    pub fn size(&self) -> (u32, u32) {
        let n = self.steps.len() as u32 + 1;
        (
            n * self.frame_w + (n - 1) * self.gap,
            self.label_h + self.frame_h,
        )
    }

    /// The strip of `record`: its x̂₀ at each step (a grey frame where it has none), then
    /// `picture`.
    pub fn draw(&self, run_dir: &Path, record: &Record, picture: RgbImage) -> Result<RgbImage> {
        let (w, h) = self.size();
        let mut strip = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        let traces = trace_files(record);
        let mut frames: Vec<(String, Option<RgbImage>)> = Vec::new();
        for step in &self.steps {
            let image = match traces.iter().find(|(s, _)| s == step) {
                Some((_, file)) => Some(load_rgb(&run_dir.join(file))?),
                None => None,
            };
            frames.push((format!("x̂₀ step {step}"), image));
        }
        frames.push(("image".into(), Some(picture)));
        for (k, (label, image)) in frames.into_iter().enumerate() {
            let x = k as u32 * (self.frame_w + self.gap);
            let text = font::fit(&label, self.font_px, self.frame_w as f32);
            let tw = font::text_width(&text, self.font_px);
            font::draw_text(
                &mut strip,
                &text,
                x as f32 + (self.frame_w as f32 - tw) / 2.0,
                1.0,
                self.font_px,
                INK,
            );
            let frame = match image {
                Some(img) => imageops::resize(
                    &img,
                    self.frame_w,
                    self.frame_h,
                    imageops::FilterType::Triangle,
                ),
                None => RgbImage::from_pixel(self.frame_w, self.frame_h, MISSING),
            };
            imageops::replace(&mut strip, &frame, x as i64, self.label_h as i64);
        }
        Ok(strip)
    }
}
