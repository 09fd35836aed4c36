//! CLIP text/vision encoders, CLIPModel features and IP-Adapter projections against
//! transformers / diffusers (tests/reference/clip_models.py) on tiny random weights written by
//! Rust; CLIP preprocessing of real photographs against CLIPImageProcessor
//! (tests/reference/clip_preprocess.py). CPU, fp32, max abs diff <= 1e-4.
mod common;

use negimg::models::clip_model::{self, ClipConfig, ClipModel};
use negimg::models::clip_text::{self, Activation, ClipTextConfig, ClipTextModel};
use negimg::models::clip_vision::{self, ClipVisionConfig, ClipVisionModelWithProjection};
use negimg::models::ip_adapter::{
    self, AdapterFile, AdapterKind, Family, ImageProj, NoImage, RandomProjection, ResamplerConfig,
};
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
    // ViT-bigG's layout at tiny widths (hidden wider than projection, as 1664 / 1280).
    let vision_g_cfg = big_g_tiny();
    clip_vision::write_random_model(&dir.join("vision_g"), &vision_g_cfg, 8).unwrap();
    for (name, proj, seed) in new_projections(&vision_cfg, &vision_g_cfg) {
        let path = dir.join(format!("{name}.safetensors"));
        ip_adapter::write_random_projection(&path, &proj, &hidden_sizes, seed).unwrap();
    }

    let tok = ClipTokenizer::from_folder(&dir.join("clip")).unwrap();
    let ids = tok.encode_batch(&[
        "a photo of a cat",
        "",
        "an astronaut riding a horse on the moon, highly detailed",
    ]);
    let pixels = {
        let _generator = negimg::weights::random::seeded_generator(7);
        Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu))
    };
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

    let vision_g = ClipVisionModelWithProjection::load(&dir.join("vision_g"), cpu, f32).unwrap();
    let out_g = vision_g.forward(&pixels);
    assert_close(
        "bigG-shaped image_embeds",
        &out_g.image_embeds,
        &r["vision_g.image_embeds"],
    );
    assert_close(
        "bigG-shaped hidden_states[-2]",
        &out_g.penultimate,
        &r["vision_g.penultimate"],
    );
    let classes: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("classes.json")).unwrap()).unwrap();
    for (name, proj, _) in new_projections(&vision_cfg, &vision_g_cfg) {
        let file = AdapterFile::open(&dir.join(format!("{name}.safetensors"))).unwrap();
        let (encoder, enc_out) = if name.starts_with("adapter-g-") {
            (&vision_g, &out_g)
        } else {
            (&vision, &out)
        };
        let (family, class, cross, tokens) = match proj {
            RandomProjection::Linear { cross, tokens, .. } => {
                (Family::Linear, "ImageProjection", cross, tokens)
            }
            RandomProjection::Resampler(c) => (
                Family::Resampler,
                "IPAdapterPlusImageProjection",
                c.output_dim,
                c.num_queries,
            ),
            RandomProjection::Mlp { cross, .. } => (
                Family::Mlp,
                "IPAdapterFullImageProjection",
                cross,
                vision_cfg.num_positions(),
            ),
        };
        assert_eq!(file.family, family, "{name}");
        assert_eq!(
            classes[name], class,
            "{name}: diffusers' loader chose another class"
        );
        assert_eq!(file.cross_dim, cross, "{name}");
        let p = ImageProj::load(&file, cpu, f32).unwrap();
        let got = p.tokens(enc_out);
        assert_eq!(got.size(), [2, tokens, cross], "{name}");
        assert_close(
            &format!("{name} tokens"),
            &got,
            &r[&format!("{name}.tokens")],
        );
        for (mode, key) in [(NoImage::Reference, "no_image"), (NoImage::Black, "black")] {
            assert_close(
                &format!("{name} {key} tokens"),
                &p.no_image_tokens(encoder, mode),
                &r[&format!("{name}.{key}")],
            );
        }
    }

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

/// ViT-bigG's layout at tiny widths: exact GELU, hidden (48) wider than the projection (40),
/// three layers.
fn big_g_tiny() -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: 48,
        intermediate_size: 96,
        projection_dim: 40,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        hidden_act: Activation::Gelu,
        ..ClipVisionConfig::tiny()
    }
}

/// The projections of the newer kinds and of the SDXL files, at their real output widths
/// (2048 for SDXL) over tiny encoders: the full-face MLP (257 tokens at ViT-H's 224/14);
/// ip-adapter_sdxl (linear over bigG's image_embeds, `adapter-g-`), ip-adapter_sdxl_vit-h
/// (linear over ViT-H's) and ip-adapter-plus(-face)_sdxl_vit-h (Resampler with latents
/// narrower than its 2048-wide output, as SDXL's 1280).
fn new_projections(
    vision: &ClipVisionConfig,
    vision_g: &ClipVisionConfig,
) -> Vec<(&'static str, RandomProjection, i64)> {
    let sdxl_resampler = ResamplerConfig {
        embed_dim: vision.hidden_size,
        hidden_dim: 128,
        output_dim: 2048,
        depth: 4,
        heads: 2,
        dim_head: 64,
        num_queries: 16,
        ff_inner: 512,
    };
    vec![
        (
            "adapter-full-face",
            RandomProjection::Mlp {
                embed: vision.hidden_size,
                cross: 32,
            },
            11,
        ),
        (
            "adapter-g-sdxl",
            RandomProjection::Linear {
                embed: vision_g.projection_dim,
                cross: 2048,
                tokens: 4,
            },
            12,
        ),
        (
            "adapter-sdxl-vit-h",
            RandomProjection::Linear {
                embed: vision.projection_dim,
                cross: 2048,
                tokens: 4,
            },
            13,
        ),
        (
            "adapter-plus-sdxl-vit-h",
            RandomProjection::Resampler(sdxl_resampler),
            14,
        ),
        (
            "adapter-g-full-face",
            RandomProjection::Mlp {
                embed: vision_g.hidden_size,
                cross: 24,
            },
            15,
        ),
    ]
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
    // A kind that does not match the file names both; kinds of one family are trusted.
    let full_face = dir.join("ff.safetensors");
    ip_adapter::write_random(&full_face, AdapterKind::FullFace, 32, 32, &[32], 0).unwrap();
    let err = format!(
        "{:#}",
        AdapterFile::open_as(&full_face, AdapterKind::PlusFace)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("ff.safetensors")
            && err.contains("\"plus_face\"")
            && err.contains("adapter = full_face"),
        "{err}"
    );
    let plus = dir.join("plus.safetensors");
    ip_adapter::write_random(&plus, AdapterKind::Plus, 64, 32, &[32], 0).unwrap();
    assert_eq!(
        AdapterFile::open_as(&plus, AdapterKind::PlusFace)
            .unwrap()
            .kind,
        AdapterKind::PlusFace
    );
    // FaceID's projection (proj.0, proj.2, norm) is named, not taken for another kind.
    let face_id = dir.join("faceid.safetensors");
    let t = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[
            ("image_proj.proj.0.weight", t(&[64, 32])),
            ("image_proj.proj.2.weight", t(&[128, 64])),
            ("image_proj.norm.weight", t(&[32])),
            ("ip_adapter.1.to_k_ip.weight", t(&[32, 32])),
        ],
        &face_id,
    )
    .unwrap();
    let err = format!("{:#}", AdapterFile::open(&face_id).err().unwrap());
    assert!(
        err.contains("faceid.safetensors") && err.contains("FaceID"),
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
