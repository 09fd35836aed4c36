//! What made a result: negimg's version and git revision, and the libtorch it ran on. Written
//! into every manifest and printed by `negimg doctor`.
use std::path::{Path, PathBuf};

/// negimg's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision negimg was built from (embedded by build.rs; `unknown` outside a checkout).
pub fn git_revision() -> &'static str {
    env!("NEGIMG_GIT_REVISION")
}

/// libtorch's version as seen at run time, from the library this process has loaded, and
/// the folder it was loaded from.
pub fn libtorch() -> (String, Option<PathBuf>) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf));
    let version = lib.as_deref().and_then(|lib| {
        let root = lib.parent()?;
        // pip wheels carry torch/version.py; libtorch archives carry build-version.
        if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
            let line = text.lines().find(|l| l.starts_with("__version__"))?;
            return Some(line.split('\'').nth(1)?.to_string());
        }
        std::fs::read_to_string(root.join("build-version"))
            .ok()
            .map(|s| s.trim().to_string())
    });
    (version.unwrap_or_else(|| "unknown".into()), lib)
}
