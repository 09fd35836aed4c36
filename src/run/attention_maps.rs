//! A cell's attention maps as files (README, "Attention maps"):
//! `maps/<cell-id>/attention_<name>.npy`, float32 at the latent grid, written atomically
//! before the cell's record (a cell is done iff its record says so); in batches where
//! NegToMe merged, also `attention_negtome_merged.npy`.
use super::fsio::atomic_write;
use crate::npy;
use crate::pipeline::attention_maps::CellMaps;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// `maps/<cell-id>/attention_<name>.npy`.
pub fn file(run_dir: &Path, cell_id: &str, name: &str) -> PathBuf {
    run_dir
        .join("maps")
        .join(cell_id)
        .join(format!("attention_{name}.npy"))
}

/// Each map by file name: `negative`, `positive` [h, w]; `*_blocks` [blocks, h, w];
/// `*_tokens` [image tokens, h, w]; `text_tokens` [77, h, w].
fn named(m: &CellMaps) -> [(&'static str, &Tensor); 7] {
    [
        ("negative", &m.negative),
        ("positive", &m.positive),
        ("negative_blocks", &m.negative_blocks),
        ("positive_blocks", &m.positive_blocks),
        ("negative_tokens", &m.negative_tokens),
        ("positive_tokens", &m.positive_tokens),
        ("text_tokens", &m.text_tokens),
    ]
}

/// Writes every map of cell `cell_id`.
pub fn write(run_dir: &Path, cell_id: &str, maps: &CellMaps) -> Result<()> {
    let dir = run_dir.join("maps").join(cell_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, t) in named(maps) {
        write_one(&file(run_dir, cell_id, name), t)?;
    }
    if let Some(t) = &maps.negtome_merged {
        write_one(&file(run_dir, cell_id, "negtome_merged"), t)?;
    }
    Ok(())
}

fn write_one(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
    atomic_write(path, &npy::encode_shape(&shape, &values))
}
