//! Comparison grids (like AUTOMATIC1111's X/Y/Z plot): one axis on the rows, one on the
//! columns, the others on pages; the seeds side by side inside a cell or on pages; the input
//! images as a header; labels "name: value"; an optional score caption under each image.
//! Sheets larger than the size cap are split into parts.
use super::font;
use crate::images::load_rgb;
use crate::run::info::{Axis, RunInfo};
use crate::run::records::{Record, Status};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage, imageops};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const FAILED: Rgb<u8> = Rgb([200, 200, 200]);
/// A cell without a record: not made yet (a partial or killed run).
const PENDING: Rgb<u8> = Rgb([236, 236, 236]);

#[derive(Clone, Debug)]
pub struct GridOptions {
    /// Size cap of one sheet in pixels; larger grids are split into parts.
    pub max_width: u32,
    pub max_height: u32,
    /// Seeds go side by side inside a cell up to this many, on pages beyond.
    pub max_side_by_side: usize,
    /// Width of the smaller JPEG copy.
    pub jpeg_width: u32,
    pub jpeg_quality: u8,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            max_width: 8192,
            max_height: 8192,
            max_side_by_side: 4,
            jpeg_width: 1600,
            jpeg_quality: 85,
        }
    }
}

/// Which axes go on rows, columns and pages, and whether seeds share a cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrangement {
    pub rows: Option<Axis>,
    pub cols: Option<Axis>,
    pub pages: Vec<Axis>,
    /// Seeds shown side by side inside each cell (empty: one image per cell).
    pub seeds_in_cell: Vec<String>,
}

/// RunInfo.plots where it names axes; otherwise the two axes with the most values on columns
/// and rows, the others on pages; seeds fill an empty row/column slot, else go side by side
/// (up to `max_side_by_side`), else on pages.
pub fn arrange(info: &RunInfo, records: &[Record], opts: &GridOptions) -> Arrangement {
    let axes = info.merged_axes(records);
    // A named axis, or the zipped axis it is part of.
    let find = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| {
                axes.iter()
                    .find(|a| a.name.split(", ").any(|part| part == n))
            })
            .cloned()
    };
    let mut rows = find(&info.plots.rows);
    let mut cols = find(&info.plots.cols);
    let mut pages: Vec<Axis> = find(&info.plots.pages).into_iter().collect();
    let placed = |name: &str, rows: &Option<Axis>, cols: &Option<Axis>, pages: &[Axis]| {
        rows.iter()
            .chain(cols.iter())
            .chain(pages)
            .any(|a| a.name == name)
    };
    let mut rest: Vec<Axis> = axes
        .iter()
        .filter(|a| a.name != "seed" && a.values.len() > 1)
        .filter(|a| !placed(&a.name, &rows, &cols, &pages))
        .cloned()
        .collect();
    rest.sort_by_key(|a| std::cmp::Reverse(a.values.len()));
    let mut rest = rest.into_iter();
    if cols.is_none() {
        cols = rest.next();
    }
    if rows.is_none() {
        rows = rest.next();
    }
    pages.extend(rest);
    let seeds = axes
        .iter()
        .find(|a| a.name == "seed")
        .cloned()
        .unwrap_or_else(|| {
            let mut s: Vec<u64> = records.iter().map(|r| r.seed).collect();
            s.sort();
            s.dedup();
            Axis {
                name: "seed".into(),
                values: s.iter().map(|v| v.to_string()).collect(),
            }
        });
    let mut seeds_in_cell = Vec::new();
    if seeds.values.len() > 1 && !placed("seed", &rows, &cols, &pages) {
        if cols.is_none() {
            cols = Some(seeds);
        } else if rows.is_none() {
            rows = Some(seeds);
        } else if seeds.values.len() <= opts.max_side_by_side {
            seeds_in_cell = seeds.values;
        } else {
            pages.push(seeds);
        }
    }
    Arrangement {
        rows,
        cols,
        pages,
        seeds_in_cell,
    }
}

/// Pixel geometry of one sheet.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub margin: u32,
    pub gap: u32,
    /// Space between seeds inside a cell.
    pub sub_gap: u32,
    pub img_w: u32,
    pub img_h: u32,
    /// Images per cell (seeds side by side).
    pub subs: u32,
    pub font_px: f32,
    /// Caption strip under each image (0 without captions).
    pub caption_h: u32,
    /// Title and input images.
    pub header_h: u32,
    pub thumb_h: u32,
    /// Side of the image shown under the label of an image axis (positive_image...).
    pub label_thumb_h: u32,
    pub col_label_h: u32,
    pub row_label_w: u32,
    pub rows: u32,
    pub cols: u32,
    pub width: u32,
    pub height: u32,
}

