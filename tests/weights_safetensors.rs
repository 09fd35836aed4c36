//! `weights::TensorFile` and `load_var_store` on broken and mismatched files written here.
mod common;

use negimg::weights::{TensorFile, TensorSource, load_var_store};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// A safetensors file from a raw header and data, for files no writer would produce.
fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn open_err(path: &Path) -> String {
    format!(
        "{:#}",
        TensorFile::open(path).err().expect("open should fail")
    )
}

fn good_file(dir: &Path) -> PathBuf {
    let path = dir.join("good.safetensors");
    let a = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]);
    let b = Tensor::ones([4], (Kind::Half, Device::Cpu));
    let extra = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[("lin.weight", a), ("lin.bias", b), ("unused.x", extra)],
        &path,
    )
    .unwrap();
    path
}

/// A model with one linear layer `lin` (4 -> 3).
fn model() -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = nn::linear(vs.root() / "lin", 4, 3, Default::default());
    vs
}

#[test]
fn weights_good_file_loads_converting_dtypes_and_ignoring_extra_tensors() {
    let dir = common::scratch("weights_good");
    let path = good_file(&dir);
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(file.names(), vec!["lin.bias", "lin.weight", "unused.x"]);
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root() / "lin", 4, 3, Default::default());
    // The file's bias has 4 entries and the model's 3: select only the weight from it.
    let loaded = load_var_store(&vs, &file, |name| {
        (name == "lin.weight").then(|| name.to_string())
    })
    .unwrap();
    assert_eq!(loaded, 1);
    let want = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]);
    assert_eq!(common::max_abs_diff(&lin.ws, &want), 0.0);
    // fp16 storage read as fp32.
    let b = file.get("lin.bias", Device::Cpu, Kind::Float).unwrap();
    assert_eq!(b.kind(), Kind::Float);
    assert_eq!(b.sum(Kind::Double).double_value(&[]), 4.0);
}

#[test]
fn weights_truncated_file_is_refused() {
    let dir = common::scratch("weights_truncated");
    let bytes = std::fs::read(good_file(&dir)).unwrap();
    let path = dir.join("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let msg = open_err(&path);
    assert!(
        msg.contains("truncated.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn weights_file_shorter_than_its_header_is_refused() {
    let dir = common::scratch("weights_short_header");
    let path = dir.join("short.safetensors");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":");
    std::fs::write(&path, bytes).unwrap();
    let msg = open_err(&path);
    assert!(
        msg.contains("short.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );
    std::fs::write(&path, b"abc").unwrap();
    assert!(open_err(&path).contains("short.safetensors"));
}

#[test]
fn weights_header_lying_about_sizes_is_refused() {
    let dir = common::scratch("weights_lying");
    // Shape [4] of F32 is 16 bytes, the offsets say 8.
    let path = dir.join("lying_shape.safetensors");
    write_raw(
        &path,
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let msg = open_err(&path);
    assert!(
        msg.contains("lying_shape.safetensors") && msg.contains("not a valid"),
        "{msg}"
    );
    // Consistent header, but the data stops short of what it describes.
    let path = dir.join("lying_length.safetensors");
    write_raw(
        &path,
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        &[0; 8],
    );
    let msg = open_err(&path);
    assert!(msg.contains("lying_length.safetensors"), "{msg}");
    // Not JSON at all.
    let path = dir.join("garbage.safetensors");
    write_raw(&path, "this is not json", &[]);
    assert!(open_err(&path).contains("garbage.safetensors"));
}

#[test]
fn weights_wrong_dtype_is_named() {
    let dir = common::scratch("weights_dtype");
    let path = dir.join("ints.safetensors");
    write_raw(
        &path,
        r#"{"lin.weight":{"dtype":"I32","shape":[3,4],"data_offsets":[0,48]}}"#,
        &[0; 48],
    );
    let file = TensorFile::open(&path).unwrap();
    let vs = model();
    let err = load_var_store(&vs, &file, |n| (n == "lin.weight").then(|| n.to_string()));
    let msg = format!("{:#}", err.err().unwrap());
    assert!(
        msg.contains("ints.safetensors") && msg.contains("lin.weight") && msg.contains("I32"),
        "{msg}"
    );
}

#[test]
fn weights_wrong_shape_is_named() {
    let dir = common::scratch("weights_shape");
    let path = dir.join("shape.safetensors");
    let w = Tensor::zeros([3, 5], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("lin.weight", w)], &path).unwrap();
    let file = TensorFile::open(&path).unwrap();
    let err = load_var_store(&model(), &file, |n| {
        (n == "lin.weight").then(|| n.to_string())
    });
    let msg = format!("{:#}", err.err().unwrap());
    assert!(
        msg.contains("shape.safetensors")
            && msg.contains("lin.weight")
            && msg.contains("[3, 5]")
            && msg.contains("[3, 4]"),
        "{msg}"
    );
}

#[test]
fn weights_missing_tensor_is_named() {
    let dir = common::scratch("weights_missing");
    let path = dir.join("partial.safetensors");
    let w = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("lin.weight", w)], &path).unwrap();
    let file = TensorFile::open(&path).unwrap();
    let err = load_var_store(&model(), &file, |n| Some(n.to_string()));
    let msg = format!("{:#}", err.err().unwrap());
    assert!(
        msg.contains("partial.safetensors") && msg.contains("lin.bias") && msg.contains("missing"),
        "{msg}"
    );
    let msg = format!(
        "{:#}",
        file.get("nope", Device::Cpu, Kind::Float).err().unwrap()
    );
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn weights_pytorch_pickle_is_refused_with_conversion_command() {
    let dir = common::scratch("weights_pickle");
    let path = dir.join("pytorch_model.safetensors");
    let code = "import sys, torch; torch.save({'a': torch.zeros(2)}, sys.argv[1])";
    let out = std::process::Command::new(common::python())
        .args(["-c", code, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = open_err(&path);
    assert!(
        msg.contains("pytorch_model.safetensors")
            && msg.contains("pickle")
            && msg.contains("save_file"),
        "{msg}"
    );
}
