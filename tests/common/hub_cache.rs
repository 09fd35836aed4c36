//! A Hugging Face cache in huggingface_hub's snapshot layout, made by the tests.
use std::path::{Path, PathBuf};

pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Adds `files` (repo path, content) to `repo` in the cache `hub` as huggingface_hub stores
/// them: content in blobs/<hash>, snapshots/<sha>/<path> a relative link to it, refs/main.
pub fn add_to_cache(hub: &Path, repo: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), SHA).unwrap();
    let snapshot = repo_dir.join("snapshots").join(SHA);
    for (i, (path, content)) in files.iter().enumerate() {
        let blob = format!("blob{i:04}{}", path.len());
        std::fs::write(repo_dir.join("blobs").join(&blob), content).unwrap();
        let link = snapshot.join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = path.matches('/').count() + 2;
        let target = format!("{}blobs/{blob}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    snapshot
}

/// Every file under `dir`, relative, '/'-separated.
pub fn files_under(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            files_under(&path, &rel, out);
        } else {
            out.push((rel, std::fs::read(&path).unwrap()));
        }
    }
}
