//! `images::load_rgb` on good, odd and broken files. Files made by Pillow (CMYK JPEG, EXIF
//! orientation) are written at test time, with Pillow's own reading as the expectation.
mod common;

use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use negimg::images::load_rgb;
use std::path::{Path, PathBuf};

fn err_of(path: &Path) -> String {
    format!("{:#}", load_rgb(path).expect_err("load should fail"))
}

fn gradient(w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 200]))
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn images_png_and_jpeg_load_as_rgb() {
    let dir = common::scratch("images_basic");
    let img = gradient(8, 6);
    let png = dir.join("a.png");
    img.save(&png).unwrap();
    assert_eq!(load_rgb(&png).unwrap(), img);
    // Content decides, not the extension.
    let jpeg = dir.join("really_a_jpeg.png");
    img.save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let got = load_rgb(&jpeg).unwrap();
    assert_eq!(got.dimensions(), (8, 6));
    assert!(common::max_level_diff(&got, &img) < 40);
}

#[test]
fn images_empty_file_is_refused() {
    let dir = common::scratch("images_empty");
    let path = dir.join("empty.png");
    std::fs::write(&path, b"").unwrap();
    let msg = err_of(&path);
    assert!(msg.contains("empty.png") && msg.contains("empty"), "{msg}");
}

#[test]
fn images_missing_file_is_refused() {
    let msg = err_of(Path::new("/nonexistent/missing.png"));
    assert!(msg.contains("missing.png"), "{msg}");
}

#[test]
fn images_not_an_image_is_refused() {
    let dir = common::scratch("images_text");
    let path = dir.join("notes.jpg");
    std::fs::write(&path, b"these are words, not pixels").unwrap();
    let msg = err_of(&path);
    assert!(
        msg.contains("notes.jpg") && msg.contains("not a PNG or JPEG"),
        "{msg}"
    );
}

