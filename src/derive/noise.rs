//! The pixels of a derived image, computed with libtorch on the CPU in float32 the way
//! ComfyUI_IPAdapter_plus computes them with torch and torchvision:
//!
//! - The source (8-bit RGB, as ComfyUI's LoadImage gives it: `u8 / 255`) is cropped to its
//!   centred square and resized to 224x224 (bicubic, antialiased); no source is a black image.
//! - `IPAdapterNoise` kinds: the seed is `int(sum(image)) % 1000000007` (torch's generator,
//!   so seed N is torch's seed N), then fade, dissolve, gaussian or shuffle, a clamp to 0..1.
//! - `legacy`: the older node's noise at seed 0 (torchvision v1 transforms), not clamped.
//! - `mean_color`, `grayscale`, `blur`: the source blended towards a control image.
//! - Then, when `blur` > 0 (made odd), torchvision's Gaussian blur with its default sigma.
//!
//! Every step mirrors the node's tensor layouts (permutes, views), because the generator
//! fills tensors in memory order and the seed is a float sum: the same layout gives the same
//! bits. One thread at a time: torch's generator and thread count are process-wide.
use super::{NoiseKind, Recipe, SIDE};
use anyhow::{Context, Result};
use image::RgbImage;
use tch::{Device, Kind, Tensor};

const FLOAT: (Kind, Device) = (Kind::Float, Device::Cpu);
/// ComfyUI's seed: the image's sum modulo this prime.
const SEED_MODULUS: i64 = 1_000_000_007;
/// `ElasticTransform(alpha=75.0)` in both nodes.
const ELASTIC_ALPHA: f64 = 75.0;
/// The elastic transform's sigma per unit: `(1 - strength) * 3.5` (node), `noise * 3.5` (old).
const ELASTIC_SIGMA: f64 = 3.5;

/// torchvision's two APIs: the node uses transforms.v2, the older node v1. They differ in the
/// Gaussian kernel's arithmetic and in a stride detail of the resize.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    V1,
    V2,
}

/// The derived image as ComfyUI's IMAGE: float [1, 224, 224, 3], in 0..=1 except `legacy`.
pub fn derive_tensor(source: Option<&RgbImage>, recipe: &Recipe) -> Tensor {
    let _guard = crate::weights::random::global_generator();
    let threads = tch::get_num_threads();
    // One thread: the seed's float sum (a parallel reduction) adds in one order everywhere.
    tch::set_num_threads(1);
    let out = tch::no_grad(|| compute(source, recipe));
    tch::set_num_threads(threads);
    out
}

/// The derived image as 8-bit RGB: clamped to 0..=1 and rounded to the nearest level.
pub fn derive(source: Option<&RgbImage>, recipe: &Recipe) -> Result<RgbImage> {
    to_rgb(&derive_tensor(source, recipe))
}

