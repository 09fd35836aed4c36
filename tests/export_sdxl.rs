//! `negimg export --diffusers` of SDXL cells (`StableDiffusionXLPipeline`: both text
//! encoders, the pooled text, micro-conditioning) on the tiny SDXL sets: one run on the
//! ViT-H set (the base adapter at non-default `original_size` / `crops_coords_top_left` /
//! `target_size`, `three_branch`, a sigma window on DPM++ 2M Karras with the Plus adapter, an
//! SDXL block preset on the negative branch and `k_mean_v_c` scaling), one of NegToMe at 128²
//! (where the tiny SDXL's up blocks reach NegToMe's 32² tokens) and one on the ViT-bigG set
//! (`ip-adapter_sdxl`). Each exported script, run in the venv (all in one Python process,
//! tests/reference/run_exports.py), makes negimg's image within 1/255. Guards: the cells are
//! far apart, and each is far from its twin without the feature under test (default
//! micro-conditioning, NegToMe at alpha 0), so a script that dropped it would fail.
//!
//! Single-file checkpoints, SDXL and SD1.5 (the script loads the file with diffusers'
//! `from_single_file` and the configs negimg mapped it with, written beside the script): the
//! SGM file of tests/sdxl_single_file.rs and the LDM file of tests/ldm_images.rs, each with a
//! configs folder of the model configs only, so that the VAE config (SDXL: inferred from the
//! shapes), the tokenizers (open_clip's vocabulary), the scheduler (the demo's DDIM) and
//! model_index.json the export writes are those negimg falls back to. Their scripts run in
//! the same Python process, each within 1/255; each is far from its twin cell.
mod common;

use common::{max_level_diff, negimg, text, with_chunk};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ViT-H run's cells (32²), by their prompt's last word, in the order of [`VIT_H_ZIP`].
/// The twins (`*_twin`) are not exported: they are what a script that dropped the feature
/// would make.
const VIT_H_CELLS: [&str; 4] = ["micro", "micro_twin", "three_branch", "sigma_window"];

const VIT_H_ZIP: &str = r#"
negative_image = "lawn"

[[grid.zip]]
prompt = ["a house micro", "a house micro_twin", "a house three_branch", "a house sigma_window"]
method = ["uncond", "uncond", "three_branch", "uncond"]
original_size = [[96, 64], "auto", "auto", "auto"]
crops_coords_top_left = [[8, 4], [0, 0], [0, 0], [0, 0]]
target_size = [[48, 40], "auto", "auto", "auto"]
negative = ["both", "both", "image", "both"]
adapter = ["base", "base", "base", "plus"]
window = ["steps", "steps", "steps", "sigma"]
start = [0, 0, 0.2, 0.2]
neg_end = [1, 1, 0.75, 0.75]
scheduler = ["ddim", "ddim", "ddim", "dpmpp_2m_karras"]
neg_blocks = ["all", "all", "all", "style"]
ip_scaling = ["v", "v", "v", "k_mean_v_c"]
"#;

/// The NegToMe run's cells (128², Euler, the ViT-H set): NegToMe and its twin at alpha 0.
const NEGTOME_ZIP: &str = r#"
method = "negtome"
scheduler = "euler"
negative_image = "lawn128"
negtome_t_min = 200

[[grid.zip]]
prompt = ["a house negtome", "a house negtome_twin"]
negtome_alpha = [0.9, 0]
"#;

/// The bigG run's cell.
const BIG_G_CELL: &str = "negative_image = \"lawn\"\nprompt = \"a house big_g\"\n";

/// A single-file run's cells (`{name}` the run's name): text and image negative on DPM++ 2M
/// Karras (through the scheduler config the export writes), and its twin with an image
/// negative alone.
const SINGLE_FILE_ZIP: &str = r#"
negative_image = "lawn"
scheduler = "dpmpp_2m_karras"

[[grid.zip]]
prompt = ["a house {name}", "a house {name}_twin"]
negative = ["both", "image"]
"#;

