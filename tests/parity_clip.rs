//! CLIP text/vision encoders, CLIPModel features and IP-Adapter projections against
//! transformers / diffusers (tests/reference/clip_models.py) on tiny random weights written by
//! Rust; CLIP preprocessing of real photographs against CLIPImageProcessor
//! (tests/reference/clip_preprocess.py). CPU, fp32, max abs diff <= 1e-4.
mod common;

use negimg::models::clip_model::{self, ClipConfig, ClipModel};
use negimg::models::clip_text::{self, Activation, ClipTextConfig, ClipTextModel};
use negimg::models::clip_vision::{self, ClipVisionConfig, ClipVisionModelWithProjection};
use negimg::models::ip_adapter::{self, AdapterFile, AdapterKind, ImageProj, NoImage};
use negimg::models::preprocess::{clip_pixels, clip_pixels_batch};
use negimg::models::tokenizer::{self, ClipTokenizer};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    let diff = common::max_abs_diff(got, want);
    println!("{name}: max abs diff {diff:.2e}");
    assert!(diff <= TOL, "{name}: max abs diff {diff} > {TOL}");
}

#[test]
fn parity_clip_models_and_ip_adapter_projections() {
    let dir = common::scratch("parity_clip_models");
    let text_cfg = ClipTextConfig::tiny();
    // ViT-H uses exact GELU; the text encoder keeps quick_gelu.
    let vision_cfg = ClipVisionConfig {
        hidden_act: Activation::Gelu,
        ..ClipVisionConfig::tiny()
    };
    clip_text::write_random_model(&dir.join("text"), &text_cfg, 1).unwrap();
    clip_vision::write_random_model(&dir.join("vision"), &vision_cfg, 2).unwrap();
    let gz = tokenizer::find_open_clip_vocab().unwrap();
    clip_model::write_random_model(&dir.join("clip"), &ClipConfig::tiny(), 3, &gz).unwrap();
    // Base: projection_dim -> 4 tokens; Plus: hidden_size -> 16 tokens, one head (cross 32)
    // and two heads (cross 128).
    let hidden_sizes = [32, 32, 64, 64];
    let adapters = [
        (
            "adapter-base",
            AdapterKind::Base,
            32,
            vision_cfg.projection_dim,
            4,
        ),
        (
            "adapter-plus",
            AdapterKind::Plus,
            32,
            vision_cfg.hidden_size,
            5,
        ),
        (
            "adapter-plus2",
            AdapterKind::Plus,
            128,
            vision_cfg.hidden_size,
            6,
        ),
    ];
    for (name, kind, cross, embed, seed) in adapters {
        ip_adapter::write_random(
            &dir.join(format!("{name}.safetensors")),
            kind,
            cross,
            embed,
            &hidden_sizes,
            seed,
        )
        .unwrap();
    }

    let tok = ClipTokenizer::from_folder(&dir.join("clip")).unwrap();
    let ids = tok.encode_batch(&[
        "a photo of a cat",
        "",
        "an astronaut riding a horse on the moon, highly detailed",
    ]);
    tch::manual_seed(7);
    let pixels = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[("ids", &ids), ("pixels", &pixels)],
        dir.join("inputs.safetensors"),
    )
    .unwrap();
    common::run_python("clip_models.py", &[dir.to_str().unwrap()]);
    let r = read(&dir.join("ref.safetensors"));

    let _guard = tch::no_grad_guard();
    let (cpu, f32) = (Device::Cpu, Kind::Float);
    let text = ClipTextModel::load(&dir.join("text"), cpu, f32).unwrap();
    let hidden = text.forward(&ids);
    assert_close(
        "text last_hidden_state",
        &hidden,
        &r["text.last_hidden_state"],
    );
    assert_close(
        "text pooled",
        &text.pooled(&ids, &hidden),
        &r["text.pooled"],
    );

    let vision = ClipVisionModelWithProjection::load(&dir.join("vision"), cpu, f32).unwrap();
    let out = vision.forward(&pixels);
    assert_close(
        "vision image_embeds",
        &out.image_embeds,
        &r["vision.image_embeds"],
    );
    assert_close(
        "vision hidden_states[-2]",
        &out.penultimate,
        &r["vision.penultimate"],
    );
    // The penultimate states are not the last ones (guards against an off-by-one layer).
    assert!(common::max_abs_diff(&out.penultimate, &r["vision.last_hidden_state"]) > 1e-2);

    let clip = ClipModel::load(&dir.join("clip"), cpu, f32).unwrap();
    assert_eq!(clip.image_size(), 224);
    assert_close(
        "CLIPModel text features",
        &clip.text_embeds(&ids),
        &r["clip.text_embeds"],
    );
    assert_close(
        "CLIPModel image features",
        &clip.image_embeds(&pixels),
        &r["clip.image_embeds"],
    );

    for (name, kind, cross, _, _) in adapters {
        let file = AdapterFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
        assert_eq!(file.kind, kind, "{name}");
        assert_eq!(file.cross_dim, cross, "{name}");
        assert_eq!(
            file.num_tokens,
            if kind == AdapterKind::Base { 4 } else { 16 },
            "{name}"
        );
        assert_eq!(file.num_ip_layers, hidden_sizes.len(), "{name}");
        let proj = ImageProj::load(&file, cpu, f32).unwrap();
        let tokens = proj.tokens(&out);
        assert_eq!(tokens.size(), [2, file.num_tokens, cross], "{name}");
        assert_close(
            &format!("{name} tokens"),
            &tokens,
            &r[&format!("{name}.tokens")],
        );
        let no_image = proj.no_image_tokens(&vision, NoImage::Reference);
        assert_close(
            &format!("{name} no-image tokens"),
            &no_image,
            &r[&format!("{name}.no_image")],
        );
        let black = proj.no_image_tokens(&vision, NoImage::Black);
        assert_close(
            &format!("{name} black-image tokens"),
            &black,
            &r[&format!("{name}.black")],
        );
    }
}

