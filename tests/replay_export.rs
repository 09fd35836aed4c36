//! `negimg generate --replay` and `negimg export --diffusers` on one run of tiny random
//! models (SD1.5's block layout): an uncond cell with windows, a three-row cell (perp_neg),
//! a block preset with ComfyUI's `kv_c` scaling, `subtract` with the Plus adapter, a sigma
//! window, DPM++ 2M Karras and black "no image" tokens, NegToMe alone on Euler,
//! `cond_negative` (two image-attention terms) with a negative window and `kv` scaling, `sega`,
//! `uncond` on Euler ancestral, `dng` (on Euler ancestral), the negative branch in the
//! `composition` preset with `k_mean_v_c` scaling, `nag` with a negative window, and the
//! `plus_face` and `full_face` adapters. Replay gives the same bytes; each exported script,
//! run in the venv, gives negimg's image within 1/255.
mod common;

use common::{max_level_diff, negimg, text, with_chunk};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cells of the run, in the order of the zip below; each is found by its prompt.
/// The last three are not exported: `cond_negative_kv` without its second term (neg_weight 0),
/// `dng` with a posterior that stays at its prior (dng_temp 0) and `nag` at nag_scale 1 (no
/// guidance: the image of a script that dropped NAG), so that a script which dropped the
/// term, the update or NAG would be far from negimg's image
/// ([`export_cells_differ_so_the_tolerance_means_something`]).
const CELLS: [&str; 16] = [
    "uncond_window",
    "perp_neg",
    "style_kv_c",
    "subtract_plus_sigma",
    "negtome_euler",
    "cond_negative_kv",
    "sega",
    "uncond_euler_a",
    "dng",
    "neg_composition_kmv",
    "nag",
    "cond_negative_kv_w0",
    "dng_static",
    "nag_scale1",
    "plus_face",
    "full_face",
];