/// The exported cells: (run, cell); the script is named after the cell.
const EXPORTED: [(&str, &str); 7] = [
    ("vit_h", "micro"),
    ("vit_h", "three_branch"),
    ("vit_h", "sigma_window"),
    ("negtome", "negtome"),
    ("big_g", "big_g"),
    ("sdxl_single", "sdxl_single"),
    ("sd15_single", "sd15_single"),
];

struct Runs {
    dir: PathBuf,
    /// Each run's folder by name (`vit_h`, `negtome`, `big_g`, `sdxl_single`, `sd15_single`).
    runs: BTreeMap<&'static str, PathBuf>,
    /// The SD1.5 single-file set (`ldm.safetensors`, `ldm_old_clip.safetensors`, ...).
    sd15_set: PathBuf,
}

/// The runs (batches of 1: a cell's image does not depend on its batch).
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = common::scratch("export_sdxl");
        common::parity::write_pos_neg(&dir, (70, 90));
        common::parity::write_image(&dir.join("neg128.png"), 128, 128, 3);
        let vit_h = common::tiny::tiny_sdxl_models();
        let big_g = common::tiny::big_g_sdxl_models("export_sdxl_big_g_models");
        let m = vit_h.display();
        let adapters = format!(
            "{{ base = \"{m}/ip-adapter_sdxl_vit-h.safetensors\", \
             plus = \"{m}/ip-adapter-plus_sdxl_vit-h.safetensors\" }}"
        );
        let base =
            |models: &Path, file: &str| format!("{{ base = \"{}/{file}\" }}", models.display());
        let big_g_adapter = base(&big_g, "ip-adapter_sdxl.safetensors");
        let (sdxl_single, sd15_single) = single_file_sets();
        let sdxl_adapter = base(&sdxl_single, "ip-adapter_sdxl_vit-h.safetensors");
        let sd15_adapter = base(&sd15_single, "ip-adapter_sd15.safetensors");
        let folder = |models: &Path| models.join("pipeline");
        let single = |models: &Path, file: &str| models.join(file);
        let zip = |name: &str| SINGLE_FILE_ZIP.replace("{name}", name);
        let runs = [
            (
                "vit_h",
                folder(&vit_h),
                &vit_h,
                &adapters,
                32,
                VIT_H_ZIP.to_string(),
            ),
            (
                "negtome",
                folder(&vit_h),
                &vit_h,
                &adapters,
                128,
                NEGTOME_ZIP.to_string(),
            ),
            (
                "big_g",
                folder(&big_g),
                &big_g,
                &big_g_adapter,
                32,
                BIG_G_CELL.to_string(),
            ),
            (
                "sdxl_single",
                single(&sdxl_single, "pipeline.safetensors"),
                &sdxl_single,
                &sdxl_adapter,
                32,
                zip("sdxl_single"),
            ),
            (
                "sd15_single",
                single(&sd15_single, "ldm.safetensors"),
                &sd15_single,
                &sd15_adapter,
                32,
                zip("sd15_single"),
            ),
        ]
        .map(|(name, pipeline, models, adapters, size, cells)| {
            let cells = format!("size = {size}\n{cells}");
            let models = Models {
                pipeline: &pipeline,
                encoder: &models.join("image_encoder"),
                adapters,
            };
            (name, run_experiment(&dir, name, &models, &cells))
        });
        Runs {
            dir,
            runs: runs.into_iter().collect(),
            sd15_set: sd15_single,
        }
    })
}