impl Layout {
    pub fn cell_w(&self) -> u32 {
        self.subs * self.img_w + (self.subs - 1) * self.sub_gap
    }
    pub fn cell_h(&self) -> u32 {
        self.img_h + self.caption_h
    }
    /// Top-left corner of the first image of cell (row, col).
    pub fn cell_origin(&self, row: u32, col: u32) -> (u32, u32) {
        (
            self.margin + self.row_label_w + col * (self.cell_w() + self.gap),
            self.margin + self.header_h + self.col_label_h + row * (self.cell_h() + self.gap),
        )
    }
    /// Rectangle (x, y, w, h) of image `sub` of cell (row, col).
    pub fn image_rect(&self, row: u32, col: u32, sub: u32) -> (u32, u32, u32, u32) {
        let (x, y) = self.cell_origin(row, col);
        (
            x + sub * (self.img_w + self.sub_gap),
            y,
            self.img_w,
            self.img_h,
        )
    }
    /// Rectangle of the label of column `col`.
    pub fn col_label_rect(&self, col: u32) -> (u32, u32, u32, u32) {
        let (x, y) = self.cell_origin(0, col);
        (x, y - self.col_label_h, self.cell_w(), self.col_label_h)
    }
    /// Rectangle of the label of row `row`.
    pub fn row_label_rect(&self, row: u32) -> (u32, u32, u32, u32) {
        let (_, y) = self.cell_origin(row, 0);
        (self.margin, y, self.row_label_w, self.cell_h())
    }
}

/// One sheet to draw: labels, record indices per cell, header images, geometry.
#[derive(Clone, Debug)]
pub struct SheetPlan {
    pub title: String,
    /// File name without extension, under `grids/`.
    pub stem: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// Input image (file relative to the run folder) under each label of an image axis.
    pub row_thumbs: Vec<Option<String>>,
    pub col_thumbs: Vec<Option<String>>,
    /// `cells[row][col][sub]`: index into the records, `None` where no record exists.
    pub cells: Vec<Vec<Vec<Option<usize>>>>,
    /// (label, file relative to the run folder) of the input images shown in the header.
    pub inputs: Vec<(String, String)>,
    pub layout: Layout,
    /// What each cell shows (`[plots] show`, `overlay`) and the maps' colour scale.
    pub show: super::maps::Picture,
    pub change_scale: f32,
    /// Each cell as a filmstrip of its x̂₀ traces (`[plots] filmstrip`), or its picture alone.
    pub filmstrip: Option<super::filmstrip::Frames>,
}

