//! Models as the venv's transformers 5 and diffusers save them (tests/reference/save_layouts.py):
//! CLIP models with and without the base-model prefix, pickled `.bin` weights (converted once,
//! beside the cache), pipelines from `save_pretrained` with and without safetensors. Outputs
//! against transformers, CPU fp32, max abs diff <= 1e-4; a `.bin` holding anything but tensors
//! is refused without running its code.
mod common;

use negimg::models::clip_model::{self, ClipConfig, ClipModel};
use negimg::models::clip_text::{self, Activation, ClipTextConfig, ClipTextModel};
use negimg::models::clip_vision::{self, ClipVisionConfig, ClipVisionModelWithProjection};
use negimg::models::tokenizer::{self, ClipTokenizer};
use negimg::weights::pipeline_folder::PipelineFolder;
use negimg::weights::{TensorFile, TensorSource};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

/// Converted `.bin` files go to a scratch folder, not the user's cache (set once, before any
/// test of this binary loads a model).
fn converted_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch("weights_layouts_converted");
        // SAFETY: set once at the start of each test, before any thread reads the variable.
        unsafe { std::env::set_var("NEGIMG_CONVERTED", &dir) };
        dir
    })
    .clone()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let diff = common::max_abs_diff(got, want);
    println!("{name}: max abs diff {diff:.2e}");
    assert!(diff <= TOL, "{name}: max abs diff {diff} > {TOL}");
}

/// The folders save_layouts.py writes (once for the tests of this binary), with its
/// reference outputs and the inputs.
fn saved_layouts() -> (PathBuf, HashMap<String, Tensor>, Tensor, Tensor) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(write_layouts);
    let read = |name: &str| -> HashMap<String, Tensor> {
        Tensor::read_safetensors(dir.join(name))
            .unwrap()
            .into_iter()
            .collect()
    };
    let mut inputs = read("inputs.safetensors");
    let ids = inputs.remove("ids").unwrap();
    let pixels = inputs.remove("pixels").unwrap();
    (dir.clone(), read("ref.safetensors"), ids, pixels)
}

fn write_layouts() -> PathBuf {
    converted_dir();
    let dir = common::scratch("weights_layouts");
    let vision_cfg = ClipVisionConfig {
        hidden_act: Activation::Gelu,
        ..ClipVisionConfig::tiny()
    };
    clip_text::write_random_model(&dir.join("text"), &ClipTextConfig::tiny(), 11).unwrap();
    clip_vision::write_random_model(&dir.join("vision"), &vision_cfg, 12).unwrap();
    let gz = tokenizer::find_open_clip_vocab().unwrap();
    clip_model::write_random_model(&dir.join("clip"), &ClipConfig::tiny(), 13, &gz).unwrap();
    let tok = ClipTokenizer::from_folder(&dir.join("clip")).unwrap();
    let ids = tok.encode_batch(&["a house in winter", "", "a green lawn, sunny day"]);
    let pixels = {
        let _generator = negimg::weights::random::seeded_generator(5);
        Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu))
    };
    Tensor::write_safetensors(
        &[("ids", &ids), ("pixels", &pixels)],
        dir.join("inputs.safetensors"),
    )
    .unwrap();
    let tiny = common::tiny::tiny_models();
    common::run_python(
        "save_layouts.py",
        &[dir.to_str().unwrap(), tiny.to_str().unwrap()],
    );
    dir
}

#[test]
fn layouts_clip_models_with_and_without_prefix_and_as_bin_match_transformers() {
    let (dir, r, ids, pixels) = saved_layouts();
    let _guard = tch::no_grad_guard();
    let (cpu, f32) = (Device::Cpu, Kind::Float);
    let unprefixed = TensorFile::open(dir.join("text-saved/model.safetensors")).unwrap();
    assert!(unprefixed.contains("embeddings.position_embedding.weight"));
    for folder in ["text", "text-saved", "text-bin"] {
        let text = ClipTextModel::load(&dir.join(folder), cpu, f32)
            .unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        assert_close(
            &format!("{folder} last_hidden_state"),
            &text.forward(&ids),
            &r["text.last_hidden_state"],
        );
    }
    for folder in ["vision-saved", "vision-bare", "vision-bin"] {
        let vision = ClipVisionModelWithProjection::load(&dir.join(folder), cpu, f32)
            .unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        assert_close(
            &format!("{folder} image_embeds"),
            &vision.forward(&pixels).image_embeds,
            &r["vision.image_embeds"],
        );
    }
    for folder in ["clip-saved", "clip-bin"] {
        let clip = ClipModel::load(&dir.join(folder), cpu, f32)
            .unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        assert_close(
            &format!("{folder} text_embeds"),
            &clip.text_embeds(&ids),
            &r["clip.text_embeds"],
        );
        assert_close(
            &format!("{folder} image_embeds"),
            &clip.image_embeds(&pixels),
            &r["clip.image_embeds"],
        );
    }
    // The .bin files were converted beside the cache, not next to themselves.
    for folder in ["text-bin", "vision-bin", "clip-bin"] {
        let names: Vec<_> = std::fs::read_dir(dir.join(folder))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with(".safetensors")),
            "{folder}: {names:?}"
        );
    }
    let converted = std::fs::read_dir(converted_dir()).unwrap().count();
    assert!(converted >= 3, "{converted} converted files");
}