/// The single-file model sets: SDXL's (the SGM file of [`common::tiny::sdxl_single_file_set`])
/// and SD1.5's (the tiny set's pipeline as an LDM file by tests/reference/ldm_write_tiny.py,
/// which also writes `ldm_old_clip.safetensors`), each beside a configs folder of its model
/// configs only: `unet`, `text_encoder` (and `text_encoder_2`); SD1.5's also `vae` (its tiny
/// heads are not SD1.x's), SDXL's VAE config inferred from the shapes.
fn single_file_sets() -> (PathBuf, PathBuf) {
    let sdxl = common::tiny::sdxl_single_file_set("export_sdxl_single_file");
    let sdxl_set = sdxl.single_set.join("bare");
    std::fs::create_dir_all(&sdxl_set).unwrap();
    let link = |from: PathBuf, to: PathBuf| std::os::unix::fs::symlink(from, to).unwrap();
    for name in ["image_encoder", "ip-adapter_sdxl_vit-h.safetensors"] {
        link(sdxl.single_set.join(name), sdxl_set.join(name));
    }
    link(sdxl.single_file(), sdxl_set.join("pipeline.safetensors"));
    give_configs(
        &sdxl.folder(),
        &sdxl_set.join("pipeline.configs"),
        &["unet", "text_encoder", "text_encoder_2"],
    );
    let sd15_set = common::scratch("export_sdxl_sd15_single_file");
    let tiny = common::tiny::tiny_models();
    common::run_python(
        "ldm_write_tiny.py",
        &[
            sd15_set.to_str().unwrap(),
            tiny.join("pipeline").to_str().unwrap(),
        ],
    );
    for name in ["image_encoder", "ip-adapter_sd15.safetensors"] {
        link(tiny.join(name), sd15_set.join(name));
    }
    give_configs(
        &tiny.join("pipeline"),
        &sd15_set.join("ldm.configs"),
        &["unet", "vae", "text_encoder"],
    );
    (sdxl_set, sd15_set)
}

/// Copies `component/config.json` of the pipeline folder `from` into the configs folder `to`.
fn give_configs(from: &Path, to: &Path, components: &[&str]) {
    for component in components {
        std::fs::create_dir_all(to.join(component)).unwrap();
        let config = |dir: &Path| dir.join(component).join("config.json");
        std::fs::copy(config(from), config(to)).unwrap();
    }
}

/// An experiment's models: the pipeline (a folder or a single file), the image encoder and
/// the `ip_adapter` table.
struct Models<'a> {
    pipeline: &'a Path,
    encoder: &'a Path,
    adapters: &'a str,
}