/// One column per parameter that varies, one value per cell of [`CELLS`].
const ZIP: &str = r#"
[[grid.zip]]
prompt = ["a house uncond_window", "a house perp_neg", "a house style_kv_c", "a house subtract_plus_sigma", "a house negtome_euler", "a house cond_negative_kv", "a house sega", "a house uncond_euler_a", "a house dng", "a house neg_composition_kmv", "a house nag", "a house cond_negative_kv_w0", "a house dng_static", "a house nag_scale1", "a house plus_face", "a house full_face"]
method = ["uncond", "perp_neg", "uncond", "subtract", "negtome", "cond_negative", "sega", "uncond", "dng", "uncond", "nag", "cond_negative", "dng", "nag", "uncond", "uncond"]
start = [0.25, 0, 0, 0.2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.25, 0.25]
neg_end = [0.75, 1, 1, 1, 1, 0.75, 1, 1, 1, 1, 0.75, 0.75, 1, 0.75, 0.75, 0.75]
blocks = ["all", "all", "style", "all", "all", "all", "all", "all", "all", "all", "all", "all", "all", "all", "all", "all"]
ip_scaling = ["v", "v", "kv_c", "v", "v", "kv", "v", "v", "v", "k_mean_v_c", "v", "kv", "v", "v", "v", "v"]
adapter = ["base", "base", "base", "plus", "base", "base", "base", "base", "base", "base", "base", "base", "base", "base", "plus_face", "full_face"]
window = ["steps", "steps", "steps", "sigma", "steps", "steps", "steps", "steps", "steps", "steps", "steps", "steps", "steps", "steps", "steps", "steps"]
scheduler = ["ddim", "ddim", "ddim", "dpmpp_2m_karras", "euler", "ddim", "ddim", "euler_ancestral", "euler_ancestral", "ddim", "ddim", "ddim", "euler_ancestral", "ddim", "ddim", "ddim"]
no_image = ["reference", "reference", "reference", "black", "reference", "reference", "reference", "reference", "reference", "reference", "reference", "reference", "reference", "reference", "reference", "reference"]
negative_image = ["lawn", "lawn", "lawn", "lawn", "lawn64", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn", "lawn"]
negtome_t_min = [800, 800, 800, 800, 200, 800, 800, 800, 800, 800, 800, 800, 800, 800, 800, 800]
sega_warmup_steps = [10, 10, 10, 10, 10, 10, 1, 10, 10, 10, 10, 10, 10, 10, 10, 10]
dng_guidance_scale = [1, 1, 1, 1, 1, 1, 1, 1, 5, 1, 1, 1, 5, 1, 1, 1]
dng_prior = [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.2, 0.2, 0.2, 0.3, 0.2, 0.2, 0.2]
dng_temp = [1, 1, 1, 1, 1, 1, 1, 1, 1e-4, 1, 1, 1, 0, 1, 1, 1]
neg_weight = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
nag_scale = [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 1, 5, 5]
neg_blocks = ["all", "all", "all", "all", "all", "all", "all", "all", "all", "composition", "all", "all", "all", "all", "all", "all"]
"#;

struct Run {
    dir: PathBuf,
    run: PathBuf,
}

/// One run of the cells (batches of 1, so a cell replayed alone is the same computation).
/// 64x64 images: the tiny VAE's latents are 32x32, where NegToMe merges; NegToMe's negative
/// image has that size (the export refuses a resize).
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::scratch("replay_export");
        common::parity::write_pos_neg(&dir, (70, 90));
        common::parity::write_image(&dir.join("neg64.png"), 64, 64, 3);
        let m = common::tiny::tiny_sd15_models();
        let m = m.display();
        let toml = format!(
            "[experiment]\nname = \"reproduce\"\n\n[models]\npipeline = \"{m}/pipeline\"\n\
             ip_adapter = {{ base = \"{m}/ip-adapter_sd15.safetensors\", \
             plus = \"{m}/ip-adapter-plus_sd15.safetensors\", \
             plus_face = \"{m}/ip-adapter-plus-face_sd15.safetensors\", \
             full_face = \"{m}/ip-adapter-full-face_sd15.safetensors\" }}\n\
             image_encoder = \"{m}/image_encoder\"\n\n\
             [images.house]\npath = \"pos.png\"\n[images.lawn]\npath = \"neg.png\"\n\
             [images.lawn64]\npath = \"neg64.png\"\n\n\
             [defaults]\nsteps = 4\nsize = 64\ndtype = \"fp32\"\nseed = 7\ncfg = 6\n\
             negative_prompt = \"grass\"\nnegative = \"both\"\npositive_image = \"house\"\n{ZIP}"
        );
        std::fs::write(dir.join("reproduce.toml"), toml).unwrap();
        let out = negimg(
            &[
                "--device",
                "cpu",
                "run",
                "reproduce.toml",
                "--batch",
                "1",
                "--no-report",
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", text(&out));
        let run = common::only_run(&dir.join("results/reproduce"));
        Run { dir, run }
    })
}

/// The image of the cell named `name` (by its prompt in records.csv).
fn image_of(name: &str) -> PathBuf {
    let r = run();
    let mut csv = csv::Reader::from_path(r.run.join("records.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let col = |k: &str| headers.iter().position(|h| h == k).unwrap();
    let prompt = format!("a house {name}");
    for rec in csv.records() {
        let rec = rec.unwrap();
        if rec[col("prompt")] == prompt {
            return r.run.join(&rec[col("file")]);
        }
    }
    panic!("no record of {name}");
}

fn negimg_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--device", "cpu"];
    all.extend_from_slice(args);
    negimg(&all, dir)
}

/// negimg, offline, on the CPU, in `dir`, with the variables `env` set.
fn negimg_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::negimg_bin());
    cmd.args(["--device", "cpu"]).args(args).current_dir(dir);
    offline_with(&mut cmd, env).output().unwrap()
}

