//! SDXL's configuration: the micro-conditioning keys through an experiment file (axes, zips,
//! records.csv, PNG chunks, shared images), refused where the UNet does not read them; the
//! plan-time checks of an SDXL model set from configs and safetensors headers alone.
mod common;

use std::path::{Path, PathBuf};

/// An experiment `NAME.toml` in `dir` on the model set `models` (`pipeline`, one base
/// adapter file, `image_encoder`), with `rest` after `[models]`.
fn write_experiment(dir: &Path, name: &str, models: &Path, adapter: &str, rest: &str) -> String {
    let m = models.display();
    let text = format!(
        "[experiment]\nname = \"{name}\"\n\n\
         [models]\npipeline = \"{m}/pipeline\"\n\
         ip_adapter = {{ base = \"{m}/{adapter}\" }}\n\
         image_encoder = \"{m}/image_encoder\"\n\n{rest}"
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

const SDXL_ADAPTER: &str = "ip-adapter_sdxl_vit-h.safetensors";
const SD15_ADAPTER: &str = "ip-adapter_sd15.safetensors";

/// A six-cell micro-conditioning grid run on the tiny SDXL set, read back: each row's values of
/// the three `keys` (as records.csv has them) and its image file.
struct MicroGridRun {
    run: PathBuf,
    /// records.csv's column names.
    header: Vec<String>,
    cells: Vec<((String, String, String), String)>,
}

impl MicroGridRun {
    fn new(name: &str, grid: &str, keys: [&str; 3]) -> Self {
        let models = common::tiny::tiny_sdxl_models();
        let dir = common::scratch(&format!("sdxl_{name}_grid"));
        let exp = write_experiment(&dir, name, &models, SDXL_ADAPTER, grid);
        let plan = common::plan(&exp, &dir);
        assert!(plan.contains("= 6 cells"), "{plan}");
        let out = common::negimg(&["--device", "cpu", "run", &exp], &dir);
        assert!(out.status.success(), "{}", common::text(&out));
        let run = common::only_run(&dir.join(format!("results/{name}")));
        let mut rows = csv::Reader::from_path(run.join("records.csv")).unwrap();
        let header = rows.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let [o, c, t] = keys.map(col);
        let file = col("file");
        let cells = rows
            .records()
            .map(Result::unwrap)
            .map(|r| ((r[o].into(), r[c].into(), r[t].into()), r[file].into()))
            .collect();
        let header = header.iter().map(str::to_string).collect();
        Self { run, header, cells }
    }

    fn assert_has(&self, values: &[(&str, &str, &str)]) {
        let all: Vec<_> = self.cells.iter().map(|(v, _)| v).collect();
        for &v in values {
            assert!(all.contains(&&want(v)), "{v:?} not in {all:?}");
        }
    }

    /// The image file of the cell with these values.
    fn file(&self, v: (&str, &str, &str)) -> String {
        let key = want(v);
        self.cells
            .iter()
            .find(|(x, _)| *x == key)
            .unwrap()
            .1
            .clone()
    }

    fn column(&self, name: &str) -> usize {
        self.header.iter().position(|h| h == name).unwrap()
    }

    fn distinct_images(&self) -> usize {
        let files: std::collections::BTreeSet<&String> =
            self.cells.iter().map(|(_, f)| f).collect();
        files.len()
    }

    /// The PNG text chunk `key` of the cell with these values.
    fn chunk(&self, v: (&str, &str, &str), key: &str) -> String {
        let texts = negimg::run::png::read_texts(&self.run.join(self.file(v))).unwrap();
        texts.into_iter().find(|(k, _)| k == key).unwrap().1
    }
}

fn want((o, c, t): (&str, &str, &str)) -> (String, String, String) {
    (o.to_string(), c.to_string(), t.to_string())
}

const MICRO_GRID: &str = r#"[defaults]
steps = 2
size = 32
dtype = "fp32"
seeds = [1]
negative = "none"

[grid]
original_size = ["auto", "32x32", [64, 48]]

[[grid.zip]]
crops_coords_top_left = ["0x0", [8, 4]]
target_size = ["auto", "16x24"]
"#;

/// A grid over `original_size` and a zip of `crops_coords_top_left` with `target_size` on
/// the tiny SDXL set: every cell made, the values in records.csv and the PNG chunks, the
/// image's own size sharing the default's image (and id), the others each their own.
#[test]
fn sdxl_micro_conditioning_axes_zips_records_and_png_chunks() {
    let grid = MicroGridRun::new(
        "micro",
        MICRO_GRID,
        ["original_size", "crops_coords_top_left", "target_size"],
    );
    grid.assert_has(&[
        ("auto", "0x0", "auto"),
        ("32x32", "0x0", "auto"),
        ("64x48", "0x0", "auto"),
        ("auto", "8x4", "16x24"),
        ("64x48", "8x4", "16x24"),
    ]);
    // The image's own size is the default: one image for both cells.
    assert_eq!(
        grid.file(("auto", "0x0", "auto")),
        grid.file(("32x32", "0x0", "auto"))
    );
    // 6 cells; "32x32" shares the image of "auto" with either zip row.
    assert_eq!(grid.distinct_images(), 4);
    // The chunks of a cell away from the defaults carry its values.
    let away = ("64x48", "8x4", "16x24");
    let parameters = grid.chunk(away, "parameters");
    assert!(
        parameters.contains("Original size: 64x48, Crop top-left: 8x4, Target size: 16x24"),
        "{parameters}"
    );
    let json: serde_json::Value = serde_json::from_str(&grid.chunk(away, "negimg")).unwrap();
    let cell = json.get("cell").or(json.get("params")).unwrap_or(&json);
    let text = cell.to_string();
    assert!(
        text.contains("\"original_size\":[64,48]") && text.contains("\"target_size\":[16,24]"),
        "{text}"
    );
}

/// The same keys on an SD1.5-shaped pipeline would change nothing: `plan` refuses them
/// naming the experiment file, the key's line, its value and the UNet's config (the cond
/// row's keys and the `negative_*` ones alike).
#[test]
fn sdxl_micro_conditioning_on_an_sd15_pipeline_is_an_error_at_plan_time() {
    let models = common::tiny::tiny_models();
    let dir = common::scratch("sdxl_micro_on_sd15");
    for (key, value, shown) in [
        ("crops_coords_top_left", "[8, 4]", "8x4"),
        ("negative_target_size", "\"16x24\"", "16x24"),
        ("negative_crops_coords_top_left", "[0, 8]", "0x8"),
    ] {
        let rest = format!("[defaults]\nsteps = 2\nsize = 32\nseeds = [1]\n{key} = {value}\n");
        let exp = write_experiment(&dir, "micro15", &models, SD15_ADAPTER, &rest);
        let out = common::negimg(&["--device", "cpu", "plan", &exp], &dir);
        let text = common::text(&out);
        assert!(!out.status.success(), "plan accepted {key}:\n{text}");
        let written = std::fs::read_to_string(dir.join(&exp)).unwrap();
        let line = written[..written.find(key).unwrap()].matches('\n').count() + 1;
        assert!(
            text.contains(&format!("micro15.toml:{line} (defaults.{key})"))
                && text.contains(&format!("{key}={shown}"))
                && text.contains(
                    &models
                        .join("pipeline/unet/config.json")
                        .display()
                        .to_string()
                ),
            "{text}"
        );
    }
    // At the defaults the same file plans.
    let exp = write_experiment(
        &dir,
        "plain15",
        &models,
        SD15_ADAPTER,
        "[defaults]\nsteps = 2\nsize = 32\nseeds = [1]\n",
    );
    let out = common::negimg(&["--device", "cpu", "plan", &exp], &dir);
    assert!(out.status.success(), "{}", common::text(&out));
}

/// Plan-time checks before any model loads: an SD1.5 adapter on the SDXL pipeline (and an
/// SDXL adapter on the SD1.5 one), and an SDXL folder without `text_encoder_2`, each named.
#[test]
fn sdxl_plan_refuses_adapters_of_the_other_pipeline_and_a_missing_text_encoder_2() {
    let sdxl = common::tiny::tiny_sdxl_models();
    let sd15 = common::tiny::tiny_models();
    let dir = common::scratch("sdxl_plan_checks");
    let rest = "[defaults]\nsteps = 2\nsize = 32\nseeds = [1]\n";
    // An SD1.5 adapter file with the SDXL pipeline and its encoder.
    let sd15_adapter = dir.join(SD15_ADAPTER);
    std::fs::copy(sd15.join(SD15_ADAPTER), &sd15_adapter).unwrap();
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for part in ["pipeline", "image_encoder"] {
        std::os::unix::fs::symlink(sdxl.join(part), mixed.join(part)).unwrap();
    }
    std::fs::copy(&sd15_adapter, mixed.join(SD15_ADAPTER)).unwrap();
    let exp = write_experiment(&dir, "sd15_on_sdxl", &mixed, SD15_ADAPTER, rest);
    let out = common::negimg(&["--device", "cpu", "plan", &exp], &dir);
    let text = common::text(&out);
    assert!(!out.status.success(), "plan accepted it:\n{text}");
    assert!(
        text.contains("sd15_on_sdxl.toml") && text.contains(SD15_ADAPTER),
        "{text}"
    );
    eprintln!("SD1.5 adapter on SDXL:\n{text}");
    // An SDXL adapter with the SD1.5 pipeline.
    let mixed15 = dir.join("mixed15");
    std::fs::create_dir_all(&mixed15).unwrap();
    for part in ["pipeline", "image_encoder"] {
        std::os::unix::fs::symlink(sd15.join(part), mixed15.join(part)).unwrap();
    }
    std::fs::copy(sdxl.join(SDXL_ADAPTER), mixed15.join(SDXL_ADAPTER)).unwrap();
    let exp = write_experiment(&dir, "sdxl_on_sd15", &mixed15, SDXL_ADAPTER, rest);
    let out = common::negimg(&["--device", "cpu", "plan", &exp], &dir);
    let text = common::text(&out);
    assert!(!out.status.success(), "plan accepted it:\n{text}");
    assert!(
        text.contains("sdxl_on_sd15.toml") && text.contains(SDXL_ADAPTER),
        "{text}"
    );
    eprintln!("SDXL adapter on SD1.5:\n{text}");
    // The SDXL folder without text_encoder_2 in model_index.json.
    let no_te2 = dir.join("no_te2");
    std::fs::create_dir_all(no_te2.join("pipeline")).unwrap();
    for entry in std::fs::read_dir(sdxl.join("pipeline")).unwrap().flatten() {
        let name = entry.file_name();
        if name != "model_index.json" {
            std::os::unix::fs::symlink(entry.path(), no_te2.join("pipeline").join(&name)).unwrap();
        }
    }
    let index = std::fs::read_to_string(sdxl.join("pipeline/model_index.json")).unwrap();
    let mut index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let map = index.as_object_mut().unwrap();
    map.remove("text_encoder_2");
    map.remove("tokenizer_2");
    std::fs::write(
        no_te2.join("pipeline/model_index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(sdxl.join("image_encoder"), no_te2.join("image_encoder")).unwrap();
    std::fs::copy(sdxl.join(SDXL_ADAPTER), no_te2.join(SDXL_ADAPTER)).unwrap();
    let exp = write_experiment(&dir, "no_te2", &no_te2, SDXL_ADAPTER, rest);
    let out = common::negimg(&["--device", "cpu", "plan", &exp], &dir);
    let text = common::text(&out);
    assert!(!out.status.success(), "plan accepted it:\n{text}");
    assert!(
        text.contains("no_te2.toml")
            && text.contains(&no_te2.join("pipeline").display().to_string())
            && text.contains("no text_encoder_2"),
        "{text}"
    );
}

const NEGATIVE_MICRO_GRID: &str = r#"[defaults]
steps = 2
size = 32
dtype = "fp32"
seeds = [1]
negative = "none"
original_size = [64, 48]

[grid]
negative_original_size = ["auto", [64, 48], "32x32"]

[[grid.zip]]
negative_crops_coords_top_left = ["auto", [8, 4]]
negative_target_size = ["auto", "16x24"]
"#;

/// The uncond row's micro-conditioning (`negative_*`) on a grid axis and a zip: each
/// `auto` follows the cond row's value (here `original_size = 64x48`), so `[64, 48]` shares
/// the `auto` image and id while `32x32` (the image's size, not the cond row's) does not;
/// records.csv gets the three columns (values as set), the PNG chunks the values.
#[test]
fn sdxl_negative_micro_conditioning_axes_zips_records_and_png_chunks() {
    let grid = MicroGridRun::new(
        "negmicro",
        NEGATIVE_MICRO_GRID,
        [
            "negative_original_size",
            "negative_crops_coords_top_left",
            "negative_target_size",
        ],
    );
    assert_eq!(
        grid.column("original_size") + 3,
        grid.column("negative_original_size"),
        "{:?}",
        grid.header
    );
    grid.assert_has(&[
        ("auto", "auto", "auto"),
        ("32x32", "auto", "auto"),
        ("auto", "8x4", "16x24"),
        ("32x32", "8x4", "16x24"),
    ]);
    // [64, 48] is the cond row's value: recorded as set, the same image (and id) as auto.
    for crop in [("auto", "auto"), ("8x4", "16x24")] {
        assert_eq!(
            grid.file(("auto", crop.0, crop.1)),
            grid.file(("64x48", crop.0, crop.1))
        );
    }
    assert_eq!(grid.distinct_images(), 4);
    let away = ("32x32", "8x4", "16x24");
    let parameters = grid.chunk(away, "parameters");
    assert!(
        parameters.contains(
            "Negative original size: 32x32, Negative crop top-left: 8x4, \
             Negative target size: 16x24"
        ),
        "{parameters}"
    );
    let json = grid.chunk(away, "negimg");
    assert!(
        json.contains("\"negative_original_size\":[32,32]")
            && json.contains("\"negative_crops_coords_top_left\":[8,4]")
            && json.contains("\"negative_target_size\":[16,24]"),
        "{json}"
    );
    // The cells at the defaults carry no negative_* key (their ids are those of before).
    let json = grid.chunk(("auto", "auto", "auto"), "negimg");
    assert!(!json.contains("negative_original_size"), "{json}");
}

/// The key forms (`"HxW"`, `[h, w]`, `"auto"`) parse into the cells; bad values are refused
/// naming the file, the key and the line.
#[test]
fn sdxl_micro_conditioning_values_parse_and_bad_ones_name_key_and_line() {
    use negimg::experiment::{LoadOptions, Param, Value};
    use negimg::params::MicroPair;
    let models = common::tiny::tiny_sdxl_models();
    let dir = common::scratch("sdxl_micro_parse");
    let exp = write_experiment(&dir, "m", &models, SDXL_ADAPTER, MICRO_GRID);
    let path = dir.join(&exp);
    let text = std::fs::read_to_string(&path).unwrap();
    let parse = |t: &str| negimg::experiment::parse(&path, t.to_string(), &LoadOptions::default());
    let e = parse(&text).unwrap();
    let got: Vec<(Value, Value)> = e
        .cells
        .iter()
        .map(|c| (c.get(Param::OriginalSize), c.get(Param::TargetSize)))
        .collect();
    assert_eq!(got.len(), 6);
    assert!(got.contains(&(
        Value::Size(Some(MicroPair(64, 48))),
        Value::Size(Some(MicroPair(16, 24)))
    )));
    assert!(got.contains(&(Value::Size(None), Value::Size(None))));
    let bad = |from: &str, to: &str, words: &[&str]| {
        let t = text.replace(from, to);
        let err = format!(
            "{:#}",
            parse(&t).err().unwrap_or_else(|| panic!("accepted {to}"))
        );
        let line = text[..text.find(from).unwrap()].matches('\n').count() + 1;
        assert!(
            err.contains(&format!("m.toml:{line}")) || err.contains(&format!("line {line}")),
            "{err}"
        );
        for w in words {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    };
    bad("[64, 48]", "[64, 48, 2]", &["original_size", "two numbers"]);
    bad("\"16x24\"", "\"16by24\"", &["target_size", "16by24"]);
    bad(
        "\"16x24\"",
        "\"16x99999\"",
        &["target_size", "out of range"],
    );
    bad("[8, 4]", "\"auto\"", &["crops_coords_top_left", "auto"]);
    bad("\"32x32\"", "32", &["original_size", "1024x768"]);
}

/// The `negative_*` keys take the same forms, `"auto"` (the cond row's value) for the crop
/// too; bad values are refused naming the file, the key and the line.
#[test]
fn sdxl_negative_micro_conditioning_values_parse_and_bad_ones_name_key_and_line() {
    use negimg::experiment::{LoadOptions, Param, Value};
    use negimg::params::MicroPair;
    let models = common::tiny::tiny_sdxl_models();
    let dir = common::scratch("sdxl_negative_micro_parse");
    let exp = write_experiment(&dir, "n", &models, SDXL_ADAPTER, NEGATIVE_MICRO_GRID);
    let path = dir.join(&exp);
    let text = std::fs::read_to_string(&path).unwrap();
    let parse = |t: &str| negimg::experiment::parse(&path, t.to_string(), &LoadOptions::default());
    let e = parse(&text).unwrap();
    let crops: Vec<Value> = (e.cells.iter())
        .map(|c| c.get(Param::NegativeCropsCoordsTopLeft))
        .collect();
    assert!(
        crops.contains(&Value::Size(None)) && crops.contains(&Value::Size(Some(MicroPair(8, 4))))
    );
    let p = e.cells[5].params(&|n| std::path::PathBuf::from(n));
    assert_eq!(p.negative_time_ids(), [32.0, 32.0, 8.0, 4.0, 16.0, 24.0]);
    assert_eq!(p.time_ids(), [64.0, 48.0, 0.0, 0.0, 32.0, 32.0]);
    for (from, to, words) in [
        (
            "[8, 4]",
            "[8, 4, 2]",
            ["negative_crops_coords_top_left", "two numbers"],
        ),
        (
            "\"16x24\"",
            "\"16by24\"",
            ["negative_target_size", "16by24"],
        ),
        ("\"32x32\"", "32", ["negative_original_size", "1024x768"]),
    ] {
        let t = text.replace(from, to);
        let err = format!(
            "{:#}",
            parse(&t).err().unwrap_or_else(|| panic!("accepted {to}"))
        );
        let line = text[..text.find(from).unwrap()].matches('\n').count() + 1;
        assert!(err.contains(&format!("n.toml:{line}")), "{err}");
        for w in words {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    }
}

/// The plan's UNet FLOPs from the config (`models::unet_flops`) against torch's
/// FlopCounterMode on diffusers' UNet built from the same config (meta device, no weights):
/// SDXL base and SD1.5 at two sizes, the tiny SDXL test UNet, and SDXL with shallower
/// transformers, each within 2% (the count leaves out norms and element-wise ops, as
/// FlopCounterMode does; the remainder is the time embedding's sinusoids and rounding).
#[test]
fn sdxl_unet_flops_match_torch_flop_counter() {
    use negimg::models::unet::{OneOrMany, UNet2DConditionConfig};
    use negimg::models::unet_flops::{Context, unet_row_flops};
    let mut shallow = UNet2DConditionConfig::sdxl();
    shallow.transformer_layers_per_block = OneOrMany::Many(vec![1, 1, 4]);
    let cases = [
        ("sdxl_1024", UNet2DConditionConfig::sdxl(), 128, 128),
        ("sdxl_512x768", UNet2DConditionConfig::sdxl(), 64, 96),
        ("sdxl_shallow_1024", shallow, 128, 128),
        ("sd15_512", UNet2DConditionConfig::sd15(), 64, 64),
        ("sd15_768", UNet2DConditionConfig::sd15(), 96, 96),
        ("tiny_sdxl_64", UNet2DConditionConfig::tiny_sdxl(), 8, 8),
    ];
    let dir = common::scratch("sdxl_unet_flops");
    let spec: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, cfg, h, w)| {
            serde_json::json!({
                "name": name, "h": h, "w": w, "text_tokens": 77,
                "config": serde_json::from_str::<serde_json::Value>(&cfg.to_config_json()).unwrap(),
            })
        })
        .collect();
    let file = dir.join("cases.json");
    std::fs::write(&file, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = common::run_python("unet_flops.py", &[file.to_str().unwrap()]);
    let torch: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    let ctx = Context {
        text_tokens: 77,
        ip_tokens: 0,
    };
    let mut ours = std::collections::BTreeMap::new();
    for (name, cfg, h, w) in &cases {
        let mine = unet_row_flops(cfg, *h, *w, ctx);
        let theirs = torch[name].as_f64().unwrap();
        eprintln!(
            "{name}: ours {mine:.4e}, torch {theirs:.4e}, ratio {:.4}",
            mine / theirs
        );
        assert!(
            (mine / theirs - 1.0).abs() < 0.02,
            "{name}: {mine:.4e} vs {theirs:.4e}"
        );
        ours.insert(*name, mine);
    }
    // Sensible growth: with the pixels (a bit faster: self-attention is quadratic), with the
    // transformer depth; SDXL at 1024² against SD1.5 at 512².
    let px_ratio = ours["sdxl_1024"] / ours["sdxl_512x768"];
    assert!(px_ratio > 128.0 * 128.0 / (64.0 * 96.0), "{px_ratio}");
    assert!(ours["sdxl_shallow_1024"] < 0.8 * ours["sdxl_1024"]);
    eprintln!(
        "SDXL 1024² / SD1.5 512² per UNet row: {:.2}",
        ours["sdxl_1024"] / ours["sd15_512"]
    );
}

/// bench's VAE decode/encode and image-encoder FLOPs from the configs
/// (`models::coder_flops`) against torch's FlopCounterMode on diffusers' AutoencoderKL and
/// transformers' CLIPVisionModelWithProjection built from the same configs (meta device, one
/// Python call): SD1.5's and SDXL's VAE and the tiny one at a non-square size, ViT-H, ViT-bigG
/// and the tiny encoders, each equal to torch's count (within 1e-6: the counts leave out
/// norms, activations and resampling, as FlopCounterMode does).
#[test]
fn vae_and_image_encoder_flops_match_torch_flop_counter() {
    use negimg::models::clip_vision::ClipVisionConfig;
    use negimg::models::coder_flops::{vae_decode_flops, vae_encode_flops, vision_flops};
    use negimg::models::vae::AutoencoderKLConfig;
    let vaes = [
        ("sd15", AutoencoderKLConfig::sd15(), 64, 64),
        ("sdxl", AutoencoderKLConfig::sdxl(), 128, 96),
        ("tiny", AutoencoderKLConfig::tiny(), 8, 12),
    ];
    let visions = [
        ("vit_h", ClipVisionConfig::vit_h()),
        ("vit_big_g", ClipVisionConfig::vit_big_g()),
        ("tiny", ClipVisionConfig::tiny()),
        ("tiny_big_g", common::tiny::big_g_vision()),
    ];
    let mut cases: Vec<(String, f64, serde_json::Value)> = Vec::new();
    for (name, cfg, h, w) in &vaes {
        let config: serde_json::Value = serde_json::from_str(&cfg.to_config_json()).unwrap();
        let scale = cfg.scale_factor();
        let (ih, iw) = (h * scale, w * scale);
        for (model, mine, (a, b)) in [
            ("vae_decode", vae_decode_flops(cfg, *h, *w), (*h, *w)),
            ("vae_encode", vae_encode_flops(cfg, ih, iw), (ih, iw)),
        ] {
            let case = format!("{model}_{name}");
            let spec =
                serde_json::json!({"name": case, "model": model, "config": config, "h": a, "w": b});
            cases.push((case, mine, spec));
        }
    }
    for (name, cfg) in &visions {
        let case = format!("vision_{name}");
        let spec = serde_json::json!({"name": case, "model": "vision", "config": cfg.to_config_json(), "h": 0, "w": 0});
        cases.push((case, vision_flops(cfg), spec));
    }
    let dir = common::scratch("coder_flops");
    let file = dir.join("cases.json");
    let specs: Vec<&serde_json::Value> = cases.iter().map(|(_, _, s)| s).collect();
    std::fs::write(&file, serde_json::to_string(&specs).unwrap()).unwrap();
    let out = common::run_python("coder_flops.py", &[file.to_str().unwrap()]);
    let torch: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    for (name, mine, _) in &cases {
        let theirs = torch[name].as_f64().unwrap();
        eprintln!(
            "{name}: ours {mine:.4e}, torch {theirs:.4e}, ratio {:.4}",
            mine / theirs
        );
        assert!(
            (mine / theirs - 1.0).abs() < 1e-6,
            "{name}: {mine:.6e} vs {theirs:.6e}"
        );
    }
}