/// Runs the experiment `name` on `models` with `cells` (the end of `[defaults]`: the size,
/// and a zip or the prompt), 4 steps; returns its run folder.
fn run_experiment(dir: &Path, name: &str, models: &Models, cells: &str) -> PathBuf {
    let toml = format!(
        "[experiment]\nname = \"{name}\"\n\n[models]\npipeline = \"{}\"\n\
         ip_adapter = {}\nimage_encoder = \"{}\"\n\n\
         [images.house]\npath = \"pos.png\"\n[images.lawn]\npath = \"neg.png\"\n\
         [images.lawn128]\npath = \"neg128.png\"\n\n\
         [defaults]\nsteps = 4\ndtype = \"fp32\"\nseed = 7\ncfg = 6\n\
         negative_prompt = \"grass\"\nnegative = \"both\"\npositive_image = \"house\"\n\
         {cells}",
        models.pipeline.display(),
        models.adapters,
        models.encoder.display(),
    );
    std::fs::write(dir.join(format!("{name}.toml")), toml).unwrap();
    let out = negimg(
        &[
            "--device",
            "cpu",
            "run",
            &format!("{name}.toml"),
            "--batch",
            "1",
            "--no-report",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    common::only_run(&dir.join("results").join(name))
}

/// The image of the cell whose prompt ends in `cell`, in the run `run`.
fn image_of(run: &str, cell: &str) -> PathBuf {
    let folder = &runs().runs[run];
    let mut csv = csv::Reader::from_path(folder.join("records.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let col = |k: &str| headers.iter().position(|h| h == k).unwrap();
    let prompt = format!("a house {cell}");
    csv.records()
        .map(Result::unwrap)
        .find(|rec| rec[col("prompt")] == prompt)
        .map(|rec| folder.join(&rec[col("file")]))
        .unwrap_or_else(|| panic!("no record of {cell} in {run}"))
}

fn export(png: &Path, script: &Path) -> std::process::Output {
    negimg(
        &[
            "--device",
            "cpu",
            "export",
            png.to_str().unwrap(),
            "--diffusers",
            script.to_str().unwrap(),
        ],
        &runs().dir,
    )
}

/// Every cell of [`EXPORTED`] exported, and the scripts run in one Python process; returns
/// the runner's output.
fn scripts_run() -> &'static String {
    static RAN: OnceLock<String> = OnceLock::new();
    RAN.get_or_init(|| {
        let dir = &runs().dir;
        let mut args = vec![];
        for (run, cell) in EXPORTED {
            let script = dir.join(format!("{cell}.py"));
            let out = export(&image_of(run, cell), &script);
            assert!(out.status.success(), "{cell}: {}", text(&out));
            args.push(script);
            args.push(dir.join(format!("{cell}-diffusers.png")));
        }
        let runner = common::repo().join("tests/reference/run_exports.py");
        let out = std::process::Command::new(common::python())
            .arg(runner)
            .args(&args)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_ENDPOINT")
            .output()
            .unwrap();
        text(&out)
    })
}

/// The exported script of `cell` makes negimg's image within 1/255.
fn assert_script_matches(run: &str, cell: &str) {
    let log = scripts_run();
    let made = runs().dir.join(format!("{cell}-diffusers.png"));
    assert!(made.is_file(), "{cell}: the script made no image:\n{log}");
    let diff = max_level_diff(&rgb(&image_of(run, cell)), &rgb(&made));
    eprintln!("{cell}: exported script within {diff}/255 of negimg");
    assert!(
        diff <= 1,
        "{cell}: the script's image is {diff}/255 from negimg's"
    );
}

fn rgb(png: &Path) -> image::RgbImage {
    image::open(png).unwrap().to_rgb8()
}

#[test]
fn export_sdxl_vit_h_base_at_non_default_micro_conditioning_matches_negimg() {
    assert_script_matches("vit_h", "micro");
    let script = std::fs::read_to_string(runs().dir.join("micro.py")).unwrap();
    assert!(
        script.contains("\"original_size\":[96,64]")
            && script.contains("\"crops_coords_top_left\":[8,4]")
            && script.contains("\"target_size\":[48,40]"),
        "the rows carry the cell's micro-conditioning"
    );
}

#[test]
fn export_sdxl_three_branch_matches_negimg() {
    assert_script_matches("vit_h", "three_branch");
}

#[test]
fn export_sdxl_sigma_window_karras_plus_preset_k_mean_v_c_matches_negimg() {
    assert_script_matches("vit_h", "sigma_window");
}

#[test]
fn export_sdxl_negtome_matches_negimg() {
    assert_script_matches("negtome", "negtome");
}

#[test]
fn export_sdxl_big_g_adapter_matches_negimg() {
    assert_script_matches("big_g", "big_g");
}

/// A single-file run's exported script loads the file with diffusers' `from_single_file`
/// and the configs folder written beside it, which holds every config negimg used: the model
/// configs given, and those negimg fell back to (model_index.json, the tokenizers, the
/// scheduler; SDXL's VAE config inferred from the shapes).
fn assert_single_file_export(cell: &str, class: &str, written: &[&str]) {
    assert_script_matches(cell, cell);
    let dir = &runs().dir;
    let script = std::fs::read_to_string(dir.join(format!("{cell}.py"))).unwrap();
    assert!(
        script.contains(&format!("\"configs\": \"{cell}.configs\"")),
        "the script names its configs folder"
    );
    let configs = dir.join(format!("{cell}.configs"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(configs.join("model_index.json")).unwrap()).unwrap();
    assert_eq!(index["_class_name"], class);
    for file in written {
        assert!(configs.join(file).is_file(), "{cell}: {file} not written");
    }
}

#[test]
fn export_sdxl_single_file_loads_it_with_from_single_file_and_matches_negimg() {
    assert_single_file_export(
        "sdxl_single",
        "StableDiffusionXLPipeline",
        &[
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "text_encoder_2/config.json",
            "tokenizer/vocab.json",
            "tokenizer_2/vocab.json",
            "scheduler/scheduler_config.json",
        ],
    );
    // The VAE config negimg inferred: SDXL's scaling factor.
    let vae = std::fs::read_to_string(runs().dir.join("sdxl_single.configs/vae/config.json"));
    let vae: serde_json::Value = serde_json::from_str(&vae.unwrap()).unwrap();
    assert_eq!(vae["scaling_factor"], 0.13025);
}

#[test]
fn export_sd15_single_file_loads_it_with_from_single_file_and_matches_negimg() {
    assert_single_file_export(
        "sd15_single",
        "StableDiffusionPipeline",
        &[
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
        ],
    );
}

/// The cells are pairwise far apart, and each feature's cell is far from its twin without
/// it: "within 1/255" tells a script's image from another cell's, and a script that dropped
/// micro-conditioning or NegToMe's merge would fail its test.
#[test]
fn export_sdxl_cells_differ_so_the_tolerance_means_something() {
    let mut cells: Vec<(&str, &str)> = VIT_H_CELLS.iter().map(|c| ("vit_h", *c)).collect();
    cells.extend([
        ("negtome", "negtome"),
        ("negtome", "negtome_twin"),
        ("big_g", "big_g"),
        ("sdxl_single", "sdxl_single"),
        ("sdxl_single", "sdxl_single_twin"),
        ("sd15_single", "sd15_single"),
        ("sd15_single", "sd15_single_twin"),
    ]);
    let images: Vec<image::RgbImage> = cells.iter().map(|(r, c)| rgb(&image_of(r, c))).collect();
    for i in 0..cells.len() {
        for j in i + 1..cells.len() {
            if images[i].dimensions() != images[j].dimensions() {
                continue;
            }
            let d = max_level_diff(&images[i], &images[j]);
            eprintln!("{} and {}: {d}/255 apart", cells[i].1, cells[j].1);
            assert!(
                d > 2,
                "{} and {} are only {d}/255 apart",
                cells[i].1,
                cells[j].1
            );
        }
    }
}

/// What stays unsupported is refused by name and nothing is written: an SD1.x single file
/// whose text encoder is saved without `text_model.` (diffusers' from_single_file does not
/// find it) and an SDXL cell with a step set.
#[test]
fn export_sdxl_refuses_a_step_set_and_a_single_file_diffusers_does_not_read() {
    let r = runs();
    let png = image_of("sd15_single", "sd15_single");
    let old_file = r.sd15_set.join("ldm_old_clip.safetensors");
    let old_png = run_copy(
        "sd15_single",
        "old_clip",
        std::fs::read(&png).unwrap(),
        |m| {
            for model in m["models"].as_array_mut().unwrap() {
                if model["role"] == "pipeline" {
                    model["path"] = old_file.to_str().unwrap().into();
                }
            }
        },
    );
    let big_g = image_of("big_g", "big_g");
    let steps = with_chunk(&big_g, |v| v["params"]["neg_steps_at"] = "1,3".into());
    let steps_png = run_copy("big_g", "step_set", steps, |_| {});
    for (png, expected) in [
        (&old_png, "saved without `text_model.`"),
        (&steps_png, "uses a step set"),
    ] {
        let script = r.dir.join("refused.py");
        let out = export(png, &script);
        assert!(!out.status.success(), "{expected}");
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!script.exists() && !r.dir.join("refused.configs").exists());
    }
}

/// A copy of the run folder `run` named `name` holding the image `png` (bytes) as its cell,
/// its manifest changed by `edit` (the models stay where they are); returns the image's path.
fn run_copy(run: &str, name: &str, png: Vec<u8>, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let folder = &runs().runs[run];
    let copy = runs().dir.join("copies").join(name);
    std::fs::create_dir_all(copy.join("images")).unwrap();
    std::fs::create_dir_all(copy.join("inputs")).unwrap();
    for e in std::fs::read_dir(folder.join("inputs")).unwrap().flatten() {
        std::fs::copy(e.path(), copy.join("inputs").join(e.file_name())).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(copy.join("manifest.json"), manifest.to_string()).unwrap();
    let image = copy.join("images/cell.png");
    std::fs::write(&image, png).unwrap();
    image
}