/// A [1, H, W, 3] float image to 8-bit RGB (clamped, rounded).
pub fn to_rgb(t: &Tensor) -> Result<RgbImage> {
    let size = t.size();
    let (h, w) = (size[1], size[2]);
    let bytes = (t.clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .contiguous()
        .flatten(0, -1);
    let raw = Vec::<u8>::try_from(&bytes).context("cannot read the derived image's pixels")?;
    RgbImage::from_raw(w as u32, h as u32, raw).context("the derived image has a wrong size")
}

/// 8-bit RGB as ComfyUI's LoadImage makes it: float32 `u8 / 255`, [1, H, W, 3].
pub fn comfy_image(img: &RgbImage) -> Tensor {
    let values: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::from_slice(&values).view([1, img.height() as i64, img.width() as i64, 3])
}

fn compute(source: Option<&RgbImage>, r: &Recipe) -> Tensor {
    let s = r.strength;
    let square = || match source {
        Some(img) => {
            crop_resize(&comfy_image(img).permute([0, 3, 1, 2]), Api::V2).permute([0, 2, 3, 1])
        }
        None => Tensor::zeros([1, SIDE, SIDE, 3], FLOAT),
    };
    let out = match r.noise {
        NoiseKind::Fade => fade(&square(), s).clamp(0.0, 1.0),
        NoiseKind::Dissolve => dissolve(&square(), s).clamp(0.0, 1.0),
        NoiseKind::Gaussian => gaussian(&square(), s).clamp(0.0, 1.0),
        NoiseKind::Shuffle => shuffle(&square(), s).clamp(0.0, 1.0),
        NoiseKind::Legacy => legacy(source, s),
        NoiseKind::MeanColor => {
            let image = square();
            blend(&image, &image.mean_dim(&[1i64, 2][..], true, None), s).clamp(0.0, 1.0)
        }
        NoiseKind::Grayscale => {
            let image = square();
            blend(&image, &grayscale(&image), s).clamp(0.0, 1.0)
        }
        // The kernel is the control here, not a last step.
        NoiseKind::Blur => {
            let image = square();
            return blend(&image, &blur_image(&image, odd(r.blur)), s).clamp(0.0, 1.0);
        }
    };
    if r.blur > 0 {
        blur_image(&out, odd(r.blur))
    } else {
        out
    }
}

/// ComfyUI makes an even kernel odd by adding one.
fn odd(blur: u32) -> i64 {
    i64::from(blur | 1)
}

/// Seeds torch's generator from the image, as the node does.
fn seed_from(image: &Tensor) {
    let sum = image.sum(None).double_value(&[]);
    tch::manual_seed(sum.trunc() as i64 % SEED_MODULUS);
}

fn fade(image: &Tensor, s: f64) -> Tensor {
    seed_from(image);
    let noise = image.rand_like();
    image * (1.0 - s) + noise * s
}

fn dissolve(image: &Tensor, s: f64) -> Tensor {
    seed_from(image);
    let mask = image.rand_like().lt(s).to_kind(Kind::Float);
    let noise = image.rand_like();
    image * (mask.neg() + 1.0) + noise * &mask
}

fn gaussian(image: &Tensor, s: f64) -> Tensor {
    seed_from(image);
    image + image.randn_like() * s
}

fn shuffle(image: &Tensor, s: f64) -> Tensor {
    seed_from(image);
    let warped = elastic_flips(
        &image.permute([0, 3, 1, 2]),
        (1.0 - s) * ELASTIC_SIGMA,
        Api::V2,
    )
    .permute([0, 2, 3, 1]);
    let noise = warped.randn_like() * (s * 0.75);
    &warped * (noise.neg() + 1.0) + noise
}

/// The older node: seed 0, crop, resize, elastic shuffle and flips (torchvision v1), then
/// normal noise whose amplitude falls with the strength. Not clamped.
fn legacy(source: Option<&RgbImage>, s: f64) -> Tensor {
    let image = match source {
        Some(img) => comfy_image(img),
        None => Tensor::zeros([1, SIDE, SIDE, 3], FLOAT),
    };
    let x = image.permute([0, 3, 1, 2]);
    tch::manual_seed(0);
    let warped =
        elastic_flips(&crop_resize(&x, Api::V1), s * ELASTIC_SIGMA, Api::V1).permute([0, 2, 3, 1]);
    &warped + warped.randn_like() * (0.25 * (1.0 - s) + 0.05)
}

fn blend(image: &Tensor, control: &Tensor, s: f64) -> Tensor {
    image * (1.0 - s) + control * s
}

/// torchvision's luma (0.2989 R + 0.587 G + 0.114 B) in all three channels, [1, H, W, 3].
fn grayscale(image: &Tensor) -> Tensor {
    let c = |i: i64| image.select(3, i);
    let luma = c(0) * 0.2989 + c(1) * 0.587 + c(2) * 0.114;
    luma.unsqueeze(-1).expand_as(image)
}

/// `CenterCrop(min(H, W))` then `Resize((224, 224), BICUBIC, antialias=True)` on [1, 3, H, W].
fn crop_resize(x: &Tensor, api: Api) -> Tensor {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let side = h.min(w);
    // Python's round() (ties to even) of the offsets, as torchvision computes them.
    let top = ((h - side) as f64 / 2.0).round_ties_even() as i64;
    let left = ((w - side) as f64 / 2.0).round_ties_even() as i64;
    let x = x.narrow(2, top, side).narrow(3, left, side);
    if side == SIDE {
        return x;
    }
    if api == Api::V1 {
        return x.internal_upsample_bicubic2d_aa([SIDE, SIDE], false, None, None);
    }
    // transforms.v2 reshapes (a view that can change the batch stride, which decides the
    // output's memory format), and gives a channels-last batch of one a dense batch stride.
    let channels = size[1];
    let x = x.reshape([-1, channels, side, side]);
    let x = if channels_last(&x) && x.numel() as i64 != x.stride()[0] {
        let mut stride = x.stride();
        stride[0] = x.numel() as i64;
        x.as_strided(x.size(), stride, None)
    } else {
        x
    };
    x.internal_upsample_bicubic2d_aa([SIDE, SIDE], false, None, None)
        .reshape([1, channels, SIDE, SIDE])
}

/// `is_contiguous(memory_format=torch.channels_last)` of a 4-d tensor.
fn channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    let mut expected = 1;
    for d in [1, 3, 2, 0] {
        if size[d] != 1 {
            if stride[d] != expected {
                return false;
            }
            expected *= size[d];
        }
    }
    true
}