/// Every tensor of `a` equals the same-named tensor of `b`.
fn assert_same_tensors(what: &str, a: &dyn TensorSource, b: &dyn TensorSource) {
    assert_eq!(a.names(), b.names(), "{what}: tensor names");
    for name in a.names() {
        let x = a.get(&name, Device::Cpu, Kind::Float).unwrap();
        let y = b.get(&name, Device::Cpu, Kind::Float).unwrap();
        assert!(x.equal(&y), "{what}: {name} differs");
    }
}

#[test]
fn layouts_save_pretrained_pipelines_load_with_and_without_safetensors() {
    let (dir, r, ids, _) = saved_layouts();
    let tiny = common::tiny::tiny_models().join("pipeline");
    let _guard = tch::no_grad_guard();
    for folder in ["pipe-saved", "pipe-bin"] {
        let p =
            PipelineFolder::open(&dir.join(folder)).unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        let bin = folder == "pipe-bin";
        for (component, weights, original) in [
            (
                "unet",
                &p.unet.weights,
                "unet/diffusion_pytorch_model.safetensors",
            ),
            (
                "vae",
                &p.vae.weights,
                "vae/diffusion_pytorch_model.safetensors",
            ),
        ] {
            assert_eq!(
                weights.extension().unwrap() == "bin",
                bin,
                "{folder}/{component}: {}",
                weights.display()
            );
            let got = TensorFile::open(weights).unwrap();
            let want = TensorFile::open(tiny.join(original)).unwrap();
            assert_same_tensors(&format!("{folder}/{component}"), &got, &want);
        }
        let text = ClipTextModel::load(&p.text_encoder.dir, Device::Cpu, Kind::Float)
            .unwrap_or_else(|e| panic!("{folder}/text_encoder: {e:#}"));
        assert_close(
            &format!("{folder} text encoder"),
            &text.forward(&ids),
            &r["pipe.text_encoder"],
        );
        // transformers 5 writes tokenizer.json alone; it gives the ids of the original.
        let saved = ClipTokenizer::from_folder(&p.tokenizer).unwrap();
        let original = ClipTokenizer::from_folder(&tiny.join("tokenizer")).unwrap();
        let texts = ["a house in winter", "", "snow, fresh snow"];
        assert!(
            saved
                .encode_batch(&texts)
                .equal(&original.encode_batch(&texts)),
            "{folder}: tokenizer ids differ"
        );
    }
    assert!(!dir.join("pipe-saved/tokenizer/vocab.json").exists());
    let text = TensorFile::open(dir.join("pipe-saved/text_encoder/model.safetensors")).unwrap();
    assert!(text.names().iter().all(|n| !n.starts_with("text_model.")));
}

/// `torch.save`s `expr` (Python) into `path`.
fn torch_save(path: &Path, prelude: &str, expr: &str) {
    let code = format!("import sys, torch\n{prelude}\ntorch.save({expr}, sys.argv[1])");
    let out = std::process::Command::new(common::python())
        .args(["-c", &code, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn layouts_bin_with_anything_but_tensors_is_refused_without_running_it() {
    converted_dir();
    let dir = common::scratch("weights_layouts_refused");
    // An object whose unpickling would create a file: weights_only refuses it unrun.
    let marker = dir.join("code-ran");
    let evil = dir.join("evil.bin");
    let prelude = format!(
        "class Evil:\n    def __reduce__(self):\n        return (open, ({:?}, 'w'))",
        marker.to_str().unwrap()
    );
    torch_save(&evil, &prelude, "{'w': torch.zeros(2), 'x': Evil()}");
    let msg = format!("{:#}", TensorFile::open(&evil).err().unwrap());
    assert!(
        msg.contains("evil.bin") && msg.contains("refused") && msg.contains("weights_only"),
        "{msg}"
    );
    assert!(!marker.exists(), "the pickled code ran");
    // Plain values that weights_only allows are still not tensors: named by key.
    let step = dir.join("with-step.bin");
    torch_save(&step, "", "{'w': torch.zeros(2), 'meta': {'step': 3}}");
    let msg = format!("{:#}", TensorFile::open(&step).err().unwrap());
    assert!(
        msg.contains("with-step.bin") && msg.contains("'meta.step'") && msg.contains("int"),
        "{msg}"
    );
    // Nested dicts of tensors are flattened with '.' (the IP-Adapter .bin layout).
    let nested = dir.join("nested.bin");
    torch_save(
        &nested,
        "",
        "{'image_proj': {'proj.weight': torch.ones(2, 3)}, 'ip_adapter': {'1.to_k_ip.weight': torch.zeros(4)}}",
    );
    let file = TensorFile::open(&nested).unwrap();
    assert_eq!(
        file.names(),
        vec!["image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"]
    );
}
