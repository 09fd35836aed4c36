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
/// `*_tokens` [image tokens, h, w]; `text_tokens` [77, h, w]. No `negative*` where no row
/// carries a negative image.
fn named(m: &CellMaps) -> Vec<(&'static str, &Tensor)> {
    let mut named = vec![
        ("positive", &m.positive),
        ("positive_blocks", &m.positive_blocks),
        ("positive_tokens", &m.positive_tokens),
        ("text_tokens", &m.text_tokens),
    ];
    if let Some(n) = &m.negative {
        named.extend([
            ("negative", &n.mean),
            ("negative_blocks", &n.blocks),
            ("negative_tokens", &n.tokens),
        ]);
    }
    named
}

/// Writes every map of cell `cell_id`.
pub fn write(run_dir: &Path, cell_id: &str, maps: &CellMaps) -> Result<()> {
    write_in(&run_dir.join("maps").join(cell_id), maps)
}

/// Writes every map as `dir/attention_<name>.npy` (`negimg generate --maps`: beside the
/// image, the same files as a run's cell).
pub fn write_in(dir: &Path, maps: &CellMaps) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, t) in named(maps) {
        write_one(&dir.join(format!("attention_{name}.npy")), t)?;
    }
    if let Some(t) = &maps.negtome_merged {
        write_one(&dir.join("attention_negtome_merged.npy"), t)?;
    }
    Ok(())
}

fn write_one(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
    atomic_write(path, &npy::encode_shape(&shape, &values))
}
