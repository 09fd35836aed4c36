//! `[images.X] path` inputs follow `images::load_rgb`'s rules everywhere: `negimg run` sees
//! the same pixels as `negimg generate` on the same file (transparency on white, EXIF
//! orientation applied, the format read from the content), and `negimg plan` refuses what
//! `run` would refuse, naming the experiment file, the line of the `path` key and the image.
mod common;

use image::{ImageBuffer, Rgb, RgbImage, Rgba};
use negimg::images::load_rgb;
use negimg::run::records::{Status, read_records};
use std::path::{Path, PathBuf};

/// A tiny experiment on the shared tiny models: `[images.NAME] path = FILE` for each input
/// (a comment line between the header and the key, so the key's line is not the header's),
/// then `defaults` and `grid` as given.
fn experiment(dir: &Path, inputs: &[(&str, &str)], defaults: &str, grid: &str) -> PathBuf {
    let m = common::tiny::tiny_models();
    let m = m.display();
    let mut text = format!(
        "[experiment]\nname = \"inputs\"\ndescription = \"image inputs\"\n\n[models]\n\
         pipeline = \"{m}/pipeline\"\n\
         ip_adapter = {{ base = \"{m}/ip-adapter_sd15.safetensors\" }}\n\
         image_encoder = \"{m}/image_encoder\"\n\n"
    );
    for (name, file) in inputs {
        text.push_str(&format!(
            "[images.{name}]\n# an input file\npath = \"{file}\"\n\n"
        ));
    }
    text.push_str(&format!(
        "[defaults]\nprompt = \"a house\"\nsteps = 2\nsize = 32\ndtype = \"fp32\"\n\
         seeds = [3]\ncfg = 6\n{defaults}\n\n[grid]\n{grid}\n"
    ));
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `negimg run` on `exp`; returns the run folder.
fn run(dir: &Path, exp: &Path) -> PathBuf {
    let out = common::negimg(
        &[
            "--device",
            "cpu",
            "run",
            exp.to_str().unwrap(),
            "--batch",
            "1",
            "--no-report",
            "--results",
            dir.join("results").to_str().unwrap(),
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text_of(&out));
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("results/inputs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// `negimg generate` with the experiment's settings; returns the image's pixels.
fn generate(dir: &Path, positive: &Path, negative: Option<&Path>, out: &str) -> RgbImage {
    let models = common::tiny::tiny_models();
    let out = dir.join(out);
    let mut args = vec![
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "generate",
        "--models",
        models.to_str().unwrap(),
        "--prompt",
        "a house",
        "--steps",
        "2",
        "--size",
        "32",
        "--seed",
        "3",
        "--cfg",
        "6",
        "--positive",
        positive.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(n) = negative {
        args.extend(["--negative", n.to_str().unwrap()]);
    }
    let run = common::negimg(&args, dir);
    assert!(run.status.success(), "{}", text_of(&run));
    image::open(&out).unwrap().to_rgb8()
}

/// Left half fully transparent over black (black if transparency is dropped), a
/// half-transparent band, an opaque colour on the right.
fn transparent_png(path: &Path) {
    ImageBuffer::<Rgba<u8>, _>::from_fn(40, 24, |x, y| match x {
        0..16 => Rgba([0, 0, 0, 0]),
        16..24 => Rgba([0, 0, (y * 10) as u8, 128]),
        _ => Rgba([200, (x * 5) as u8, 30, 255]),
    })
    .save(path)
    .unwrap();
}

/// A 48x32 JPEG with an EXIF APP1 segment written by hand: orientation 6 (the picture must
/// be turned 90 degrees clockwise to be upright, 32x48).
fn rotated_jpeg(path: &Path) {
    let img = RgbImage::from_fn(48, 32, |x, y| {
        if x < 24 {
            Rgb([230, 40, 40])
        } else if y < 16 {
            Rgb([40, 40, 230])
        } else {
            Rgb([40, 200, 40])
        }
    });
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    // TIFF header (big-endian, first IFD at 8), one entry: 0x0112 SHORT x1 = 6, no next IFD.
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend([0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xff, 0xe1]);
    out.extend(len.to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    std::fs::write(path, out).unwrap();
}

/// Each cell's image of `run_dir`, by its positive image's name.
fn cells(run_dir: &Path) -> Vec<(String, RgbImage)> {
    let records = read_records(&run_dir.join("records.csv")).unwrap();
    records
        .iter()
        .map(|r| {
            assert_eq!(r.status, Status::Done, "{}", r.error);
            let img = image::open(run_dir.join(&r.file)).unwrap().to_rgb8();
            (r.positive_image.clone(), img)
        })
        .collect()
}

#[test]
fn inputs_transparent_png_and_exif_jpeg_give_the_same_pixels_in_run_and_generate() {
    let dir = common::scratch("images_inputs_run_generate");
    let (clear, rotated) = (dir.join("clear.png"), dir.join("rotated.jpg"));
    transparent_png(&clear);
    rotated_jpeg(&rotated);
    let upright = load_rgb(&rotated).unwrap();
    assert_eq!(upright.dimensions(), (32, 48), "the EXIF tag is read");
    let on_white = load_rgb(&clear).unwrap();
    assert_eq!(on_white.get_pixel(0, 0), &Rgb([255, 255, 255]));

    let exp = experiment(
        &dir,
        &[("clear", "clear.png"), ("rotated", "rotated.jpg")],
        "negative = \"image\"",
        "[[grid.zip]]\npositive_image = [\"clear\", \"rotated\"]\n\
         negative_image = [\"rotated\", \"clear\"]",
    );
    let run_dir = run(&dir, &exp);
    // The run's copies hold what load_rgb reads: white where transparent, upright.
    let copy = |n: &str| image::open(run_dir.join(format!("inputs/{n}.png"))).unwrap();
    assert_eq!(copy("clear").to_rgb8(), on_white);
    assert_eq!(copy("rotated").to_rgb8(), upright);

    let cells = cells(&run_dir);
    assert_eq!(cells.len(), 2);
    for (name, img) in cells {
        let (pos, neg) = match name.as_str() {
            "clear" => (&clear, &rotated),
            _ => (&rotated, &clear),
        };
        let want = generate(&dir, pos, Some(neg), &format!("gen_{name}.png"));
        assert!(img == want, "cell {name}: run and generate differ");
    }
}

#[test]
fn inputs_png_named_jpg_works_in_run_and_generate() {
    let dir = common::scratch("images_inputs_png_as_jpg");
    let pic = dir.join("pic.jpg");
    let img = RgbImage::from_fn(20, 30, |x, y| Rgb([(x * 12) as u8, (y * 8) as u8, 90]));
    img.save_with_format(&pic, image::ImageFormat::Png).unwrap();
    let exp = experiment(
        &dir,
        &[("pic", "pic.jpg")],
        "negative = \"none\"",
        "positive_image = [\"pic\"]",
    );
    let run_dir = run(&dir, &exp);
    let copy = image::open(run_dir.join("inputs/pic.png")).unwrap();
    assert_eq!(copy.to_rgb8(), img, "PNG pixels kept exactly");
    let cells = cells(&run_dir);
    assert_eq!(cells.len(), 1);
    assert!(cells[0].1 == generate(&dir, &pic, None, "gen.png"));
}

/// `negimg plan` on an experiment whose `[images.bad]` is `file` must fail naming the
/// experiment file with the line of the `path` key, the key, the image and `reason`.
fn plan_refuses(name: &str, file: &str, bytes: &[u8], reason: &str) {
    let dir = common::scratch(name);
    std::fs::write(dir.join(file), bytes).unwrap();
    let exp = experiment(
        &dir,
        &[("bad", file)],
        "negative = \"none\"",
        "positive_image = [\"bad\"]",
    );
    let text = std::fs::read_to_string(&exp).unwrap();
    let at = text.find(&format!("path = \"{file}\"")).unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let out = common::negimg(&["--device", "cpu", "plan", exp.to_str().unwrap()], &dir);
    let msg = text_of(&out);
    assert!(!out.status.success(), "plan accepted {file}:\n{msg}");
    for want in [
        format!("exp.toml:{line}:"),
        "images.bad.path".to_string(),
        file.to_string(),
        reason.to_string(),
    ] {
        assert!(msg.contains(&want), "{want:?} not in: {msg}");
    }
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn plan_refuses_a_truncated_png() {
    let bytes = png_bytes(&RgbImage::from_fn(64, 64, |x, y| {
        Rgb([(x * 4) as u8, (y * 4) as u8, 7])
    }));
    plan_refuses(
        "images_inputs_truncated",
        "cut.png",
        &bytes[..bytes.len() / 2],
        "cannot decode",
    );
}

#[test]
fn plan_refuses_an_image_over_the_size_limit() {
    let side = negimg::images::MAX_SIDE + 1;
    let bytes = png_bytes(&RgbImage::new(side, 1));
    plan_refuses("images_inputs_oversized", "wide.png", &bytes, "too large");
}

#[test]
fn plan_refuses_text_named_png() {
    plan_refuses(
        "images_inputs_text",
        "notes.png",
        b"these are words, not pixels",
        "not a PNG or JPEG",
    );
}

#[test]
fn scorer_reads_images_by_the_same_rules() {
    let dir = common::scratch("images_inputs_scorer");
    let (clear, rotated) = (dir.join("clear.png"), dir.join("rotated.jpg"));
    transparent_png(&clear);
    rotated_jpeg(&rotated);
    // What load_rgb reads, saved as plain opaque, upright PNGs.
    let (clear_flat, rotated_flat) = (dir.join("clear_flat.png"), dir.join("rotated_flat.png"));
    load_rgb(&clear).unwrap().save(&clear_flat).unwrap();
    load_rgb(&rotated).unwrap().save(&rotated_flat).unwrap();
    let scorer = common::tiny::tiny_models().join("scorer");
    let model = negimg::scoring::embed::ImageModel::load(
        negimg::scoring::metrics::Embedder::Clip,
        &scorer,
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .unwrap();
    let files: Vec<(String, PathBuf)> = [&clear, &clear_flat, &rotated, &rotated_flat]
        .iter()
        .map(|p| (p.display().to_string(), p.to_path_buf()))
        .collect();
    let e =
        negimg::scoring::embed::embed_images(&model, &files, tch::Device::Cpu, tch::Kind::Float)
            .unwrap();
    let of = |p: &Path| &e[&p.display().to_string()];
    assert_eq!(of(&clear), of(&clear_flat), "transparency on white");
    assert_eq!(of(&rotated), of(&rotated_flat), "EXIF orientation");
}