#[test]
fn adapter_file_errors_are_clear() {
    let dir = common::scratch("adapter_file_errors");
    let bin = dir.join("ip-adapter_sd15.bin");
    std::fs::write(&bin, b"not read").unwrap();
    let err = format!("{:#}", AdapterFile::open(&bin).err().unwrap());
    assert!(
        err.contains(".safetensors") && err.contains("save_file"),
        "{err}"
    );
    let other = dir.join("other.safetensors");
    Tensor::write_safetensors(
        &[("x", Tensor::zeros([2], (Kind::Float, Device::Cpu)))],
        &other,
    )
    .unwrap();
    let err = format!("{:#}", AdapterFile::open(&other).err().unwrap());
    assert!(
        err.contains("other.safetensors") && err.contains("ip_adapter"),
        "{err}"
    );
}

/// Real photographs bundled with scikit-image (PNG and JPEG; landscape and square).
fn photos() -> Vec<std::path::PathBuf> {
    let out = common::run_python("clip_preprocess.py", &["--data-dir"]);
    let data = Path::new(out.trim()).to_path_buf();
    [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "motorcycle_left.png",
        "rocket.jpg",
        "retina.jpg",
        "color.png",
    ]
    .iter()
    .map(|f| data.join(f))
    .collect()
}

#[test]
fn parity_clip_preprocess_real_photos() {
    let dir = common::scratch("parity_clip_preprocess");
    let mut files = photos();
    // A crop smaller than 224 on both sides, so that the resize upscales.
    let small = dir.join("small.png");
    let chelsea = image::open(&files[1]).unwrap().to_rgb8();
    image::imageops::crop_imm(&chelsea, 100, 50, 160, 120)
        .to_image()
        .save(&small)
        .unwrap();
    files.push(small);
    // A portrait crop (the long side is the height).
    let portrait = dir.join("portrait.png");
    let astronaut = image::open(&files[0]).unwrap().to_rgb8();
    image::imageops::crop_imm(&astronaut, 131, 5, 250, 501)
        .to_image()
        .save(&portrait)
        .unwrap();
    files.push(portrait);
    std::fs::write(
        dir.join("images.json"),
        serde_json::to_string(&files).unwrap(),
    )
    .unwrap();
    let cfg = ClipVisionConfig {
        hidden_act: Activation::Gelu,
        ..ClipVisionConfig::tiny()
    };
    clip_vision::write_random_model(&dir.join("vision"), &cfg, 11).unwrap();
    common::run_python("clip_preprocess.py", &[dir.to_str().unwrap()]);
    let r = read(&dir.join("ref.safetensors"));
    let _guard = tch::no_grad_guard();
    let vision =
        ClipVisionModelWithProjection::load(&dir.join("vision"), Device::Cpu, Kind::Float).unwrap();
    let images: Vec<image::RgbImage> = files
        .iter()
        .map(|f| image::open(f).unwrap().to_rgb8())
        .collect();
    let batch = clip_pixels_batch(&images, 224, Device::Cpu, Kind::Float);
    for (i, (file, img)) in files.iter().zip(&images).enumerate() {
        let name = file.file_name().unwrap().to_string_lossy();
        let pixels = clip_pixels(img, 224, Device::Cpu, Kind::Float);
        assert_eq!(pixels.size(), [1, 3, 224, 224]);
        assert_eq!(
            common::max_abs_diff(&pixels, &batch.narrow(0, i as i64, 1)),
            0.0
        );
        let want = &r[&format!("pixels.{i}")];
        let diff = common::max_abs_diff(&pixels, want);
        // Pixels differing by one 0..255 level (from a rounding tie or JPEG decoding) move by
        // 1/(255 std) ~ 0.0146 in normalized units.
        let off_levels = ((&pixels - want).abs().gt(1e-3))
            .sum(Kind::Int64)
            .int64_value(&[]);
        let pil = common::max_abs_diff(&pixels, &r[&format!("pixels_pil.{i}")]);
        let emb = vision.forward(&pixels).image_embeds;
        let cos =
            Tensor::cosine_similarity(&emb, &r[&format!("embeds.{i}")], 1, 1e-8).double_value(&[0]);
        println!(
            "{name} {}x{}: max |diff| {diff:.2e}, {off_levels} values off, vs PIL backend {pil:.3}, cosine {cos:.7}",
            img.width(),
            img.height()
        );
        // PNGs decode identically, so the pixels must match; JPEG decoders (image-rs vs
        // libjpeg-turbo) differ by a few levels: at most 3 levels ~ 0.045.
        let bound = if name.ends_with(".jpg") { 0.045 } else { 1e-4 };
        assert!(diff <= bound, "{name}: pixel max abs diff {diff} > {bound}");
        assert!(cos >= 0.9999, "{name}: embedding cosine {cos} < 0.9999");
    }
}
