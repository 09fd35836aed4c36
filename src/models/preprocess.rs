//! Image preprocessing, as transformers 5's `CLIPImageProcessor` and `BitImageProcessor`
//! (DINOv2; both on the torchvision backend, the default) do it: resize the shortest side to
//! `resize` with antialiased bicubic interpolation on the uint8 image (torch's fixed-point
//! kernel, as torchvision uses on the CPU), centre crop `crop` x `crop`, rescale by 1/255 and
//! normalize with the model's mean and std (CLIP: OpenAI's; DINOv2: ImageNet's, after a
//! resize to 256 and a crop of 224). The resize is libtorch's own `_upsample_bicubic2d_aa`, the kernel that
//! torchvision calls, so the pixels match up to float rounding.
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Resize, crop and normalization of one image processor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// The shortest side after resizing.
    pub resize: usize,
    /// The side of the centre crop.
    pub crop: usize,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Preprocess {
    /// CLIPImageProcessor: resize and crop to `size`, OpenAI's mean and std.
    pub fn clip(size: usize) -> Self {
        Preprocess {
            resize: size,
            crop: size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// BitImageProcessor as DINOv2 configures it: 256, crop 224, ImageNet mean and std.
    pub fn dinov2() -> Self {
        Preprocess {
            resize: 256,
            crop: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Several images as `[B, 3, crop, crop]`; resizing runs in parallel on the CPU.
    pub fn batch(&self, imgs: &[image::RgbImage], device: Device, kind: Kind) -> Tensor {
        let c = self.crop as i64;
        if imgs.is_empty() {
            return Tensor::zeros([0, 3, c, c], (kind, device));
        }
        let crops: Vec<Tensor> = imgs
            .par_iter()
            .map(|img| resize_crop(img, self.resize, self.crop))
            .collect();
        normalize(&Tensor::stack(&crops, 0), self)
            .to_device(device)
            .to_kind(kind)
    }
}

/// The resized size `(h, w)`: shortest side `size`, the other `int(size * long / short)`.
fn resized_hw(h: usize, w: usize, size: usize) -> (usize, usize) {
    let long_of = |short: usize, long: usize| (size as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (long_of(w, h), size)
    } else {
        (size, long_of(h, w))
    }
}

/// Resized (shortest side `size`) and centre-cropped pixels `[3, crop, crop]` in 0..255
/// (float, integral values), on the CPU.
fn resize_crop(img: &image::RgbImage, size: usize, crop: usize) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1]);
    let mut x = pixels.contiguous().unsqueeze(0);
    let (nh, nw) = resized_hw(h, w, size);
    if (nh, nw) != (h, w) {
        // On uint8 input this is torch's fixed-point kernel (torchvision's CPU path for bicubic).
        x = x.internal_upsample_bicubic2d_aa([nh as i64, nw as i64], false, None, None);
    }
    let x = x.to_kind(Kind::Float);
    let s = crop as i64;
    let top = ((nh - crop) as f64 / 2.0) as i64;
    let left = ((nw - crop) as f64 / 2.0) as i64;
    x.narrow(2, top, s).narrow(3, left, s).squeeze_dim(0)
}

/// `(x - 255 mean) / (255 std)` on `[B, 3, S, S]` float pixels in 0..255 (transformers fuses
/// the 1/255 rescale into mean and std the same way).
fn normalize(x: &Tensor, p: &Preprocess) -> Tensor {
    let mean = Tensor::from_slice(&p.mean)
        .to_kind(Kind::Float)
        .to_device(x.device())
        * 255.0;
    let std = Tensor::from_slice(&p.std)
        .to_kind(Kind::Float)
        .to_device(x.device())
        * 255.0;
    (x - mean.view([1, 3, 1, 1])) / std.view([1, 3, 1, 1])
}

/// One image as CLIP pixels `[1, 3, size, size]` on `device`, converted to `kind`.
pub fn clip_pixels(img: &image::RgbImage, size: usize, device: Device, kind: Kind) -> Tensor {
    let p = Preprocess::clip(size);
    normalize(&resize_crop(img, size, size).unsqueeze(0), &p)
        .to_device(device)
        .to_kind(kind)
}

/// Several images as CLIP pixels `[B, 3, size, size]`.
pub fn clip_pixels_batch(
    imgs: &[image::RgbImage],
    size: usize,
    device: Device,
    kind: Kind,
) -> Tensor {
    Preprocess::clip(size).batch(imgs, device, kind)
}
