//! DINOv2 against transformers' Dinov2Model at test time: random weights in the real layout
//! (written here, loaded by transformers without missing or unexpected keys), the
//! BitImageProcessor preprocessing (resize 256, crop 224, ImageNet mean/std) and the CLS
//! embedding, on images of several sizes (the 518-px position embeddings are interpolated).
mod common;

use image::{Rgb, RgbImage};
use negimg::models::dinov2::{Dinov2Config, Dinov2Model, write_random_model};
use negimg::scoring::embed::{ImageModel, embed_images};
use negimg::scoring::metrics::Embedder;
use tch::{Device, Kind, Tensor};

#[test]
fn dinov2_embeddings_match_transformers() {
    let dir = common::scratch("parity_dinov2");
    let model_dir = dir.join("dinov2");
    let cfg = Dinov2Config::tiny();
    write_random_model(&model_dir, &cfg, 5).unwrap();
    let sizes = [(48u32, 32u32), (300, 200), (512, 512), (224, 224)];
    let mut files = Vec::new();
    for (i, (w, h)) in sizes.iter().enumerate() {
        let img = RgbImage::from_fn(*w, *h, |x, y| {
            Rgb([
                (x * 5 + i as u32 * 40) as u8,
                (y * 3) as u8,
                ((x * y) % 253) as u8,
            ])
        });
        let path = dir.join(format!("img{i}.png"));
        img.save(&path).unwrap();
        files.push((format!("k{i}"), path));
    }
    let out = dir.join("ref.safetensors");
    let mut args = vec![
        model_dir.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(files.iter().map(|(_, p)| p.to_string_lossy().into_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    common::run_python("dinov2_embed.py", &refs);
    let reference = Tensor::read_safetensors(&out).unwrap();
    let get = |name: &str| {
        reference
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .shallow_clone()
    };
    let (want_pooled, want_pixels) = (get("pooler_output"), get("pixel_values"));

    // Preprocessing alone.
    let model = Dinov2Model::load(&model_dir, Device::Cpu, Kind::Float).unwrap();
    let imgs: Vec<RgbImage> = files
        .iter()
        .map(|(_, p)| image::open(p).unwrap().to_rgb8())
        .collect();
    let pixels = model.preprocess().batch(&imgs, Device::Cpu, Kind::Float);
    let pixel_diff = common::max_abs_diff(&pixels, &want_pixels);
    assert!(pixel_diff < 1e-4, "pixels differ by {pixel_diff}");

    // The embedding, on transformers' own pixels and through the scoring path.
    let ours = tch::no_grad(|| model.image_embeds(&want_pixels));
    let diff = common::max_abs_diff(&ours, &want_pooled);
    assert!(diff < 1e-4, "pooler_output differs by {diff}");
    let scale = want_pooled.abs().max().double_value(&[]);
    assert!(scale > 0.1, "a non-trivial embedding ({scale})");

    let scorer = ImageModel::load(Embedder::Dino, &model_dir, Device::Cpu, Kind::Float).unwrap();
    let unit = embed_images(&scorer, &files, Device::Cpu, Kind::Float).unwrap();
    let want_unit = &want_pooled / want_pooled.norm_scalaropt_dim(2, [1], true);
    for (i, (key, _)) in files.iter().enumerate() {
        let got = Tensor::from_slice(&unit[key]).to_kind(Kind::Float);
        let d = common::max_abs_diff(&got, &want_unit.get(i as i64));
        assert!(d < 1e-4, "{key}: unit embedding differs by {d}");
    }
    println!("max |diff| pixels {pixel_diff:e}, pooler_output {diff:e}");
}