/// `name: value`; a derived image shows its caption (kind, strength, source) for its name.
fn label(axis: &Option<Axis>, value: &str, captions: &BTreeMap<String, String>) -> String {
    let shown: Vec<&str> = value
        .split(", ")
        .map(|part| captions.get(part).map_or(part, String::as_str))
        .collect();
    match axis {
        Some(a) if value.is_empty() => format!("{}: (none)", a.name),
        Some(a) => format!("{}: {}", a.name, shown.join(", ")),
        None => String::new(),
    }
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// Every sheet of a run: pages x parts.
pub fn plan_sheets(
    info: &RunInfo,
    records: &[Record],
    captions: bool,
    opts: &GridOptions,
) -> Vec<SheetPlan> {
    let arr = arrange(info, records, opts);
    let one = |a: &Option<Axis>| match a {
        Some(a) => a.values.clone(),
        None => vec![String::new()],
    };
    let row_values = one(&arr.rows);
    let col_values = one(&arr.cols);
    let subs: Vec<String> = if arr.seeds_in_cell.is_empty() {
        vec![String::new()]
    } else {
        arr.seeds_in_cell.clone()
    };
    // Every record by (page values, row, col, seed-in-cell).
    let field = |r: &Record, a: &Option<Axis>| {
        a.as_ref()
            .and_then(|a| r.axis_value(&a.name))
            .unwrap_or_default()
    };
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let mut key: Vec<String> = arr
            .pages
            .iter()
            .map(|a| r.axis_value(&a.name).unwrap_or_default())
            .collect();
        key.push(field(r, &arr.rows));
        key.push(field(r, &arr.cols));
        key.push(if arr.seeds_in_cell.is_empty() {
            String::new()
        } else {
            r.seed.to_string()
        });
        index.entry(key).or_insert(i);
    }
    // Cartesian product of the page axes.
    let mut pages: Vec<Vec<String>> = vec![Vec::new()];
    for axis in &arr.pages {
        pages = pages
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(v.clone());
                    q
                })
            })
            .collect();
    }
    let mut sheets = Vec::new();
    for page in pages {
        let cells: Vec<Vec<Vec<Option<usize>>>> = row_values
            .iter()
            .map(|rv| {
                col_values
                    .iter()
                    .map(|cv| {
                        subs.iter()
                            .map(|s| {
                                let mut key = page.clone();
                                key.extend([rv.clone(), cv.clone(), s.clone()]);
                                index.get(&key).copied()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let members: Vec<usize> = cells
            .iter()
            .flatten()
            .flatten()
            .flatten()
            .copied()
            .collect();
        if members.is_empty() {
            continue;
        }
        let page_text: Vec<String> = arr
            .pages
            .iter()
            .zip(&page)
            .map(|(a, v)| format!("{}: {v}", a.name))
            .collect();
        let title = if page_text.is_empty() {
            info.experiment.clone()
        } else {
            format!("{} — {}", info.experiment, page_text.join(", "))
        };
        let mut stem = "grid".to_string();
        for (a, v) in arr.pages.iter().zip(&page) {
            stem.push_str(&format!("_{}-{}", slug(&a.name), slug(v)));
        }
        // Input images used on this page, positives first.
        let mut inputs: Vec<(String, String)> = Vec::new();
        for (role, pick) in [("positive", true), ("negative", false)] {
            let mut names: Vec<&str> = members
                .iter()
                .map(|&i| {
                    let r = &records[i];
                    if pick {
                        r.positive_image.as_str()
                    } else {
                        r.negative_image.as_str()
                    }
                })
                .filter(|n| !n.is_empty())
                .collect();
            names.sort();
            names.dedup();
            for n in names {
                if let Some(file) = info.images.get(n) {
                    let text = match info.captions.get(n) {
                        Some(c) => format!("{role}: {n} ({c})"),
                        None => format!("{role}: {n}"),
                    };
                    inputs.push((text, file.clone()));
                }
            }
        }
        let img_w = members
            .iter()
            .map(|&i| records[i].width as u32)
            .max()
            .unwrap_or(64)
            .max(8);
        let img_h = members
            .iter()
            .map(|&i| records[i].height as u32)
            .max()
            .unwrap_or(64)
            .max(8);
        let font_px = (img_w as f32 / 20.0).clamp(12.0, 28.0);
        let filmstrip = info
            .plots
            .filmstrip
            .unwrap_or(true)
            .then(|| super::filmstrip::Frames::of(records, &members, img_w, img_h))
            .flatten();
        let (img_w, img_h) = filmstrip.as_ref().map_or((img_w, img_h), |f| f.size());
        let caps = &info.captions;
        let row_labels: Vec<String> = row_values
            .iter()
            .map(|v| label(&arr.rows, v, caps))
            .collect();
        let col_labels: Vec<String> = col_values
            .iter()
            .map(|v| label(&arr.cols, v, caps))
            .collect();
        let line = font::line_height(font_px);
        let pad = (font_px / 2.0).ceil() as u32;
        // Image axes show their image under the label.
        let thumbs_of = |axis: &Option<Axis>, values: &[String]| -> Vec<Option<String>> {
            let part = axis.as_ref().and_then(|a| {
                a.name
                    .split(", ")
                    .position(|p| p == "positive_image" || p == "negative_image")
            });
            values
                .iter()
                .map(|v| {
                    let name = v.split(", ").nth(part?)?;
                    info.images.get(name).cloned()
                })
                .collect()
        };
        let row_thumbs = thumbs_of(&arr.rows, &row_values);
        let col_thumbs = thumbs_of(&arr.cols, &col_values);
        let label_thumb_h = (img_h / 3)
            .clamp(24, 128)
            .min(img_h.saturating_sub(line + pad).max(8));
        let row_label_w = if arr.rows.is_some() {
            let widest = row_labels
                .iter()
                .map(|l| font::text_width(l, font_px))
                .fold(0.0f32, f32::max);
            let widest = if row_thumbs.iter().any(Option::is_some) {
                widest.max(label_thumb_h as f32)
            } else {
                widest
            };
            (widest.ceil() as u32 + 2 * pad).min(2 * img_w)
        } else {
            0
        };
        let thumb_h = (img_h / 2).clamp(32, 192);
        let header_h = line
            + pad
            + if inputs.is_empty() {
                0
            } else {
                line + thumb_h + pad
            };
        let caption_h = if captions || !arr.seeds_in_cell.is_empty() {
            font::line_height(font_px * 0.8) + pad / 2
        } else {
            0
        };
        let base = Layout {
            margin: (font_px as u32).max(8),
            gap: (img_w / 16).clamp(6, 32),
            sub_gap: (img_w / 128).clamp(1, 4),
            img_w,
            img_h,
            subs: subs.len() as u32,
            font_px,
            caption_h,
            header_h,
            thumb_h,
            label_thumb_h,
            col_label_h: match (&arr.cols, col_thumbs.iter().any(Option::is_some)) {
                (None, _) => 0,
                (Some(_), false) => line + pad,
                (Some(_), true) => line + pad + label_thumb_h + pad,
            },
            row_label_w,
            rows: 0,
            cols: 0,
            width: 0,
            height: 0,
        };
        // Split to respect the size cap: as many rows/columns per part as fit (at least one).
        let fit = |avail: u32, cell: u32, gap: u32| ((avail + gap) / (cell + gap)).max(1) as usize;
        let per_sheet_cols = fit(
            opts.max_width
                .saturating_sub(2 * base.margin + base.row_label_w),
            base.cell_w(),
            base.gap,
        );
        let per_sheet_rows = fit(
            opts.max_height
                .saturating_sub(2 * base.margin + base.header_h + base.col_label_h),
            base.cell_h(),
            base.gap,
        );
        let row_chunks: Vec<_> = (0..row_values.len())
            .collect::<Vec<_>>()
            .chunks(per_sheet_rows)
            .map(<[usize]>::to_vec)
            .collect();
        let col_chunks: Vec<_> = (0..col_values.len())
            .collect::<Vec<_>>()
            .chunks(per_sheet_cols)
            .map(<[usize]>::to_vec)
            .collect();
        let parts = row_chunks.len() * col_chunks.len();
        let header_w = inputs
            .iter()
            .map(|(l, _)| {
                let tw = thumb_h * img_w / img_h;
                (font::text_width(l, font_px).ceil() as u32).max(tw) + base.gap
            })
            .sum::<u32>();
        for (p, (rows, cols)) in row_chunks
            .iter()
            .flat_map(|r| col_chunks.iter().map(move |c| (r, c)))
            .enumerate()
        {
            let mut layout = base.clone();
            layout.rows = rows.len() as u32;
            layout.cols = cols.len() as u32;
            let grid_w =
                layout.row_label_w + layout.cols * (layout.cell_w() + layout.gap) - layout.gap;
            let title_w = font::text_width(&title, font_px * 1.2).ceil() as u32;
            layout.width =
                2 * layout.margin + grid_w.max(header_w).max(title_w).min(opts.max_width);
            layout.height = 2 * layout.margin
                + layout.header_h
                + layout.col_label_h
                + layout.rows * (layout.cell_h() + layout.gap)
                - layout.gap;
            let (title, stem) = if parts > 1 {
                (
                    format!("{title} (part {} of {parts})", p + 1),
                    format!("{stem}_part{}", p + 1),
                )
            } else {
                (title.clone(), stem.clone())
            };
            sheets.push(SheetPlan {
                title,
                stem,
                row_labels: rows.iter().map(|&r| row_labels[r].clone()).collect(),
                col_labels: cols.iter().map(|&c| col_labels[c].clone()).collect(),
                row_thumbs: rows.iter().map(|&r| row_thumbs[r].clone()).collect(),
                col_thumbs: cols.iter().map(|&c| col_thumbs[c].clone()).collect(),
                cells: rows
                    .iter()
                    .map(|&r| cols.iter().map(|&c| cells[r][c].clone()).collect())
                    .collect(),
                inputs: inputs.clone(),
                layout,
                show: super::maps::Picture::of(&info.plots),
                change_scale: 1.0,
                filmstrip: filmstrip.clone(),
            });
        }
    }
    sheets
}

/// `img` scaled to fit (w, h), keeping its aspect ratio.
fn fit_into(img: RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img;
    }
    let scale = (w as f32 / img.width() as f32).min(h as f32 / img.height() as f32);
    let nw = ((img.width() as f32 * scale).round() as u32).max(1);
    let nh = ((img.height() as f32 * scale).round() as u32).max(1);
    imageops::resize(&img, nw, nh, imageops::FilterType::Triangle)
}

fn fill(img: &mut RgbImage, (x, y, w, h): (u32, u32, u32, u32), color: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, color);
        }
    }
}

fn centered_text(img: &mut RgbImage, text: &str, (x, y, w, h): (u32, u32, u32, u32), px: f32) {
    let text = font::fit(text, px, w as f32);
    let tw = font::text_width(&text, px);
    let th = font::line_height(px) as f32;
    font::draw_text(
        img,
        &text,
        x as f32 + (w as f32 - tw) / 2.0,
        y as f32 + (h as f32 - th) / 2.0,
        px,
        INK,
    );
}

/// Draws one sheet. `captions[cell_id]` is the score text under an image (if any).
pub fn render_sheet(
    plan: &SheetPlan,
    run_dir: &Path,
    records: &[Record],
    captions: &HashMap<String, String>,
) -> Result<RgbImage> {
    let l = &plan.layout;
    let mut canvas = RgbImage::from_pixel(l.width, l.height, WHITE);
    let px = l.font_px;
    let line = font::line_height(px);
    // Header: title, then the input images with their role and name.
    font::draw_text(
        &mut canvas,
        &font::fit(&plan.title, px * 1.2, (l.width - 2 * l.margin) as f32),
        l.margin as f32,
        l.margin as f32,
        px * 1.2,
        INK,
    );
    let mut x = l.margin;
    let y = l.margin + line + (px / 2.0) as u32;
    for (text, file) in &plan.inputs {
        let path = run_dir.join(file);
        let img = load_rgb(&path)?;
        let tw = (l.thumb_h * img.width() / img.height().max(1)).max(1);
        let thumb = imageops::resize(&img, tw, l.thumb_h, imageops::FilterType::Triangle);
        font::draw_text(&mut canvas, text, x as f32, y as f32, px, INK);
        imageops::replace(&mut canvas, &thumb, x as i64, (y + line) as i64);
        x += (font::text_width(text, px).ceil() as u32).max(tw) + l.gap;
    }
    let pad = (px / 2.0).ceil() as u32;
    let label_thumb = |file: &str| -> Result<RgbImage> {
        let path = run_dir.join(file);
        let img = load_rgb(&path)?;
        Ok(fit_into(img, l.label_thumb_h, l.label_thumb_h))
    };
    for (c, text) in plan.col_labels.iter().enumerate() {
        let (x, y, w, h) = l.col_label_rect(c as u32);
        match &plan.col_thumbs[c] {
            Some(file) => {
                centered_text(&mut canvas, text, (x, y, w, line + pad), px);
                let thumb = label_thumb(file)?;
                let tx = x + w.saturating_sub(thumb.width()) / 2;
                imageops::replace(&mut canvas, &thumb, tx as i64, (y + line + pad) as i64);
            }
            None => centered_text(&mut canvas, text, (x, y, w, h), px),
        }
    }
    for (r, text) in plan.row_labels.iter().enumerate() {
        let (rx, ry, rw, _) = l.row_label_rect(r as u32);
        let fitted = font::fit(text, px, (rw.saturating_sub(2 * pad)) as f32);
        let thumb = plan.row_thumbs[r].as_deref().map(label_thumb).transpose()?;
        let block = line + thumb.as_ref().map_or(0, |t| t.height() + pad / 2);
        let top = ry + l.img_h.saturating_sub(block) / 2;
        font::draw_text(&mut canvas, &fitted, (rx + pad) as f32, top as f32, px, INK);
        if let Some(t) = thumb {
            imageops::replace(
                &mut canvas,
                &t,
                (rx + pad) as i64,
                (top + line + pad / 2) as i64,
            );
        }
    }
    // Cells: decode in parallel, then paste.
    let jobs: Vec<(u32, u32, u32, Option<usize>)> = plan
        .cells
        .iter()
        .enumerate()
        .flat_map(|(r, row)| {
            row.iter().enumerate().flat_map(move |(c, subs)| {
                subs.iter()
                    .enumerate()
                    .map(move |(s, idx)| (r as u32, c as u32, s as u32, *idx))
            })
        })
        .collect();
    let decoded: Vec<Result<Option<RgbImage>>> = jobs
        .par_iter()
        .map(|&(_, _, _, idx)| {
            let Some(r) = idx.map(|i| &records[i]) else {
                return Ok(None);
            };
            if r.status != Status::Done {
                return Ok(None);
            }
            let img = super::maps::cell_picture(run_dir, r, plan.show, plan.change_scale)?;
            let img = match &plan.filmstrip {
                Some(frames) => frames.draw(run_dir, r, img)?,
                None => img,
            };
            Ok(Some(fit_into(img, l.img_w, l.img_h)))
        })
        .collect();
    let caption_px = px * 0.8;
    for (&(r, c, s, idx), img) in jobs.iter().zip(decoded) {
        let rect = l.image_rect(r, c, s);
        match (idx.map(|i| &records[i]), img?) {
            (Some(_), Some(img)) => {
                let dx = (rect.2 - img.width()) / 2;
                let dy = (rect.3 - img.height()) / 2;
                imageops::replace(
                    &mut canvas,
                    &img,
                    (rect.0 + dx) as i64,
                    (rect.1 + dy) as i64,
                );
            }
            (Some(_), None) => {
                fill(&mut canvas, rect, FAILED);
                centered_text(&mut canvas, "failed", rect, px);
            }
            (None, _) => {
                fill(&mut canvas, rect, PENDING);
                centered_text(&mut canvas, "pending", rect, px);
            }
        }
        if let Some(rec) = idx.map(|i| &records[i])
            && l.caption_h > 0
        {
            let mut parts = Vec::new();
            if l.subs > 1 {
                parts.push(format!("seed {}", rec.seed));
            }
            if let Some(text) = captions.get(&rec.cell_id) {
                parts.push(text.clone());
            }
            let caption_rect = (rect.0, rect.1 + l.img_h, rect.2, l.caption_h);
            centered_text(&mut canvas, &parts.join("  "), caption_rect, caption_px);
        }
    }
    Ok(canvas)
}

/// A sheet written to disk.
#[derive(Clone, Debug)]
pub struct GridFile {
    pub title: String,
    /// PNG (full size) and JPEG (smaller), relative to the run folder.
    pub png: String,
    pub jpg: String,
    /// Its cells are filmstrips of their x̂₀ traces.
    pub filmstrip: bool,
}

/// Draws every sheet into `<run>/grids/` as a full-size PNG and a smaller JPEG.
pub fn write_grids(
    run_dir: &Path,
    info: &RunInfo,
    records: &[Record],
    captions: &HashMap<String, String>,
    opts: &GridOptions,
) -> Result<Vec<GridFile>> {
    let dir = run_dir.join("grids");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    let scale = match super::maps::Picture::of(&info.plots).kind() {
        None => 1.0,
        Some(kind) => super::maps::run_scale(run_dir, records, kind)?,
    };
    for mut plan in plan_sheets(info, records, !captions.is_empty(), opts) {
        plan.change_scale = scale;
        let canvas = render_sheet(&plan, run_dir, records, captions)?;
        let png = dir.join(format!("{}.png", plan.stem));
        canvas
            .save(&png)
            .with_context(|| format!("cannot write {}", png.display()))?;
        let small = if canvas.width() > opts.jpeg_width {
            let h = (canvas.height() as u64 * opts.jpeg_width as u64 / canvas.width() as u64).max(1)
                as u32;
            imageops::resize(&canvas, opts.jpeg_width, h, imageops::FilterType::Triangle)
        } else {
            canvas
        };
        let jpg = dir.join(format!("{}.jpg", plan.stem));
        let out = std::io::BufWriter::new(
            std::fs::File::create(&jpg)
                .with_context(|| format!("cannot write {}", jpg.display()))?,
        );
        image::codecs::jpeg::JpegEncoder::new_with_quality(out, opts.jpeg_quality)
            .encode_image(&small)
            .with_context(|| format!("cannot write {}", jpg.display()))?;
        files.push(GridFile {
            title: plan.title,
            png: format!("grids/{}.png", plan.stem),
            jpg: format!("grids/{}.jpg", plan.stem),
            filmstrip: plan.filmstrip.is_some(),
        });
    }
    Ok(files)
}
