//! `--device` and `--dtype` parsing and resolution to tch types; what a CUDA device has
//! free, and how large a batch it takes.
use anyhow::{Result, bail};
use tch::{Device, Kind};

/// A device as the user writes it: `auto`, `cpu`, `cuda` or `cuda:N`; a CUDA device must
/// be visible.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = parse_device_spec(spec)?;
    let spec = spec.trim().to_ascii_lowercase();
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count() as usize;
        if count == 0 {
            bail!(
                "--device {spec}: CUDA is not available (libtorch sees no GPU); use --device cpu, \
                 or run `negimg doctor` to see why"
            );
        }
        if i >= count {
            bail!(
                "--device {spec}: only {count} GPU(s) visible (cuda:0..cuda:{})",
                count - 1
            );
        }
    }
    Ok(device)
}

/// As [`parse_device`], without asking whether the device is there (`plan` estimates for a
/// GPU it cannot see).
pub fn parse_device_spec(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    Ok(match spec.as_str() {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(index) => match index.parse::<usize>() {
                Ok(i) => Device::Cuda(i),
                Err(_) => bail!("--device {spec:?}: the GPU index after 'cuda:' must be a number"),
            },
            None => bail!("--device {spec:?} is not one of auto, cpu, cuda, cuda:N"),
        },
    })
}

/// Whether libtorch sees `device` here.
pub fn is_visible(device: Device) -> bool {
    match device {
        Device::Cuda(i) => (i as i64) < tch::Cuda::device_count(),
        _ => true,
    }
}

/// A dtype as the user writes it: `auto` (fp16 on CUDA, fp32 on CPU), `fp32`, `fp16`, `bf16`.
pub fn parse_dtype(spec: &str, device: Device) -> Result<Kind> {
    Ok(match spec.trim().to_ascii_lowercase().as_str() {
        "auto" => match device {
            Device::Cuda(_) => Kind::Half,
            _ => Kind::Float,
        },
        "fp32" | "float32" => Kind::Float,
        "fp16" | "float16" | "half" => Kind::Half,
        "bf16" | "bfloat16" => Kind::BFloat16,
        other => bail!("--dtype {other:?} is not one of auto, fp32, fp16, bf16"),
    })
}

pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "fp16",
        Kind::BFloat16 => "bf16",
        Kind::Float => "fp32",
        Kind::Double => "fp64",
        _ => "other",
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The largest batch worth trying first for `width` x `height` images: on CUDA, free
/// memory over an estimated cost per image (about 0.75 GiB at 512x512 in fp16, VAE decode
/// included; twice that in fp32), at most 64; 8 when the free memory cannot be read; on the
/// CPU, 4.
pub fn estimate_max_batch(device: Device, kind: Kind, width: usize, height: usize) -> usize {
    let Device::Cuda(i) = device else {
        return 4;
    };
    let Some((free, _)) = cuda_mem_info(i) else {
        return 8;
    };
    let bytes_per_elem = if kind == Kind::Float { 2.0 } else { 1.0 };
    let per_image =
        0.75 * (1u64 << 30) as f64 * bytes_per_elem * (width * height) as f64 / (512.0 * 512.0);
    ((free as f64 * 0.8 / per_image) as usize).clamp(1, 64)
}

/// `(free, total)` bytes of CUDA device `index`, from the CUDA runtime that libtorch loaded.
pub fn cuda_mem_info(index: usize) -> Option<(u64, u64)> {
    type GetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    // SAFETY: dlopen/dlsym of the already-loaded CUDA runtime; the symbols have these C
    // signatures (cudaMemGetInfo(size_t*, size_t*), cudaSetDevice(int)).
    unsafe {
        for name in [
            "libcudart.so.12\0",
            "libcudart.so.13\0",
            "libcudart.so.11.0\0",
            "libcudart.so\0",
        ] {
            let handle = libc::dlopen(
                name.as_ptr() as *const libc::c_char,
                libc::RTLD_LAZY | libc::RTLD_NOLOAD,
            );
            let handle = if handle.is_null() {
                libc::dlopen(name.as_ptr() as *const libc::c_char, libc::RTLD_LAZY)
            } else {
                handle
            };
            if handle.is_null() {
                continue;
            }
            let get = libc::dlsym(handle, c"cudaMemGetInfo".as_ptr());
            let set = libc::dlsym(handle, c"cudaSetDevice".as_ptr());
            if get.is_null() || set.is_null() {
                continue;
            }
            let set: SetDevice = std::mem::transmute(set);
            let get: GetInfo = std::mem::transmute(get);
            if set(index as i32) != 0 {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            if get(&mut free, &mut total) == 0 {
                return Some((free as u64, total as u64));
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_unknown_is_rejected() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn cuda_request_without_gpu_is_a_clear_error() {
        if tch::Cuda::is_available() {
            return;
        }
        let err = parse_device("cuda").unwrap_err().to_string();
        assert!(err.contains("CUDA is not available"), "{err}");
        assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
    }

    #[test]
    fn dtype_auto_is_fp16_on_cuda_and_fp32_on_cpu() {
        assert_eq!(parse_dtype("auto", Device::Cpu).unwrap(), Kind::Float);
        assert_eq!(parse_dtype("auto", Device::Cuda(0)).unwrap(), Kind::Half);
        assert_eq!(parse_dtype("bf16", Device::Cpu).unwrap(), Kind::BFloat16);
        assert!(parse_dtype("int8", Device::Cpu).is_err());
    }
}
