//! `negimg export IMAGE.png --diffusers OUT.py`: a run's cell as a standalone Python script
//! on diffusers + torch (no negimg) that makes the same image. The script is the cell as data
//! (parameters, UNet rows, models by reference, input images embedded), then fixed code
//! (`py/common.py`: loading, image features, per-row and per-block IP weights, windows, the
//! sampling loop with its schedulers), the method's guidance, how a cross-attention joins a
//! row's image terms (NAG) and NegToMe's merge ([`methods`]). An SDXL pipeline (diffusers'
//! `StableDiffusionXLPipeline` folder) is written as that pipeline's call: both text
//! encoders, the pooled text and each row's micro-conditioning, the presets on SDXL's 11
//! blocks. A single-file checkpoint pipeline (SD1.x or SDXL) is loaded by diffusers'
//! `from_single_file` with the configs negimg maps it with, written beside the script
//! (`OUT.configs/`). What a script cannot express is refused by name, never approximated.
mod methods;

use crate::params::{
    BlockLayout, GenParams, IpScaling, NegOff, NoImage, RowImage, SchedulerKind, Window,
};
use crate::pipeline::single_file::{self, Family, LdmCheckpoint};
use crate::pipeline::source::write_single_file_configs;
use crate::roles::Role;
use crate::run::ids::ModelFiles;
use crate::run::replay::StoredCell;
use crate::sampling::methods as registry;
use crate::weights::hub::HfRef;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMMON: &str = include_str!("py/common.py");

/// Writes `cell`'s export: the script `out` and, where the run's pipeline is a single file,
/// the folder of its configs beside it (`out` with the extension `configs`), which the
/// script names. Nothing is written when the cell is refused; an existing script or folder
/// is written over only with `force`. Returns the configs folder where one was written.
pub fn write_diffusers_export(
    cell: &StoredCell,
    out: &Path,
    force: bool,
) -> Result<Option<PathBuf>> {
    let configs = out.with_extension("configs");
    let single = single_file_pipeline(cell)?;
    let name = configs.file_name().map(|n| n.to_string_lossy().to_string());
    let script = diffusers_script(cell, name.as_deref().unwrap_or("configs"))?;
    let mut targets = vec![out];
    if single.is_some() {
        targets.push(&configs);
    }
    if let Some(existing) = targets.iter().find(|t| t.exists()).filter(|_| !force) {
        bail!(
            "{} exists: pass --force to write over it",
            existing.display()
        );
    }
    if let Some(ckpt) = &single {
        write_folder_atomically(&configs, |dir| write_single_file_configs(ckpt, dir))?;
    }
    crate::run::fsio::atomic_write(out, script.as_bytes())?;
    Ok(single.map(|_| configs))
}

/// Fills `dir` with `fill` in a temporary folder beside it, then puts it in place (over an
/// older `dir`), so that a failed export leaves no half folder.
fn write_folder_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))
}

/// The script that makes `cell`'s image with diffusers; a single-file pipeline's configs are
/// in the folder `configs` beside the script ([`write_diffusers_export`] writes it).
pub fn diffusers_script(cell: &StoredCell, configs: &str) -> Result<String> {
    let p = &cell.params;
    refuse_steps_and_off(p)?;
    let guide = methods::guidance(p.method)?;
    let merge = methods::token_merge(p.negtome_image().is_some());
    let terms = methods::image_terms(has_nag_rows(p));
    let images = ImageNames::of(p);
    let sdxl = is_sdxl(cell)?;
    let data = [
        ("CELL", cell_json(cell, sdxl)?),
        ("ROWS", rows_json(p, &images, sdxl)),
        ("MODELS", models_json(cell, configs)?),
        ("NEGTOME", negtome_json(p)?),
    ];
    let mut s = docstring(cell);
    s.push_str("import json\n\n");
    for (name, value) in data {
        s.push_str(&format!(
            "{name} = json.loads(r'''{}''')\n",
            python_safe_json(&value)?
        ));
    }
    s.push_str(&images_literal(&images)?);
    s.push('\n');
    s.push_str(COMMON);
    s.push_str(&guide.concat());
    s.push_str(terms);
    s.push_str(merge);
    s.push_str("\n\nif __name__ == \"__main__\":\n    main()\n");
    Ok(s)
}