#[test]
fn images_truncated_png_is_refused() {
    let dir = common::scratch("images_truncated");
    let bytes = png_bytes(&gradient(64, 64));
    let path = dir.join("truncated.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err_of(&path);
    assert!(
        msg.contains("truncated.png") && msg.contains("cannot decode"),
        "{msg}"
    );
}

#[test]
fn images_corrupt_jpeg_is_refused() {
    let dir = common::scratch("images_corrupt");
    let mut bytes = Vec::new();
    gradient(32, 32)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // Keep the SOI marker, wreck the headers and the entropy-coded data.
    for b in bytes.iter_mut().skip(4) {
        *b ^= 0x5a;
    }
    let path = dir.join("corrupt.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let msg = err_of(&path);
    assert!(msg.contains("corrupt.jpg"), "{msg}");
}

/// CRC-32 (IEEE) for patching a PNG chunk.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn images_huge_header_is_refused_before_allocating() {
    let dir = common::scratch("images_huge");
    let mut bytes = png_bytes(&gradient(1, 1));
    // IHDR: length(4) "IHDR"(4) width(4) height(4) ... crc; it starts after the 8-byte signature.
    bytes[16..20].copy_from_slice(&20000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let path = dir.join("huge.png");
    std::fs::write(&path, &bytes).unwrap();
    let start = std::time::Instant::now();
    let msg = err_of(&path);
    assert!(
        msg.contains("huge.png") && msg.contains("too large"),
        "{msg}"
    );
    assert!(
        start.elapsed().as_secs_f64() < 1.0,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn images_one_pixel_is_accepted() {
    let dir = common::scratch("images_1x1");
    let path = dir.join("dot.png");
    RgbImage::from_pixel(1, 1, Rgb([1, 2, 3]))
        .save(&path)
        .unwrap();
    assert_eq!(load_rgb(&path).unwrap().get_pixel(0, 0), &Rgb([1, 2, 3]));
}

#[test]
fn images_grayscale_becomes_gray_rgb() {
    let dir = common::scratch("images_gray");
    let path = dir.join("gray.png");
    ImageBuffer::<Luma<u8>, _>::from_fn(4, 4, |x, _| Luma([(x * 60) as u8]))
        .save(&path)
        .unwrap();
    let img = load_rgb(&path).unwrap();
    assert_eq!(img.get_pixel(2, 1), &Rgb([120, 120, 120]));
}

#[test]
fn images_sixteen_bit_png_is_rounded_to_eight() {
    let dir = common::scratch("images_16bit");
    let path = dir.join("deep.png");
    ImageBuffer::<Rgb<u16>, _>::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgb([65535, 0, 32896])
        } else {
            Rgb([257 * 10, 257 * 200, 0])
        }
    })
    .save(&path)
    .unwrap();
    let img = load_rgb(&path).unwrap();
    assert_eq!(img.get_pixel(0, 0), &Rgb([255, 0, 128]));
    assert_eq!(img.get_pixel(1, 0), &Rgb([10, 200, 0]));
}

#[test]
fn images_rgba_is_composited_on_white() {
    let dir = common::scratch("images_rgba");
    let path = dir.join("alpha.png");
    let img = ImageBuffer::<Rgba<u8>, _>::from_fn(3, 1, |x, _| match x {
        0 => Rgba([255, 0, 0, 0]),   // fully transparent: white
        1 => Rgba([0, 0, 255, 255]), // opaque: unchanged
        _ => Rgba([0, 0, 0, 128]),   // half black over white: mid gray
    });
    img.save(&path).unwrap();
    let got = load_rgb(&path).unwrap();
    assert_eq!(got.get_pixel(0, 0), &Rgb([255, 255, 255]));
    assert_eq!(got.get_pixel(1, 0), &Rgb([0, 0, 255]));
    assert_eq!(got.get_pixel(2, 0), &Rgb([127, 127, 127]));
}

/// Pillow writes a CMYK JPEG and a JPEG with EXIF orientation 6, plus PNGs of what Pillow
/// sees (CMYK converted to RGB; the orientation applied with ImageOps.exif_transpose).
fn pillow_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let code = r#"
import sys
from PIL import Image, ImageOps
d = sys.argv[1]
rgb = Image.new("RGB", (48, 32))
px = rgb.load()
for y in range(32):
    for x in range(48):
        px[x, y] = (230, 40, 40) if x < 24 else ((40, 40, 230) if y < 16 else (40, 200, 40))
rgb.convert("CMYK").save(f"{d}/cmyk.jpg", quality=95)
Image.open(f"{d}/cmyk.jpg").convert("RGB").save(f"{d}/cmyk_pillow.png")
exif = Image.Exif()
exif[0x0112] = 6
rgb.save(f"{d}/rotated.jpg", quality=95, exif=exif)
ImageOps.exif_transpose(Image.open(f"{d}/rotated.jpg")).convert("RGB").save(f"{d}/rotated_pillow.png")
"#;
    let out = std::process::Command::new(common::python())
        .args(["-c", code, dir.to_str().unwrap()])
        .output()
        .expect("cannot run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join("cmyk.jpg"),
        dir.join("cmyk_pillow.png"),
        dir.join("rotated.jpg"),
        dir.join("rotated_pillow.png"),
    )
}

#[test]
fn images_cmyk_jpeg_and_exif_orientation_match_pillow() {
    let dir = common::scratch("images_pillow");
    let (cmyk, cmyk_ref, rotated, rotated_ref) = pillow_files(&dir);
    let got = load_rgb(&cmyk).unwrap();
    let want = image::open(&cmyk_ref).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (48, 32));
    // Different JPEG decoders: a few levels apart at most, never inverted or swapped.
    assert!(
        common::max_level_diff(&got, &want) < 24,
        "CMYK differs by {}",
        common::max_level_diff(&got, &want)
    );

    let got = load_rgb(&rotated).unwrap();
    let want = image::open(&rotated_ref).unwrap().to_rgb8();
    assert_eq!(
        got.dimensions(),
        (32, 48),
        "orientation 6 turns 48x32 upright to 32x48"
    );
    assert!(
        common::max_level_diff(&got, &want) < 24,
        "rotated differs by {}",
        common::max_level_diff(&got, &want)
    );
}
