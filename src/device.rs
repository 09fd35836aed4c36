//! `--device` and `--dtype` parsing and resolution to tch types.
use anyhow::{Result, bail};
use tch::{Device, Kind};

/// A device as the user writes it: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let device = match spec.as_str() {
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
    };
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
