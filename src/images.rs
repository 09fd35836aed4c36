//! Reading input images (prompt images, images to score) as 8-bit RGB.
//!
//! Rules, the same for the pipeline and the scorer:
//! - PNG and JPEG, recognised from the content (not the extension).
//! - The size is checked from the header before pixels are allocated: at most
//!   [`MAX_SIDE`] pixels a side and [`MAX_ALLOC`] bytes decoded; a larger image is refused.
//! - Any size down to 1x1 is accepted: the CLIP preprocessing resizes every image to 224
//!   (shortest side) anyway, so a tiny image is blurry but valid.
//! - EXIF orientation is applied, so the picture is upright as viewers show it.
//! - Grayscale becomes gray RGB; 16-bit channels are rounded to 8 bits; CMYK JPEGs are
//!   converted to RGB by the decoder.
//! - Transparency is composited onto white (as browsers show a transparent PNG on a white
//!   page): `rgb = alpha * rgb + (1 - alpha) * 255`.
//!
//! Every error names the file. [`load_rgb`] reads a file, [`decode_rgb`] the same bytes
//! already in memory, under the same rules.
use anyhow::{Context, Result, bail};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::Path;

/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 16384;
/// Largest decoded size in bytes (a 16384x16384 RGB image is 768 MiB).
pub const MAX_ALLOC: u64 = 1 << 30;

/// Loads `path` as an upright 8-bit RGB image (see the module docs for the rules).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let what = what(path);
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what}"))?
        .len();
    if len == 0 {
        bail!("{what}: the file is empty");
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| format!("cannot read {what}"))?;
    let format = sniff(&head[..n], &what)?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {what}"))?;
    decode(
        ImageReader::with_format(BufReader::new(file), format),
        &what,
    )
}

/// As [`load_rgb`], from the file's bytes already read (by a caller that also hashes them);
/// `path` names the file in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let what = what(path);
    if bytes.is_empty() {
        bail!("{what}: the file is empty");
    }
    let format = sniff(&bytes[..bytes.len().min(16)], &what)?;
    decode(ImageReader::with_format(Cursor::new(bytes), format), &what)
}

fn what(path: &Path) -> String {
    format!("image {}", path.display())
}

/// The format from the first bytes: the content decides, never the extension.
fn sniff(head: &[u8], what: &str) -> Result<ImageFormat> {
    match image::guess_format(head) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => Ok(f),
        Ok(other) => bail!("{what}: not a PNG or JPEG file (the content is {other:?})"),
        Err(_) => bail!("{what}: not a PNG or JPEG file (unrecognised content)"),
    }
}

/// Decodes under the size limits, applies the EXIF orientation, composites onto white.
fn decode<R: BufRead + Seek>(mut reader: ImageReader<R>, what: &str) -> Result<RgbImage> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| describe(e, what))?;
    let orientation = decoder.orientation().map_err(|e| describe(e, what))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| describe(e, what))?;
    image.apply_orientation(orientation);
    Ok(to_rgb_on_white(&image))
}

fn describe(e: image::ImageError, what: &str) -> anyhow::Error {
    match e {
        image::ImageError::Limits(l) => anyhow::anyhow!(
            "{what}: too large to load ({l}); the limit is {MAX_SIDE}x{MAX_SIDE} pixels \
             (images are resized to 224 or 512 pixels anyway: shrink it first)"
        ),
        image::ImageError::Unsupported(u) => anyhow::anyhow!("{what}: unsupported ({u})"),
        other => {
            anyhow::anyhow!("{what}: cannot decode ({other}); the file may be truncated or corrupt")
        }
    }
}

/// 8-bit RGB, transparency composited onto white.
fn to_rgb_on_white(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    // 16-bit precision for the blend, so 16-bit RGBA is not rounded twice.
    let rgba = image.to_rgba16();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(src[3]);
        for c in 0..3 {
            let blended = (u32::from(src[c]) * alpha + 65535 * (65535 - alpha)) / 65535;
            dst[c] = ((blended * 255 + 32767) / 65535) as u8;
        }
    }
    out
}

/// A binary region mask (`[scoring] region`): black (0, 0, 0) outside, white (255, 255, 255)
/// inside, decoded under the rules above.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryMask {
    width: usize,
    height: usize,
    inside: Vec<bool>,
}

impl BinaryMask {
    pub fn load(path: &Path) -> Result<BinaryMask> {
        let img = load_rgb(path)?;
        BinaryMask::from_image(&img).with_context(|| format!("image {}", path.display()))
    }

    /// Refuses any pixel that is neither black nor white, naming the first.
    pub fn from_image(img: &RgbImage) -> Result<BinaryMask> {
        let mut inside = Vec::with_capacity((img.width() * img.height()) as usize);
        for (x, y, p) in img.enumerate_pixels() {
            match p.0 {
                [0, 0, 0] => inside.push(false),
                [255, 255, 255] => inside.push(true),
                [r, g, b] => bail!(
                    "not a binary mask: pixel ({x}, {y}) is ({r}, {g}, {b}); use black (0) \
                     outside the region and white (255) inside"
                ),
            }
        }
        Ok(BinaryMask {
            width: img.width() as usize,
            height: img.height() as usize,
            inside,
        })
    }

    /// The mask at `width` x `height` by nearest neighbour at pixel centres: pixel x of
    /// `width` takes source pixel `floor((x + 0.5) · W_src / width)`.
    pub fn resized(&self, width: usize, height: usize) -> Vec<bool> {
        let src = |x: usize, from: usize, to: usize| ((2 * x + 1) * from / (2 * to)).min(from - 1);
        let mut out = Vec::with_capacity(width * height);
        for y in 0..height {
            let sy = src(y, self.height, height);
            for x in 0..width {
                out.push(self.inside[sy * self.width + src(x, self.width, width)]);
            }
        }
        out
    }
}