/// A command offline, without the caller's Hugging Face variables, with `env` set.
fn offline_with<'c>(
    cmd: &'c mut std::process::Command,
    env: &[(&str, &Path)],
) -> &'c mut std::process::Command {
    for var in ["HF_HUB_CACHE", "HF_ENDPOINT"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn replay_remakes_the_same_bytes_and_never_overwrites_without_force() {
    let r = run();
    let png = image_of("uncond_window");
    let out = r.dir.join("replayed.png");
    let args = [
        "generate",
        "--replay",
        png.to_str().unwrap(),
        "--out",
        "replayed.png",
    ];
    let first = negimg_in(&r.dir, &args);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&png).unwrap());
    std::fs::write(&out, b"keep me").unwrap();
    let again = negimg_in(&r.dir, &args);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("exists: pass --force"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let mut forced = args.to_vec();
    forced.push("--force");
    let third = negimg_in(&r.dir, &forced);
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&png).unwrap());
}

/// A run whose cell takes its images from a subject of a CSV (`[subjects] from`, images named
/// `NAME.positive`, `NAME.negative`) replays to the same bytes.
#[test]
fn replay_remakes_an_image_of_a_run_with_subjects() {
    let dir = common::scratch("replay_subjects");
    std::fs::create_dir_all(dir.join("pairs")).unwrap();
    common::parity::write_pos_neg(&dir.join("pairs"), (40, 40));
    std::fs::write(
        dir.join("pairs/pairs.csv"),
        "name,positive,negative,negative_caption\nhouse_lawn,pos.png,neg.png,a lawn\n",
    )
    .unwrap();
    let m = common::tiny::tiny_sd15_models();
    let m = m.display();
    let toml = format!(
        "[experiment]\nname = \"subjects\"\n\n[models]\npipeline = \"{m}/pipeline\"\n\
         ip_adapter = {{ base = \"{m}/ip-adapter_sd15.safetensors\" }}\n\
         image_encoder = \"{m}/image_encoder\"\n\n[subjects]\nfrom = \"pairs/pairs.csv\"\n\n\
         [defaults]\nsteps = 2\nsize = 32\ndtype = \"fp32\"\nseed = 3\nnegative = \"image\"\n"
    );
    std::fs::write(dir.join("subjects.toml"), toml).unwrap();
    let out = negimg_in(
        &dir,
        &["run", "subjects.toml", "--batch", "1", "--no-report"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let run = common::only_run(&dir.join("results/subjects"));
    let png = std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap();
    let out = negimg_in(
        &dir,
        &[
            "generate",
            "--replay",
            png.to_str().unwrap(),
            "--out",
            "again.png",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.join("again.png")).unwrap(),
        std::fs::read(&png).unwrap()
    );
}

#[test]
fn replay_refuses_a_png_without_chunk_and_one_from_a_newer_negimg() {
    let r = run();
    let plain = r.dir.join("plain.png");
    std::fs::copy(r.dir.join("pos.png"), &plain).unwrap();
    let out = negimg_in(&r.dir, &["generate", "--replay", "plain.png"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("plain.png has no `negimg` text chunk"),
        "{}",
        text(&out)
    );
    // The same image with its chunk's version raised: refused before anything is read.
    let bytes = with_chunk(&image_of("perp_neg"), |v| {
        v["negimg_version"] = "99.0.0".into()
    });
    std::fs::write(r.dir.join("future.png"), bytes).unwrap();
    let out = negimg_in(&r.dir, &["generate", "--replay", "future.png"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("made by negimg 99.0.0, newer than this negimg"),
        "{}",
        text(&out)
    );
    assert!(!r.dir.join("future-replay.png").exists());
}

/// A copy of the run folder whose manifest `edit` changes (the models stay where they are).
fn run_copy_with_manifest(name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let r = run();
    let copy = r.dir.join(name).join("run");
    std::fs::create_dir_all(copy.join("images")).unwrap();
    let png = image_of("uncond_window");
    let image = copy.join("images").join(png.file_name().unwrap());
    std::fs::copy(&png, &image).unwrap();
    let copy_dir = |sub: &str| {
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for e in std::fs::read_dir(r.run.join(sub)).unwrap().flatten() {
            std::fs::copy(e.path(), copy.join(sub).join(e.file_name())).unwrap();
        }
    };
    copy_dir("inputs");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run.join("manifest.json")).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(copy.join("manifest.json"), manifest.to_string()).unwrap();
    image
}

fn adapter_entry(manifest: &mut serde_json::Value) -> &mut serde_json::Value {
    manifest["models"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["role"] == "ip_adapter.base")
        .unwrap()
}

#[test]
fn replay_names_a_changed_or_missing_model() {
    let r = run();
    let changed = run_copy_with_manifest("changed", |m| {
        let entry = adapter_entry(m);
        entry["files"][0]["sha256"] = "0".repeat(64).into();
        entry["digest"] = "x".into();
    });
    let out = negimg_in(
        &r.dir,
        &[
            "generate",
            "--replay",
            changed.to_str().unwrap(),
            "--out",
            "c.png",
        ],
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("ip_adapter.base")
            && msg.contains("changed since the run")
            && msg.contains("ip-adapter_sd15.safetensors (sha256 000000000000 in the run"),
        "{msg}"
    );
    let missing = run_copy_with_manifest("missing", |m| {
        adapter_entry(m)["path"] = "/nonexistent/adapter.safetensors".into();
    });
    let out = negimg_in(
        &r.dir,
        &[
            "generate",
            "--replay",
            missing.to_str().unwrap(),
            "--out",
            "m.png",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/adapter.safetensors does not exist"),
        "{}",
        text(&out)
    );
    assert!(!r.dir.join("c.png").exists() && !r.dir.join("m.png").exists());
}

/// Exports the cell `name`, runs the script in the venv and compares its PNG with negimg's.
fn export_and_compare(name: &str) {
    export_and_compare_in(&run().dir, &image_of(name), name, &[]);
}

/// Exports `png` to `dir/NAME.py`, runs the script in the venv (both with `env`) and
/// compares its PNG with `png`; returns the script's text.
fn export_and_compare_in(dir: &Path, png: &Path, name: &str, env: &[(&str, &Path)]) -> String {
    let script = dir.join(format!("{name}.py"));
    let out = negimg_env(
        dir,
        &[
            "export",
            png.to_str().unwrap(),
            "--diffusers",
            script.to_str().unwrap(),
        ],
        env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let made = dir.join(format!("{name}-diffusers.png"));
    let mut cmd = std::process::Command::new(common::python());
    cmd.arg(&script)
        .args(["--out", made.to_str().unwrap(), "--threads", "1"]);
    let py = offline_with(&mut cmd, env).output().unwrap();
    assert!(py.status.success(), "{name}: {}", text(&py));
    let ours = image::open(png).unwrap().to_rgb8();
    let theirs = image::open(&made).unwrap().to_rgb8();
    let diff = max_level_diff(&ours, &theirs);
    eprintln!("{name}: exported script within {diff}/255 of negimg");
    assert!(
        diff <= 1,
        "{name}: the script's image is {diff}/255 from negimg's"
    );
    std::fs::read_to_string(&script).unwrap()
}

/// A run whose models are `hf:` references (the tiny models in a Hugging Face cache, offline):
/// the script names them by repo and subfolder and loads them from the same cache.
#[test]
fn export_of_a_run_with_hub_models_matches_negimg() {
    let dir = common::scratch("export_hub");
    common::parity::write_pos_neg(&dir, (70, 90));
    let models = common::tiny::tiny_sd15_models();
    let mut files = vec![];
    common::hub_cache::files_under(&models, "", &mut files);
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let home = dir.join("hf_home");
    common::hub_cache::add_to_cache(&home.join("hub"), "negimg/tiny", &files);
    let toml = "[experiment]\nname = \"hub\"\n\n[models]\npipeline = \"hf:negimg/tiny/pipeline\"\n\
         ip_adapter = { base = \"hf:negimg/tiny/ip-adapter_sd15.safetensors\" }\n\
         image_encoder = \"hf:negimg/tiny/image_encoder\"\n\n\
         [images.house]\npath = \"pos.png\"\n[images.lawn]\npath = \"neg.png\"\n\n\
         [defaults]\nsteps = 3\nsize = 64\ndtype = \"fp32\"\nseed = 11\ncfg = 6\n\
         positive_image = \"house\"\nnegative_image = \"lawn\"\nnegative = \"image\"\n";
    std::fs::write(dir.join("hub.toml"), toml).unwrap();
    let env = [("HF_HOME", home.as_path())];
    let out = negimg_env(&dir, &["run", "hub.toml", "--no-report"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let run = common::only_run(&dir.join("results/hub"));
    let png = std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap();
    let script = export_and_compare_in(&dir, &png, "hub", &env);
    assert!(
        script.contains("\"repo\": \"negimg/tiny\"")
            && script.contains("\"subfolder\": \"pipeline\""),
        "the script names the models by their hub references"
    );
}

#[test]
fn export_uncond_with_windows_matches_negimg() {
    export_and_compare("uncond_window");
}

#[test]
fn export_plus_face_and_full_face_adapters_match_negimg() {
    export_and_compare("plus_face");
    export_and_compare("full_face");
}

#[test]
fn export_perp_neg_matches_negimg() {
    export_and_compare("perp_neg");
}

#[test]
fn export_style_preset_with_kv_c_matches_negimg() {
    export_and_compare("style_kv_c");
}

#[test]
fn export_subtract_plus_sigma_window_karras_black_matches_negimg() {
    export_and_compare("subtract_plus_sigma");
}

#[test]
fn export_negtome_on_euler_matches_negimg() {
    export_and_compare("negtome_euler");
}

#[test]
fn export_cond_negative_with_a_negative_window_and_kv_matches_negimg() {
    export_and_compare("cond_negative_kv");
}

#[test]
fn export_negative_composition_preset_with_k_mean_v_c_matches_negimg() {
    export_and_compare("neg_composition_kmv");
}

#[test]
fn export_sega_matches_negimg() {
    export_and_compare("sega");
}

#[test]
fn export_euler_ancestral_matches_negimg() {
    export_and_compare("uncond_euler_a");
}

#[test]
fn export_dng_matches_negimg() {
    export_and_compare("dng");
}

/// NAG guides the cond row's cross-attention (a processor of the script's own, with the
/// default `v` scaling) and stops outside the negative window.
#[test]
fn export_nag_with_a_negative_window_matches_negimg() {
    export_and_compare("nag");
}

/// The NAG cell is far from the image of its rows without NAG's guidance (nag_scale 1: what a
/// script that dropped NAG would make), so its export test can fail.
#[test]
fn export_nag_is_far_from_the_image_without_nag() {
    let nag = image::open(image_of("nag")).unwrap().to_rgb8();
    for other in ["nag_scale1", "uncond_window"] {
        let d = max_level_diff(&nag, &image::open(image_of(other)).unwrap().to_rgb8());
        eprintln!("nag and {other}: {d}/255 apart");
        assert!(d > 2, "nag and {other} are only {d}/255 apart");
    }
}

/// The cells without NegToMe are far apart, so that "within 1/255" tells them apart.
#[test]
fn export_cells_differ_so_the_tolerance_means_something() {
    let cells: Vec<&str> = CELLS
        .into_iter()
        .filter(|c| *c != "negtome_euler")
        .collect();
    let imgs: Vec<image::RgbImage> = cells
        .iter()
        .map(|c| image::open(image_of(c)).unwrap().to_rgb8())
        .collect();
    for i in 0..imgs.len() {
        for j in i + 1..imgs.len() {
            let d = max_level_diff(&imgs[i], &imgs[j]);
            assert!(
                d > 2,
                "{} and {} are only {d}/255 apart",
                cells[i],
                cells[j]
            );
        }
    }
}

/// What a script cannot make exactly is refused by name, and no script is written: NegToMe
/// with a negative image of another size than the generation (the uncond cell's 70x90 lawn,
/// merged), a pipeline file that is not a checkpoint (single files export with their configs:
/// tests/export_sdxl.rs).
#[test]
fn export_refuses_a_resized_negtome_image_and_a_pipeline_file_that_is_no_checkpoint() {
    let r = run();
    let merged = run_copy_with_manifest("negtome_resize", |_| {});
    let bytes = with_chunk(&merged, |v| v["params"]["negtome"] = true.into());
    std::fs::write(&merged, bytes).unwrap();
    let single = run_copy_with_manifest("single_file", |m| {
        let pipeline = m["models"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|m| m["role"] == "pipeline")
            .unwrap();
        let file = std::fs::canonicalize(r.dir.join("pos.png")).unwrap();
        pipeline["path"] = file.to_str().unwrap().into();
    });
    for (png, script, expected) in [
        (
            &merged,
            "merged.py",
            "NegToMe with a negative image of 70x90 at a generation size of 64x64",
        ),
        (&single, "single.py", "the run's pipeline"),
    ] {
        let out = negimg_in(
            &r.dir,
            &["export", png.to_str().unwrap(), "--diffusers", script],
        );
        assert!(!out.status.success(), "{script}");
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!r.dir.join(script).exists());
    }
}

/// The script checks local model files against the run's sha256 before it loads them: one
/// whose recorded digest differs (as a changed file would) is refused, naming it.
#[test]
fn export_script_refuses_a_changed_model_file() {
    let r = run();
    let png = image_of("uncond_window");
    let script = r.dir.join("check.py");
    let out = negimg_in(
        &r.dir,
        &["export", png.to_str().unwrap(), "--diffusers", "check.py"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run.join("manifest.json")).unwrap()).unwrap();
    let sha = adapter_entry(&mut manifest)["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let source = std::fs::read_to_string(&script).unwrap();
    assert!(source.contains(&sha));
    std::fs::write(&script, source.replace(&sha, &"0".repeat(64))).unwrap();
    let py = std::process::Command::new(common::python())
        .arg(&script)
        .args(["--out", "never.png"])
        .current_dir(&r.dir)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!py.status.success());
    let msg = text(&py);
    assert!(
        msg.contains("ip_adapter.base")
            && msg.contains("changed since the run")
            && msg.contains("ip-adapter_sd15.safetensors (sha256 000000000000 in the run"),
        "{msg}"
    );
    assert!(!r.dir.join("never.png").exists());
}

#[test]
fn export_refuses_to_overwrite_and_help_shows_the_commands() {
    let r = run();
    let png = image_of("perp_neg");
    std::fs::write(r.dir.join("taken.py"), "keep").unwrap();
    let out = negimg_in(
        &r.dir,
        &["export", png.to_str().unwrap(), "--diffusers", "taken.py"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("taken.py exists"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(r.dir.join("taken.py")).unwrap(),
        "keep"
    );
    let help = text(&negimg_in(&r.dir, &["export", "--help"]));
    assert!(help.contains("--diffusers <OUT.py>"), "{help}");
    let help = text(&negimg_in(&r.dir, &["generate", "--help"]));
    assert!(help.contains("--replay <IMAGE.png>"), "{help}");
    let clash = negimg_in(&r.dir, &["generate", "--replay", "x.png", "--seed", "3"]);
    assert!(!clash.status.success());
    assert!(
        text(&clash).contains("cannot be used with"),
        "{}",
        text(&clash)
    );
}