/// What the script does not express yet, refused by name rather than approximated: step
/// sets (the script knows windows only) and `neg_off = "no_image"`.
fn refuse_steps_and_off(p: &GenParams) -> Result<()> {
    if p.steps_at.is_some() || p.neg_steps_at.is_some() {
        bail!(
            "export: the cell uses a step set (steps_at / neg_steps_at), which the diffusers \
             script does not express yet (it knows start/end windows); export a cell with a window"
        );
    }
    if p.neg_off == NegOff::NoImage {
        bail!(
            "export: the cell uses neg_off = \"no_image\", which the diffusers script does not \
             express yet (outside its window a branch gets IP scale 0 there); export a cell with \
             neg_off = \"zero\""
        );
    }
    Ok(())
}

/// Whether a row of the cell guides its cross-attention with NAG (a second term's `nag`).
fn has_nag_rows(p: &GenParams) -> bool {
    let method = registry::of(p.method);
    method
        .rows()
        .iter()
        .any(|&row| method.row(p, row).extra.is_some_and(|x| x.nag.is_some()))
}

fn docstring(cell: &StoredCell) -> String {
    let c = &cell.chunk;
    format!(
        r#"#!/usr/bin/env python3
"""Remakes {png} with diffusers, without negimg.

Cell {id} of experiment "{exp}", made by negimg {version} on {device} in {dtype}. On the
same device and dtype this script's image is within one 8-bit level of negimg's (checked on
CPU in fp32 by negimg's export tests).

Needs: Python 3.10+, torch, diffusers (tested: 0.42), transformers, safetensors, pillow,
numpy, and huggingface_hub for hf: models. Local model paths are those of the run's
machine: edit MODELS to point at your copies. The sha256 of every file negimg read is
listed; local files are checked against it first (--no-check skips that), hub models are
fetched by their reference and revision.

    python THIS.py [--out IMAGE.png] [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--no-check]
"""
"#,
        png = cell.png.display(),
        id = c.cell_id,
        exp = c.experiment,
        version = c.negimg_version,
        device = cell.device,
        dtype = c.dtype,
    )
}

fn scheduler_name(s: SchedulerKind) -> Result<&'static str> {
    Ok(match s {
        SchedulerKind::Ddim => "ddim",
        SchedulerKind::Euler => "euler",
        SchedulerKind::DpmPp2m => "dpmpp_2m",
        SchedulerKind::DpmPp2mKarras => "dpmpp_2m_karras",
        SchedulerKind::EulerAncestral => "euler_ancestral",
    })
}

fn window_name(w: Window) -> &'static str {
    match w {
        Window::Steps => "steps",
        Window::Sigma => "sigma",
    }
}

fn scaling_name(s: IpScaling) -> &'static str {
    match s {
        IpScaling::V => "v",
        IpScaling::Kv => "kv",
        IpScaling::KvC => "kv_c",
        IpScaling::KMeanVC => "k_mean_v_c",
    }
}

fn no_image_name(n: NoImage) -> &'static str {
    match n {
        NoImage::Reference => "reference",
        NoImage::Black => "black",
    }
}

fn cell_json(cell: &StoredCell, sdxl: bool) -> Result<Value> {
    let p = &cell.params;
    let device = if cell.device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    };
    Ok(json!({
        "seed": p.seed, "width": p.width, "height": p.height, "steps": p.steps,
        "cfg": p.cfg, "neg_cfg": p.neg_cfg(), "scheduler": scheduler_name(p.scheduler)?,
        "window": window_name(p.window), "adapter": p.adapter.to_string(),
        "no_image": no_image_name(p.no_image), "ip_scaling": scaling_name(p.ip_scaling),
        "method_params": method_params_json(p), "sdxl": sdxl,
        "dtype": cell.chunk.dtype, "device": device,
        "out": format!("{}-diffusers.png", cell.chunk.cell_id),
    }))
}

