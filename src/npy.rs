//! NumPy `.npy` files (format version 1.0) of float32 arrays, little-endian, C order: the
//! change and attention maps, so that numpy reads them with `np.load`. [`read`] reads 2-d
//! ones, [`read_shape`] any.
use anyhow::{Context, Result, bail};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// The bytes of a `.npy` file holding `values` (row-major) of shape `(rows, cols)`.
pub fn encode(rows: usize, cols: usize, values: &[f32]) -> Vec<u8> {
    encode_shape(&[rows, cols], values)
}

/// The bytes of a `.npy` file holding `values` (row-major) of shape `shape` (at least 2-d).
pub fn encode_shape(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        values.len(),
        "shape and values disagree"
    );
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = dims.join(", ");
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    // The header (magic, version, length, dict, padding, newline) is a multiple of 64 bytes.
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(unpadded + padding + 4 * values.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a file [`encode`] wrote: `(rows, cols, values)`.
pub fn read(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let (dims, values) = read_shape(path)?;
    let [rows, cols] = dims[..] else {
        bail!("{} has shape {dims:?}: not 2-d", path.display());
    };
    Ok((rows, cols, values))
}

/// Reads a file [`encode_shape`] wrote: `(shape, values)`.
pub fn read_shape(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode(&bytes).with_context(|| format!("{} is not a float32 .npy file", path.display()))
}

fn decode(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC || bytes[6] != 1 {
        bail!("no .npy version 1 header");
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = 10 + header_len;
    let dict = std::str::from_utf8(bytes.get(10..data).unwrap_or_default())?;
    if !dict.contains("'descr': '<f4'") || !dict.contains("'fortran_order': False") {
        bail!("not little-endian float32 in C order: {dict}");
    }
    let shape = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let body = &bytes[data.min(bytes.len())..];
    if body.len() != 4 * dims.iter().product::<usize>() {
        bail!("{} data bytes for shape ({shape})", body.len());
    }
    let values = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((dims, values))
}
