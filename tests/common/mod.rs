//! Helpers shared by the integration tests.
#![allow(dead_code)]
pub mod hub_cache;
pub mod parity;
pub mod tiny;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python (set by the justfile as NEGIMG_PYTHON), for reference computations.
pub fn python() -> PathBuf {
    std::env::var_os("NEGIMG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Runs `tests/reference/<script>` with the venv's python; panics with its output on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = repo().join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("OMP_NUM_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh, empty scratch folder for one test under target/test-scratch.
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The release binary (the justfile builds it before the tests run).
pub fn negimg_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_negimg"))
}

pub fn negimg(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(negimg_bin())
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot run negimg")
}

/// Max |a - b| over two tensors of the same shape.
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// What `tests/reference/model_keys.py` reports of the model diffusers builds from
/// `config_json` (on the meta device, no memory), for `component` = "unet" or "vae":
/// `shapes` (state-dict keys and shapes) and, for the UNet, `cross_attention` (the
/// attention processors' order).
pub fn diffusers_model_keys(name: &str, component: &str, config_json: &str) -> serde_json::Value {
    let dir = scratch(name);
    let config = dir.join("config.json");
    std::fs::write(&config, config_json).unwrap();
    let out = dir.join("keys.json");
    run_python(
        "model_keys.py",
        &[component, config.to_str().unwrap(), out.to_str().unwrap()],
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// The `shapes` of a [`diffusers_model_keys`] report.
pub fn shapes_of(reference: &serde_json::Value) -> std::collections::BTreeMap<String, Vec<i64>> {
    serde_json::from_value(reference["shapes"].clone()).unwrap()
}

/// The variable names and shapes of a VarStore.
pub fn var_shapes(vs: &tch::nn::VarStore) -> std::collections::BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
}

/// Loads a model set on the CPU in float32.
pub fn load_pipeline(models: &negimg::roles::ModelSet<PathBuf>) -> negimg::pipeline::Pipeline {
    negimg::pipeline::Pipeline::load(models, tch::Device::Cpu, tch::Kind::Float, &mut |_| {})
        .unwrap()
}

/// Generates `cells` (any mix of batch keys) in the runner's batches at batch size
/// `max_batch` (UNet calls of at most `max_batch` cells; cells that may share trajectories
/// batched together); float outcomes in the order of `cells`.
pub fn generate_float(
    pipeline: &mut negimg::pipeline::Pipeline,
    cells: &[negimg::params::GenParams],
    max_batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<negimg::pipeline::FloatOutcome> {
    pipeline.set_call_cells(max_batch);
    let mut out: Vec<Option<negimg::pipeline::FloatOutcome>> = cells.iter().map(|_| None).collect();
    for batch in negimg::run::batching::plan_batches(cells, max_batch) {
        let group: Vec<_> = batch.iter().map(|&i| cells[i].clone()).collect();
        let results = pipeline.generate_float(&group, progress).unwrap();
        for (&i, r) in batch.iter().zip(results) {
            out[i] = Some(r);
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Loads `models` and generates `cells` as [`generate_float`] does; the images, which must
/// all succeed.
pub fn generate_images(
    models: &negimg::roles::ModelSet<PathBuf>,
    cells: &[negimg::params::GenParams],
    max_batch: usize,
) -> Vec<tch::Tensor> {
    let mut pipeline = load_pipeline(models);
    generate_float(&mut pipeline, cells, max_batch, &mut |_, _| {})
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Generates each of `cells` in a call of its own (no batching, no shared trajectory).
pub fn generate_alone(
    pipeline: &mut negimg::pipeline::Pipeline,
    cells: &[negimg::params::GenParams],
) -> Vec<negimg::pipeline::FloatOutcome> {
    cells
        .iter()
        .map(|c| {
            let mut out = pipeline.generate_float(std::slice::from_ref(c), &mut |_, _| {});
            out.as_mut().unwrap().pop().unwrap()
        })
        .collect()
}

/// Generates `cells` one by one and in one batch of all; asserts the batch took `calls`
/// progress calls (its steps) and gives every cell's image within 1e-5 of the image alone.
/// `label` describes cell i in a failure.
pub fn assert_batched_equal_alone(
    pipeline: &mut negimg::pipeline::Pipeline,
    cells: &[negimg::params::GenParams],
    calls: (usize, &str),
    label: &dyn Fn(usize) -> String,
) {
    let alone = generate_alone(pipeline, cells);
    let mut n = 0;
    let together = generate_float(pipeline, cells, cells.len(), &mut |_, _| n += 1);
    assert_eq!(n, calls.0, "{}", calls.1);
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-5, "{}: batched image differs by {d}", label(i));
    }
}

/// What a command printed: stdout, then stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Copies `experiments/<name>.toml` into a fresh scratch folder `scratch_name` and runs it
/// there on the CPU; asserts the run succeeded and made all of its `cells` now. Returns the
/// folder and the run's folder under results/.
pub fn run_copied_experiment(scratch_name: &str, name: &str, cells: usize) -> (PathBuf, PathBuf) {
    let dir = scratch(scratch_name);
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    let exp = format!("experiments/{name}.toml");
    std::fs::copy(repo().join(&exp), dir.join(&exp)).unwrap();
    let out = negimg(&["--device", "cpu", "run", &exp], &dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{cells} cells; {cells} made now, 0 kept from before"
        )),
        "{}",
        text(&out)
    );
    let run = only_run(&dir.join("results").join(name));
    (dir, run)
}

/// The run folder in `results` (a results/<experiment> folder holding one run).
pub fn only_run(results: &Path) -> PathBuf {
    std::fs::read_dir(results)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap_or_else(|| panic!("no run in {}", results.display()))
        .path()
}

/// What `negimg --device cpu plan <exp>` prints, run in `dir`.
pub fn plan(exp: &str, dir: &Path) -> String {
    text(&negimg(&["--device", "cpu", "plan", exp], dir))
}

/// The image the library makes of `cell` with the models of `models`.
pub fn library_image(models: &Path, cell: negimg::params::GenParams) -> image::RgbImage {
    let mut pipeline = load_pipeline(&negimg::roles::ModelSet::from_models_dir(models));
    match pipeline.generate(&[cell], &mut |_, _| {}).unwrap().pop() {
        Some(negimg::pipeline::CellOutcome::Image(img)) => img,
        _ => panic!("the library image failed"),
    }
}

/// `negimg generate --device cpu --models <models> <args>`, run in `dir`.
pub fn negimg_generate(models: &Path, args: &[&str], dir: &Path) -> std::process::Output {
    let mut all = vec![
        "generate",
        "--device",
        "cpu",
        "--models",
        models.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    negimg(&all, dir)
}

/// `view` has exactly the tensors of `reference` (names, shapes, values); `position_ids`, a
/// buffer real checkpoints carry and transformers does not save, is left out.
pub fn assert_same_tensors(
    view: &dyn negimg::weights::TensorSource,
    reference: &negimg::weights::TensorFile,
    what: &str,
) {
    use negimg::weights::TensorSource as _;
    let mut expected = reference.names();
    let mut got: Vec<String> = view
        .names()
        .into_iter()
        .filter(|n| !n.ends_with("position_ids"))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{what}: diffusers names differ");
    for name in &expected {
        assert_eq!(
            view.shape(name),
            reference.shape(name),
            "{what}: shape of {name}"
        );
        let (cpu, f32) = (tch::Device::Cpu, tch::Kind::Float);
        let a = view.get(name, cpu, f32).unwrap();
        let b = reference.get(name, cpu, f32).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{what}: {name}");
    }
}

/// Names and shapes only: enough to infer configs.
pub struct Shapes {
    origin: PathBuf,
    shapes: std::collections::BTreeMap<String, Vec<usize>>,
}

impl negimg::weights::TensorSource for Shapes {
    fn origin(&self) -> &Path {
        &self.origin
    }
    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).cloned()
    }
    fn get(&self, name: &str, _: tch::Device, _: tch::Kind) -> anyhow::Result<tch::Tensor> {
        anyhow::bail!("{name}: shapes only")
    }
}

/// The tensor names and shapes of the models diffusers and transformers build from these
/// configs (`tests/reference/ldm_sd15_shapes.py`, in a fresh scratch folder `name`), by part:
/// "unet", "vae", "text_encoder" and, given `text_2`, "text_encoder_2".
pub fn reference_shapes(
    name: &str,
    unet: &negimg::models::unet::UNet2DConditionConfig,
    vae: &negimg::models::vae::AutoencoderKLConfig,
    text: &negimg::models::clip_text::ClipTextConfig,
    text_2: Option<&negimg::models::clip_text::ClipTextConfig>,
) -> std::collections::BTreeMap<String, Shapes> {
    let dir = scratch(name);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let out = dir.join("shapes.json");
    let mut args = vec![
        write("unet.json", unet.to_config_json()),
        write("vae.json", vae.to_config_json()),
        write("text.json", text.to_config_json().to_string()),
        out.to_str().unwrap().to_string(),
    ];
    if let Some(text_2) = text_2 {
        args.push(write("text_2.json", text_2.to_config_json().to_string()));
    }
    run_python(
        "ldm_sd15_shapes.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let all: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<usize>>> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    all.into_iter()
        .map(|(part, shapes)| {
            let origin = out.clone();
            (part, Shapes { origin, shapes })
        })
        .collect()
}

/// The largest difference of two images of one size, in 8-bit levels.
pub fn max_level_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

/// The PNG `png` with its `negimg` chunk changed by `edit` (its only text chunk).
pub fn with_chunk(png: &Path, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let texts = negimg::run::png::read_texts(png).unwrap();
    let chunk = &texts.iter().find(|(k, _)| k == "negimg").unwrap().1;
    let mut value: serde_json::Value = serde_json::from_str(chunk).unwrap();
    edit(&mut value);
    let img = image::open(png).unwrap().to_rgb8();
    negimg::run::png::encode(&img, &[("negimg", &value.to_string())]).unwrap()
}