/// The values of the cell's method's own parameters, defaults included.
fn method_params_json(p: &GenParams) -> Value {
    registry::of(p.method)
        .params()
        .iter()
        .map(|spec| (spec.name.to_string(), json!(registry::value(p, spec.name))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The script's names of the cell's input images: `positive`, `negative`.
struct ImageNames {
    files: BTreeMap<&'static str, PathBuf>,
}

impl ImageNames {
    fn of(p: &GenParams) -> ImageNames {
        let mut files = BTreeMap::new();
        if let Some(f) = &p.positive_image {
            files.insert("positive", f.clone());
        }
        if let Some(f) = p.uncond_image() {
            files.insert("negative", f.clone());
        }
        ImageNames { files }
    }

    fn name(&self, path: &Path) -> &'static str {
        // The negative first: a cell may use one image as both.
        ["negative", "positive"]
            .into_iter()
            .find(|n| self.files.get(n).is_some_and(|f| f == path))
            .unwrap_or("negative")
    }
}

/// The UNet rows of the cell, in order: text, image tokens, branch weight and window, block
/// factors on the pipeline's layout (`null`: 1 in every block), a second image-attention
/// term (`extra`: `cond_negative`'s and `nag`'s, `null` for the other methods) with its
/// tokens, branch, blocks, sign and NAG's strength (`nag`: `null` where the term is added),
/// and on SDXL the row's micro-conditioning (`micro`: negimg's time ids of the row).
fn rows_json(p: &GenParams, images: &ImageNames, sdxl: bool) -> Value {
    let method = registry::of(p.method);
    let layout = if sdxl {
        BlockLayout::Sdxl
    } else {
        BlockLayout::Sd15
    };
    let blocks = |branch: registry::Branch| branch.blocks(p).pairs_on(layout);
    let micro = sdxl.then(|| micro_rows(p));
    let rows: Vec<Value> = method
        .rows()
        .iter()
        .enumerate()
        .map(|(k, &row)| {
            let cond = method.row(p, row);
            let extra = cond.extra.map_or(Value::Null, |x| {
                json!({
                    "image": image_json(x.image, images),
                    "branch": branch_json(x.branch, p),
                    "blocks": blocks(x.branch),
                    "sign": x.sign,
                    "nag": x.nag.map(|n| json!({"scale": n.scale, "tau": n.tau, "alpha": n.alpha})),
                })
            });
            json!({
                "row": format!("{row:?}").to_lowercase(),
                "text": cond.text,
                "image": image_json(cond.image, images),
                "branch": branch_json(cond.branch, p),
                "blocks": blocks(cond.branch),
                "extra": extra,
                "micro": micro.as_ref().map_or(Value::Null, |m| m[k].clone()),
            })
        })
        .collect();
    Value::Array(rows)
}

/// Each row's SDXL micro-conditioning as the pipeline conditions it
/// ([`crate::pipeline::time_id_rows`]), by diffusers' names: `original_size`,
/// `crops_coords_top_left`, `target_size` (`_get_add_time_ids` joins them in that order).
fn micro_rows(p: &GenParams) -> Vec<Value> {
    let ids = crate::pipeline::time_id_rows(std::slice::from_ref(p));
    let ids = Vec::<f32>::try_from(ids.view([-1])).expect("time ids are f32");
    ids.chunks(6)
        .map(|r| {
            let pair = |i: usize| json!([r[i] as u32, r[i + 1] as u32]);
            json!({"original_size": pair(0), "crops_coords_top_left": pair(2), "target_size": pair(4)})
        })
        .collect()
}

/// A row's image tokens: `null` ("no image"), an input image's name, or `subtract`'s
/// difference of two.
fn image_json(image: RowImage, images: &ImageNames) -> Value {
    match image {
        RowImage::NoImage => Value::Null,
        RowImage::Image(f) => json!(images.name(f)),
        RowImage::Subtract {
            positive,
            negative,
            scale,
        } => json!({"subtract": {
            "positive": positive.map(|f| images.name(f)),
            "negative": images.name(negative), "scale": scale}}),
    }
}

fn branch_json(branch: registry::Branch, p: &GenParams) -> Value {
    let b = branch.weight(p);
    json!({"weight": b.weight, "start": b.start, "end": b.end})
}

/// NegToMe's settings (`null` when the cell does not merge). negimg resizes a reference of
/// another size with its own Lanczos3, which PIL's differs from: refused.
fn negtome_json(p: &GenParams) -> Result<Value> {
    let Some(file) = p.negtome_image() else {
        return Ok(Value::Null);
    };
    let (w, h) =
        image::image_dimensions(file).with_context(|| format!("cannot read {}", file.display()))?;
    if (w as usize, h as usize) != (p.width, p.height) {
        bail!(
            "NegToMe with a negative image of {w}x{h} at a generation size of {}x{}: negimg \
             resizes it with its own Lanczos3 filter, which diffusers' (PIL's) does not \
             reproduce, so the export is refused; use a negative image of the generation size",
            p.width,
            p.height
        );
    }
    Ok(json!({
        "image": "negative", "alpha": p.negtome_alpha, "threshold": p.negtome_threshold,
        "t_min": p.negtome_t_min, "t_max": p.negtome_t_max,
    }))
}

/// The models of the cell by role: a hub repo (with subfolder and revision) or a local path,
/// with the sha256 of each file negimg read; a single-file pipeline also names the folder
/// of its configs beside the script (`configs`).
fn models_json(cell: &StoredCell, configs: &str) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for m in &cell.models {
        let key = match m.role {
            role if role.adapter_kind().is_some() => "ip_adapter",
            other => other.name(),
        };
        let mut v = model_json(m)?;
        if m.role == Role::Pipeline && is_one_file(m) {
            v["configs"] = json!(configs);
        }
        out.insert(key.to_string(), v);
    }
    Ok(Value::Object(out))
}

fn model_json(m: &ModelFiles) -> Result<Value> {
    let mut v = match HfRef::parse(&m.reference)? {
        Some(hf) => json!({"repo": hf.repo, "subfolder": hf.path, "revision": hf.revision}),
        None => json!({"path": m.path.display().to_string()}),
    };
    v["role"] = json!(m.role.name());
    v["reference"] = json!(m.reference);
    if m.files.iter().any(|f| f.file.contains(".fp16.")) {
        v["variant"] = json!("fp16");
    }
    v["sha256"] = m
        .files
        .iter()
        .map(|f| (f.file.clone(), json!(f.sha256)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(v)
}

/// Whether the model is one file (a pipeline: a single-file checkpoint).
fn is_one_file(m: &ModelFiles) -> bool {
    m.path.is_file()
}

/// JSON that can sit in a Python `r'''...'''` literal (`'` only occurs in strings, where
/// JSON's `\u0027` stands for it): an array one element per line, anything else pretty.
fn python_safe_json(v: &Value) -> Result<String> {
    let text = match v {
        Value::Array(items) => {
            let lines: Vec<String> = items
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
            format!("[\n  {}\n]", lines.join(",\n  "))
        }
        other => serde_json::to_string_pretty(other)?,
    };
    Ok(text.replace('\'', "\\u0027"))
}

/// `IMAGES = {...}`: each input image's file, base64, as negimg read it.
fn images_literal(images: &ImageNames) -> Result<String> {
    let mut s = String::from("IMAGES = {\n");
    for (name, file) in &images.files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        s.push_str(&format!("    \"{name}\": (\n"));
        for line in base64(&bytes).as_bytes().chunks(88) {
            s.push_str(&format!("        \"{}\"\n", String::from_utf8_lossy(line)));
        }
        s.push_str("    ),\n");
    }
    s.push_str("}\n");
    Ok(s)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The run's pipeline, opened, where it is a single-file checkpoint, once checked that
/// diffusers' `from_single_file` reads it as negimg does.
fn single_file_pipeline(cell: &StoredCell) -> Result<Option<LdmCheckpoint>> {
    let Some(m) = cell
        .models
        .iter()
        .find(|m| m.role == Role::Pipeline && is_one_file(m))
    else {
        return Ok(None);
    };
    let ckpt = single_file::open_single_file(&m.path)
        .with_context(|| format!("the run's pipeline {}", m.reference))?;
    refuse_what_diffusers_reads_otherwise(&ckpt)?;
    Ok(Some(ckpt))
}

/// diffusers 0.42's `from_single_file` tells a file's text encoders by keys and widths
/// (`create_diffusers_clip_model_from_ldm` in loaders/single_file_utils.py) where negimg
/// maps them by prefix: an SD1.x file whose text encoder is saved without `text_model.`
/// (diffusers looks for `cond_stage_model.transformer.text_model.*`), and an SDXL file
/// whose two text encoders have the same width (diffusers would load the first as both)
/// are refused by name.
fn refuse_what_diffusers_reads_otherwise(ckpt: &LdmCheckpoint) -> Result<()> {
    let file = ckpt.path().display();
    let width = |key: &str| ckpt.file_shape(key).and_then(|s| s.last().copied());
    match ckpt.family() {
        Family::Sd1 => {
            let key =
                "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight";
            if width(key).is_none() {
                bail!(
                    "the pipeline {file} is a single file whose text encoder is saved without \
                     `text_model.` (older transformers): diffusers' from_single_file looks for \
                     {key:?} and does not load it, so the export is refused; save the file \
                     again with `cond_stage_model.transformer.text_model.*` names"
                );
            }
        }
        Family::Sdxl => {
            let first = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight";
            let second = "conditioner.embedders.1.model.positional_embedding";
            if let (Some(a), Some(b)) = (width(first), width(second))
                && a == b
            {
                bail!(
                    "the pipeline {file} is an SDXL single file whose two text encoders are \
                     both {a} wide: diffusers' from_single_file tells them apart by width \
                     (768 and 1280 in SDXL base) and would load the first as both, so the \
                     export is refused"
                );
            }
        }
    }
    Ok(())
}

/// Whether the cell's pipeline is SDXL's: a folder whose model_index.json names
/// `StableDiffusionXLPipeline`, or a single file of SDXL's layout.
fn is_sdxl(cell: &StoredCell) -> Result<bool> {
    let Some(m) = cell.models.iter().find(|m| m.role == Role::Pipeline) else {
        return Ok(false);
    };
    if !is_one_file(m) {
        return Ok(is_sdxl_folder(&m.path));
    }
    let ckpt = single_file::open_single_file(&m.path)
        .with_context(|| format!("the run's pipeline {}", m.reference))?;
    Ok(ckpt.family() == Family::Sdxl)
}

/// Whether `folder`'s model_index.json names diffusers' SDXL pipeline.
fn is_sdxl_folder(folder: &Path) -> bool {
    std::fs::read_to_string(folder.join("model_index.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|index| index["_class_name"] == "StableDiffusionXLPipeline")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_refuses_step_sets_and_neg_off_by_name_and_tells_sdxl_folders() {
        let mut p = GenParams::new(1);
        assert!(refuse_steps_and_off(&p).is_ok());
        p.neg_steps_at = Some("3".parse().unwrap());
        let err = refuse_steps_and_off(&p).unwrap_err().to_string();
        assert!(err.contains("step set"), "{err}");
        p.neg_steps_at = None;
        p.neg_off = NegOff::NoImage;
        let err = refuse_steps_and_off(&p).unwrap_err().to_string();
        assert!(err.contains("neg_off"), "{err}");
        let dir = std::env::temp_dir().join(format!("negimg-export-sdxl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let index = |name: &str| {
            let text = json!({ "_class_name": name }).to_string();
            std::fs::write(dir.join("model_index.json"), text).unwrap();
            is_sdxl_folder(&dir)
        };
        assert!(index("StableDiffusionXLPipeline"));
        assert!(!index("StableDiffusionPipeline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// SDXL rows number the presets on SDXL's 11 blocks (ComfyUI's `style`: block 6) and
    /// carry the cell's micro-conditioning by diffusers' names; SD1.5 rows keep SD1.5's
    /// numbering and no micro-conditioning.
    #[test]
    fn export_rows_take_the_pipeline_layout_and_micro_conditioning() {
        let mut p = GenParams::new(1);
        p.neg_blocks = crate::params::BlockWeights::Style;
        p.original_size = Some(crate::params::MicroPair(96, 64));
        p.crops_coords_top_left = crate::params::MicroPair(8, 4);
        let images = ImageNames::of(&p);
        let sdxl = rows_json(&p, &images, true);
        let negative = |rows: &Value| rows[0]["blocks"].clone();
        assert_eq!(negative(&sdxl), json!([[6, 1.0]]));
        let micro = &sdxl[1]["micro"];
        assert_eq!(micro["original_size"], json!([96, 64]));
        assert_eq!(micro["crops_coords_top_left"], json!([8, 4]));
        assert_eq!(micro["target_size"], json!([p.height, p.width]));
        let sd15 = rows_json(&p, &images, false);
        let style = crate::params::BlockWeights::Style.pairs();
        assert_eq!(negative(&sd15), json!(style));
        assert_eq!(sd15[0]["micro"], Value::Null);
    }

    /// An SDXL single file whose two text encoders are equally wide is refused by name
    /// (diffusers' from_single_file would load the first as both); of two widths it passes.
    #[test]
    fn export_refuses_an_sdxl_single_file_with_text_encoders_of_one_width() {
        let dir = std::env::temp_dir().join(format!("negimg-export-sgm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |second: i64| {
            let path = dir.join(format!("sgm_{second}.safetensors"));
            let zeros =
                |shape: &[i64]| tch::Tensor::zeros(shape, (tch::Kind::Float, tch::Device::Cpu));
            let first = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight";
            tch::Tensor::write_safetensors(
                &[
                    (
                        "model.diffusion_model.input_blocks.0.0.weight",
                        zeros(&[4, 4, 3, 3]),
                    ),
                    (first, zeros(&[77, 32])),
                    (
                        "conditioner.embedders.1.model.positional_embedding",
                        zeros(&[77, second]),
                    ),
                ],
                &path,
            )
            .unwrap();
            single_file::open_single_file(&path).unwrap()
        };
        let err = refuse_what_diffusers_reads_otherwise(&write(32)).unwrap_err();
        assert!(err.to_string().contains("both 32 wide"), "{err}");
        assert!(refuse_what_diffusers_reads_otherwise(&write(48)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn export_base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar\xff"), "Zm9vYmFy/w==");
    }

    #[test]
    fn export_json_keeps_quotes_out_of_the_python_literal() {
        let s = python_safe_json(&json!({"text": "it's '''"})).unwrap();
        assert!(!s.contains('\''), "{s}");
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["text"], "it's '''");
    }
}
