//! The LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor):
//! a head of five linear layers 768→1024→128→64→16→1, with no activation between them (the
//! release's ReLUs are commented out; its dropouts act only in training), on the L2-normalised
//! CLIP ViT-L/14 image embedding. Its `.pth` is a state dict with the keys
//! `layers.{0,2,4,6,7}.{weight,bias}` (nn.Sequential indices; 1, 3, 5 are the dropouts).
use crate::weights::safetensors_io::{TensorFile, TensorSource};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// The scores.csv column.
pub const METRIC: &str = "aesthetic";
/// The embedding width the head takes: CLIP ViT-L/14's projection.
pub const EMBED_DIM: usize = 768;
/// (state-dict index, out features, in features) of each linear layer, in order.
const LAYERS: [(usize, usize, usize); 5] = [
    (0, 1024, EMBED_DIM),
    (2, 128, 1024),
    (4, 64, 128),
    (6, 16, 64),
    (7, 1, 16),
];

/// One linear layer in f64: `weight` row-major [out][in].
struct Linear {
    weight: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

impl Linear {
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        self.weight
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + b)
            .collect()
    }
}

/// The predictor's head, loaded once and applied per image in f64.
pub struct AestheticHead {
    path: PathBuf,
    layers: Vec<Linear>,
}

impl AestheticHead {
    /// Reads the head from a `.pth` state dict (through the pickle-safe conversion) or its
    /// safetensors copy; a missing tensor or a wrong shape is an error naming file and tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let file =
            TensorFile::open(path).with_context(|| format!("aesthetic {}", path.display()))?;
        let mut layers = Vec::with_capacity(LAYERS.len());
        for (index, out, inp) in LAYERS {
            let weight = read(&file, path, &format!("layers.{index}.weight"), &[out, inp])?;
            let bias = read(&file, path, &format!("layers.{index}.bias"), &[out])?;
            layers.push(Linear {
                weight: weight.chunks(inp).map(<[f64]>::to_vec).collect(),
                bias,
            });
        }
        Ok(AestheticHead {
            path: path.to_path_buf(),
            layers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The score of one image embedding, normalised first as the release does.
    pub fn score(&self, embedding: &[f64]) -> f64 {
        let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt();
        let x: Vec<f64> = embedding.iter().map(|v| v / norm).collect();
        self.layers.iter().fold(x, |x, layer| layer.apply(&x))[0]
    }

    /// The head reads ViT-L/14's 768-d embedding: another scorer cannot feed it.
    pub fn check_scorer(&self, scorer: &Path, dim: usize) -> Result<()> {
        if dim != EMBED_DIM {
            bail!(
                "aesthetic {} takes a {EMBED_DIM}-d CLIP ViT-L/14 image embedding, but the \
                 scorer {} embeds images in {dim} dimensions; use a ViT-L/14 scorer (e.g. \
                 hf:openai/clip-vit-large-patch14) or leave [models] aesthetic out",
                self.path.display(),
                scorer.display()
            );
        }
        Ok(())
    }
}

/// The tensor `name` of the head as f64, checked against `shape`.
fn read(file: &TensorFile, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
    match file.shape(name) {
        None => bail!(
            "aesthetic {}: no tensor {name}; expected the improved-aesthetic-predictor state \
             dict (layers.0/2/4/6/7 .weight and .bias)",
            path.display()
        ),
        Some(s) if s != shape => bail!(
            "aesthetic {}: tensor {name} has shape {s:?}, expected {shape:?}",
            path.display()
        ),
        Some(_) => {}
    }
    let t = file.get(name, Device::Cpu, Kind::Double)?.flatten(0, -1);
    Vec::<f64>::try_from(&t).with_context(|| format!("aesthetic {}: {name}", path.display()))
}
