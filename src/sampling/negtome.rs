//! NegToMe's reference rows in a batch: one per distinct reference image among the cells
//! that merge, after the rows of [`guidance::row_layout`](super::guidance::row_layout),
//! shared by every cell with that image (it is conditioned on empty text and no image, so
//! it does not depend on the cell). Each row of a merging cell (uncond, cond, negative)
//! merges against its cell's reference row at the steps where the cell is active.
use super::guidance::row_layout;
use crate::params::GenParams;
use std::path::PathBuf;

/// Transformers over fewer tokens than this along a side do not merge (the reference code's
/// `min_attn_dim`: SD1.5 at 512x512 merges in `up_blocks.2` and `up_blocks.3`).
pub const MIN_SIZE: i64 = 32;

/// The reference rows of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceRows {
    /// The distinct reference images in order of first use; reference row k is UNet row
    /// `cell_rows + k`.
    pub images: Vec<PathBuf>,
    /// Per cell, the index of its reference image (`None`: the cell does not merge).
    pub of_cell: Vec<Option<usize>>,
    /// The number of cell rows ([`row_layout`]'s length).
    pub cell_rows: usize,
}

/// One merged row: its UNet row, its reference row, and its cell's α and threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MergedRow {
    pub row: usize,
    pub reference: usize,
    pub alpha: f64,
    pub threshold: f64,
}

impl ReferenceRows {
    pub fn new(cells: &[&GenParams]) -> ReferenceRows {
        let mut images: Vec<PathBuf> = vec![];
        let of_cell = cells
            .iter()
            .map(|c| {
                let p = c.negtome_image()?;
                Some(images.iter().position(|q| q == p).unwrap_or_else(|| {
                    images.push(p.clone());
                    images.len() - 1
                }))
            })
            .collect();
        ReferenceRows {
            images,
            of_cell,
            cell_rows: row_layout(cells).len(),
        }
    }

    /// The rows that merge at timestep `t`, in UNet row order; empty when no cell is active
    /// (then the reference rows are left out of that step's UNet call).
    pub fn merges(&self, cells: &[&GenParams], t: f64) -> Vec<MergedRow> {
        row_layout(cells)
            .into_iter()
            .enumerate()
            .filter(|(_, (i, _))| cells[*i].negtome_active(t))
            .filter_map(|(row, (i, _))| {
                let k = self.of_cell[i]?;
                Some(MergedRow {
                    row,
                    reference: self.cell_rows + k,
                    alpha: cells[i].negtome_alpha,
                    threshold: cells[i].negtome_threshold,
                })
            })
            .collect()
    }
}

/// The UNet rows NegToMe adds when `cells` (sharing a batch key) make one batch, summed
/// over the steps of `timesteps`: every reference row at each step where some cell merges.
pub fn reference_row_steps(cells: &[&GenParams], timesteps: &[f64]) -> usize {
    let refs = ReferenceRows::new(cells);
    let active = timesteps
        .iter()
        .filter(|&&t| cells.iter().any(|c| c.negtome_active(t)))
        .count();
    refs.images.len() * active
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Method, NegativeMode};

    #[test]
    fn cells_with_one_negative_image_share_one_reference_row() {
        let cell = |seed: u64, image: &str, method: Method| {
            let mut c = GenParams::new(seed);
            c.negative = NegativeMode::Image;
            c.negative_image = Some(image.into());
            c.method = method;
            c
        };
        let a = cell(0, "lawn.png", Method::Negtome);
        let plain = cell(1, "lawn.png", Method::Uncond);
        let mut b = cell(2, "sky.png", Method::ThreeBranch);
        b.negtome = true;
        b.negtome_alpha = 0.5;
        let c = cell(3, "lawn.png", Method::Negtome);
        let cells = [&a, &plain, &b, &c];
        let refs = ReferenceRows::new(&cells);
        assert_eq!(
            refs.images,
            vec![PathBuf::from("lawn.png"), PathBuf::from("sky.png")]
        );
        assert_eq!(refs.of_cell, vec![Some(0), None, Some(1), Some(0)]);
        // 4 uncond rows, 4 cond rows, b's negative row; references at rows 9 and 10.
        assert_eq!(refs.cell_rows, 9);
        let merges = refs.merges(&cells, 900.0);
        let pairs: Vec<(usize, usize)> = merges.iter().map(|m| (m.row, m.reference)).collect();
        assert_eq!(
            pairs,
            vec![(0, 9), (2, 10), (3, 9), (4, 9), (6, 10), (7, 9), (8, 10)]
        );
        assert_eq!(merges[1].alpha, 0.5);
        assert!(refs.merges(&cells, 500.0).is_empty(), "outside 800..=1000");
        // Two reference rows at the two steps in 800..=1000.
        assert_eq!(reference_row_steps(&cells, &[1000.0, 900.0, 799.0]), 4);
    }
}