/// `ElasticTransform(alpha=75, sigma)` (bilinear, fill 0), then `RandomVerticalFlip(p=1)`
/// and `RandomHorizontalFlip(p=1)`, on [1, 3, H, W]. Each flip draws one number.
fn elastic_flips(x: &Tensor, sigma: f64, api: Api) -> Tensor {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let field = |len: i64| {
        let d = Tensor::rand([1, 1, h, w], FLOAT) * 2.0 - 1.0;
        let d = if sigma > 0.0 {
            let mut k = (8.0 * sigma + 1.0) as i64;
            if k % 2 == 0 {
                k += 1;
            }
            gaussian_blur(&d, k, sigma, api)
        } else {
            d
        };
        d * ELASTIC_ALPHA / len as f64
    };
    let dx = field(w);
    let dy = field(h);
    let displacement = Tensor::cat(&[dx, dy], 1).permute([0, 2, 3, 1]);
    let grid = identity_grid(h, w) + displacement;
    // A channel of ones marks what came from inside the image; outside is the fill (0).
    let ones = Tensor::ones([1, 1, h, w], FLOAT);
    let sampled = Tensor::cat(&[x, &ones], 1).grid_sampler(&grid, 0, 0, false);
    let image = sampled.narrow(1, 0, 3);
    let inside = sampled.narrow(1, 3, 1).expand_as(&image);
    let warped = image * inside;
    let _ = Tensor::rand([1], FLOAT);
    let _ = Tensor::rand([1], FLOAT);
    warped.flip([-2]).flip([-1])
}

/// torchvision's identity sampling grid, [1, H, W, 2] (x, y) at pixel centres.
fn identity_grid(h: i64, w: i64) -> Tensor {
    let axis = |n: i64| {
        Tensor::linspace(
            (1 - n) as f64 / n as f64,
            (n - 1) as f64 / n as f64,
            n,
            FLOAT,
        )
    };
    let xs = axis(w).view([1, w]).expand([h, w], false);
    let ys = axis(h).view([h, 1]).expand([h, w], false);
    Tensor::stack(&[xs, ys], -1).unsqueeze(0)
}

/// `gaussian_blur(noise, k)` with torchvision's default sigma, on [1, H, W, 3].
fn blur_image(image: &Tensor, k: i64) -> Tensor {
    gaussian_blur(
        &image.permute([0, 3, 1, 2]),
        k,
        k as f64 * 0.15 + 0.35,
        Api::V2,
    )
    .permute([0, 2, 3, 1])
}

/// torchvision's Gaussian blur of [1, C, H, W]: a k x k kernel, reflect padding, a grouped
/// convolution.
fn gaussian_blur(x: &Tensor, k: i64, sigma: f64, api: Api) -> Tensor {
    let channels = x.size()[1];
    let kernel1d = match api {
        Api::V2 => {
            let lim = (k - 1) as f64 / (2.0 * 2f64.sqrt());
            (Tensor::linspace(-lim, lim, k, FLOAT) / sigma)
                .pow_tensor_scalar(2)
                .neg()
                .softmax(0, None)
        }
        Api::V1 => {
            let half = (k - 1) as f64 * 0.5;
            let pdf = ((Tensor::linspace(-half, half, k, FLOAT) / sigma).pow_tensor_scalar(2)
                * -0.5)
                .exp();
            &pdf / pdf.sum(None)
        }
    };
    let kernel = match api {
        Api::V2 => kernel1d.unsqueeze(-1) * &kernel1d,
        Api::V1 => kernel1d.unsqueeze(1).mm(&kernel1d.unsqueeze(0)),
    };
    let kernel = kernel.expand([channels, 1, k, k], false);
    let p = k / 2;
    x.pad([p, p, p, p], "reflect", None).conv2d(
        &kernel,
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        channels,
    )
}
