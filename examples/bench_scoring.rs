//! Scoring speed on the CPU against transformers, in the same sitting: random CLIP ViT-L/14
//! and DINOv2-base weights in the real shapes, N textured 512x512 PNGs, images/s of the
//! image embedding (decoding and preprocessing included) on both sides.
//!
//!   cargo run --release --example bench_scoring -- OUT_DIR [N]
use anyhow::Result;
use image::{Rgb, RgbImage};
use negimg::models::clip_model::{ClipConfig, write_random_model as write_clip};
use negimg::models::dinov2::{Dinov2Config, write_random_model as write_dino};
use negimg::models::tokenizer::find_open_clip_vocab;
use negimg::scoring::embed::{ImageModel, embed_images};
use negimg::scoring::metrics::Embedder;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).expect("usage: bench_scoring OUT_DIR [N]"));
    let n: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let (clip, dino) = (out.join("clip-vit-l14"), out.join("dinov2-base"));
    if !clip.join("model.safetensors").is_file() {
        write_clip(&clip, &ClipConfig::vit_l14(), 1, &find_open_clip_vocab()?)?;
    }
    if !dino.join("model.safetensors").is_file() {
        write_dino(&dino, &Dinov2Config::base(), 2)?;
    }
    let images = out.join("images");
    std::fs::create_dir_all(&images)?;
    let files: Vec<(String, PathBuf)> = (0..n)
        .map(|i| {
            let path = images.join(format!("{i:04}.png"));
            if !path.is_file() {
                RgbImage::from_fn(512, 512, |x, y| {
                    Rgb([
                        (x + i as u32 * 7) as u8,
                        (y * 3) as u8,
                        ((x * y) % 251) as u8,
                    ])
                })
                .save(&path)?;
            }
            Ok((format!("{i}"), path))
        })
        .collect::<Result<_>>()?;
    println!("threads: {}", tch::get_num_threads());
    for (name, embedder, dir) in [
        ("clip", Embedder::Clip, &clip),
        ("dino", Embedder::Dino, &dino),
    ] {
        let model = ImageModel::load(embedder, dir, Device::Cpu, Kind::Float)?;
        // One warm-up batch, then the timed pass over every image.
        embed_images(
            &model,
            &files[..files.len().min(2)],
            Device::Cpu,
            Kind::Float,
        )?;
        let start = Instant::now();
        embed_images(&model, &files, Device::Cpu, Kind::Float)?;
        let s = start.elapsed().as_secs_f64();
        println!(
            "negimg {name}: {n} images in {s:.2} s = {:.3} images/s",
            n as f64 / s
        );
    }
    Ok(())
}
