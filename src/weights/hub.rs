//! Model references: local paths and `hf:org/repo[/path][@revision]`, resolved through the
//! standard Hugging Face cache so that files downloaded by Python tools are reused.
//!
//! The cache has huggingface_hub's layout: `<cache>/models--org--repo/refs/<revision>` holds a
//! commit sha, `snapshots/<sha>/<path>` are links into `blobs/`. The cache folder is
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub` ([`super::hf_hub_cache`]). A reference resolves from the cache
//! without touching the network when every file the component needs is there; otherwise only
//! those files are downloaded (fp16 variants where the repo has them; pickled `.bin` only for
//! folders without safetensors) by [`super::hub_client`], unless `HF_HUB_OFFLINE` is set or
//! the hub cannot be reached within a few seconds: then the error names the repo, the missing
//! files and the commands that fetch them.
use super::hub_client::{Client, Fetch, write_ref};
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for the hub before treating the network as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What a reference points at, which decides the files it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Decided from the files: a file path, a folder with `model_index.json` (pipeline) or
    /// with `config.json` (model folder).
    Auto,
    /// A diffusers pipeline folder: model_index.json, unet/, vae/, text_encoder/ (config.json
    /// and one weight file each), tokenizer/, scheduler/.
    Pipeline,
    /// One model in transformers/diffusers layout (image encoder, VAE, CLIP scorer): the
    /// folder's `.json`/`.txt` files and one `.safetensors` weight file.
    ModelFolder,
    /// One file (an IP-Adapter, a single-file checkpoint).
    File,
}

/// A parsed `hf:` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfRef {
    /// `org/repo`.
    pub repo: String,
    /// Path inside the repo, "" for its root.
    pub path: String,
    pub revision: String,
}

impl HfRef {
    /// `Ok(None)` when `reference` is not an `hf:` reference (a local path).
    pub fn parse(reference: &str) -> Result<Option<HfRef>> {
        let Some(rest) = reference.strip_prefix("hf:") else {
            return Ok(None);
        };
        let (rest, revision) = match rest.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
            Some(_) => bail!("model reference {reference:?}: empty revision after '@'"),
            None => (rest, "main".to_string()),
        };
        let rest = rest.trim_matches('/');
        let mut parts = rest.splitn(3, '/');
        let (Some(org), Some(name)) = (parts.next(), parts.next()) else {
            bail!(
                "model reference {reference:?}: expected hf:org/repo[/path][@revision], \
                 e.g. hf:h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
            );
        };
        let path = parts.next().unwrap_or("").to_string();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(org) || !valid(name) || path.split('/').any(|p| p == "..") {
            bail!("model reference {reference:?}: invalid repo name or path");
        }
        Ok(Some(HfRef {
            repo: format!("{org}/{name}"),
            path,
            revision,
        }))
    }

    /// The repo's folder in the cache: `models--org--repo`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for HfRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hf:{}", self.repo)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// True when `HF_HUB_OFFLINE` is set to a true value (as huggingface_hub reads it).
pub fn is_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

/// Resolves a model reference to a local path: a local path relative to `base_dir` (it must
/// exist), or an `hf:` reference through the cache, downloading what is missing unless offline; with `download` false, a missing file is an
/// error even when the network is there (`models check`).
pub fn resolve_as(
    reference: &str,
    base_dir: &Path,
    component: Component,
    download: bool,
) -> Result<PathBuf> {
    resolve_for(
        reference,
        &Resolve {
            base_dir,
            component,
            download,
            experiment: None,
        },
    )
}

/// How to resolve a reference, and the experiment file that names it (for the hints).
pub struct Resolve<'a> {
    /// Local paths are relative to it.
    pub base_dir: &'a Path,
    pub component: Component,
    /// False: a missing file is an error even when the network is there (`models check`).
    pub download: bool,
    pub experiment: Option<&'a Path>,
}

/// [`resolve_as`] with the experiment file named in the error's `negimg models fetch` hint.
pub fn resolve_for(reference: &str, how: &Resolve) -> Result<PathBuf> {
    let mode = if how.download {
        Mode::Download
    } else {
        Mode::NoDownload
    };
    let hint = Hint {
        cache: &super::hf_hub_cache(),
        experiment: how.experiment,
    };
    resolve_in(reference, how.base_dir, how.component, &hint, mode)
}

/// [`resolve_as`] in the cache folder `cache` (the `hub` folder), never downloading.
pub fn resolve_cached(
    reference: &str,
    base_dir: &Path,
    component: Component,
    cache: &Path,
) -> Result<PathBuf> {
    let hint = Hint {
        cache,
        experiment: None,
    };
    resolve_in(reference, base_dir, component, &hint, Mode::CacheOnly)
}

/// The cache searched, and the experiment file to name in the hints.
struct Hint<'a> {
    cache: &'a Path,
    experiment: Option<&'a Path>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Download,
    /// `models check`: never downloads.
    NoDownload,
    /// An explicit cache folder, as in tests: never downloads.
    CacheOnly,
}

fn resolve_in(
    reference: &str,
    base_dir: &Path,
    component: Component,
    hint: &Hint,
    mode: Mode,
) -> Result<PathBuf> {
    let cache = hint.cache;
    let Some(hf) = HfRef::parse(reference)? else {
        let path = base_dir.join(reference);
        if !path.exists() {
            bail!(
                "model {reference:?}: {} does not exist (local paths are relative to {}; \
                 use hf:org/repo/... for Hugging Face models)",
                path.display(),
                base_dir.display()
            );
        }
        return Ok(path);
    };
    let repo_dir = cache.join(hf.cache_folder());
    let mut missing = None;
    let mut incomplete = None;
    if let Some(snapshot) = snapshot_dir(&repo_dir, &hf.revision) {
        let listing = local_listing(&snapshot);
        match plan_files(&listing, &hf.path, component) {
            Ok(files) => {
                let absent: Vec<String> = files
                    .into_iter()
                    .filter(|f| !snapshot.join(f).is_file())
                    .collect();
                if absent.is_empty() {
                    return Ok(snapshot.join(&hf.path));
                }
                missing = Some(absent);
            }
            Err(e) => incomplete = Some(format!("{e:#}")),
        }
    }
    let missing = Missing {
        files: missing,
        incomplete,
    };
    let reason = if mode == Mode::CacheOnly {
        Some("only the cache is searched".to_string())
    } else if is_offline() {
        Some("HF_HUB_OFFLINE is set".to_string())
    } else if mode == Mode::NoDownload {
        Some("`models check` does not download".to_string())
    } else {
        network_down()
    };
    if let Some(reason) = reason {
        bail!(missing_message(&hf, component, &missing, hint, &reason));
    }
    match download_component(&hf, component, cache) {
        Ok(path) => Ok(path),
        Err(Fetch::Unreachable(e)) => {
            let reason = format!("{} cannot be reached ({e})", endpoint());
            if let Ok(mut down) = NETWORK_DOWN.lock() {
                *down = Some(reason.clone());
            }
            bail!(missing_message(&hf, component, &missing, hint, &reason))
        }
        Err(Fetch::Failed(e)) => Err(e),
    }
}

/// The cached folder of the hub model `hf` with its small config files `files` (relative to
/// it, e.g. `unet/config.json`), those missing fetched when the hub can be used (not
/// offline, reachable): `negimg plan` reads a pipeline's configs before its weights are
/// downloaded. `Ok(None)` offline or unreachable with a file not cached; an error where the
/// repo lacks a file or a request fails.
pub fn config_files(hf: &HfRef, files: &[&str]) -> Result<Option<PathBuf>> {
    let cache = super::hf_hub_cache();
    let repo_dir = cache.join(hf.cache_folder());
    let in_repo = |f: &str| match hf.path.as_str() {
        "" => f.to_string(),
        dir => format!("{dir}/{f}"),
    };
    if let Some(snapshot) = snapshot_dir(&repo_dir, &hf.revision)
        && files.iter().all(|f| snapshot.join(in_repo(f)).is_file())
    {
        return Ok(Some(snapshot.join(&hf.path)));
    }
    if is_offline() || network_down().is_some() {
        return Ok(None);
    }
    let client = Client::new(endpoint(), token());
    let info = match client.repo_info(hf) {
        Ok(info) => info,
        Err(Fetch::Unreachable(_)) => return Ok(None),
        Err(Fetch::Failed(e)) => return Err(e),
    };
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    for f in files {
        let file = in_repo(f);
        if !info.files.contains(&file) {
            bail!("{hf}: the repo has no {file}");
        }
        if !snapshot.join(&file).is_file() {
            client.download(hf, &cache, &info.sha, &file)?;
        }
    }
    write_ref(&repo_dir, &hf.revision, &info.sha)?;
    Ok(Some(snapshot.join(&hf.path)))
}

/// Why the hub cannot be used now, once the probe or a request failed to get through, so
/// that the other models of an experiment fail at once.
static NETWORK_DOWN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn network_down() -> Option<String> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(reason) = NETWORK_DOWN.lock().ok().and_then(|d| d.clone()) {
        return Some(reason);
    }
    PROBE
        .get_or_init(|| {
            let endpoint = endpoint();
            reachable(&endpoint)
                .err()
                .map(|e| format!("{endpoint} cannot be reached ({e:#})"))
        })
        .clone()
}

/// The files a component needs, relative to `dir` (a resolved local file or folder), for
/// printing sizes and hashes.
pub fn component_files(path: &Path, component: Component) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let listing = local_listing(path);
    let files = plan_files(&listing, "", component)
        .with_context(|| format!("model folder {}", path.display()))?;
    Ok(files.into_iter().map(|f| path.join(f)).collect())
}

/// The snapshot folder of `revision` (a branch/tag through `refs/`, or a commit sha).
fn snapshot_dir(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let sha = match std::fs::read_to_string(repo_dir.join("refs").join(revision)) {
        Ok(sha) => sha.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let dir = repo_dir.join("snapshots").join(sha);
    dir.is_dir().then_some(dir)
}

/// Every file under `dir` (the snapshot's links included), as '/'-separated relative paths.
fn local_listing(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &rel, out);
            } else if path.is_file() || path.is_symlink() {
                // A dangling link is a file of the repo whose blob is gone: listed, then
                // reported missing.
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// The files (repo-relative) that the component at `base` needs, chosen from `listing`.
pub fn plan_files(listing: &[String], base: &str, component: Component) -> Result<Vec<String>> {
    let join = |name: &str| {
        if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}/{name}")
        }
    };
    let has = |f: &str| listing.iter().any(|l| l == f);
    let component = match component {
        // A file is itself, whatever role it plays (a single-file checkpoint as pipeline).
        _ if !base.is_empty() && has(base) => Component::File,
        Component::Auto if has(&join("model_index.json")) => Component::Pipeline,
        Component::Auto if has(&join("config.json")) => Component::ModelFolder,
        Component::Auto => bail!(
            "{}: neither a file nor a model folder (no model_index.json or config.json)",
            if base.is_empty() {
                "the repo root"
            } else {
                base
            }
        ),
        other => other,
    };
    match component {
        Component::File => {
            if !has(base) {
                bail!("file {base} is not in the repo");
            }
            Ok(vec![base.to_string()])
        }
        Component::ModelFolder => folder_files(listing, base),
        Component::Pipeline => {
            let mut files = vec![join("model_index.json")];
            for sub in ["unet", "vae", "text_encoder"] {
                files.extend(folder_files(listing, &join(sub))?);
            }
            files.extend(small_files(listing, &join("tokenizer")));
            // SDXL's second text encoder and tokenizer.
            if has(&join("text_encoder_2/config.json")) {
                files.extend(folder_files(listing, &join("text_encoder_2"))?);
                files.extend(small_files(listing, &join("tokenizer_2")));
            }
            files.push(join("scheduler/scheduler_config.json"));
            for f in &files {
                if !has(f) {
                    bail!("{f} is not in the repo (is this a diffusers pipeline?)");
                }
            }
            Ok(files)
        }
        Component::Auto => unreachable!("resolved above"),
    }
}

/// The `.json`/`.txt` files directly in `folder`.
fn small_files(listing: &[String], folder: &str) -> Vec<String> {
    listing
        .iter()
        .filter(|f| {
            let name = direct_child(f, folder);
            name.is_some_and(|n| n.ends_with(".json") || n.ends_with(".txt"))
        })
        .cloned()
        .collect()
}

fn direct_child<'a>(file: &'a str, folder: &str) -> Option<&'a str> {
    let name = if folder.is_empty() {
        file
    } else {
        file.strip_prefix(folder)?.strip_prefix('/')?
    };
    (!name.contains('/')).then_some(name)
}

/// A model folder: config.json, the other small files, and one weight file, the fp16
/// variant where there is one.
fn folder_files(listing: &[String], folder: &str) -> Result<Vec<String>> {
    let mut files = small_files(listing, folder);
    let where_ = if folder.is_empty() {
        "repo root"
    } else {
        folder
    };
    if !files
        .iter()
        .any(|f| direct_child(f, folder) == Some("config.json"))
    {
        bail!("{where_}: config.json is missing");
    }
    let weights: BTreeSet<&str> = listing
        .iter()
        .filter_map(|f| direct_child(f, folder))
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    let preferred = [
        "diffusion_pytorch_model.fp16.safetensors",
        "model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
    ];
    let weight = match preferred.iter().find(|p| weights.contains(*p)) {
        Some(w) => *w,
        None if weights.len() == 1 => weights.iter().next().copied().unwrap_or_default(),
        None if weights.is_empty() => pickled_weights(listing, folder)
            .with_context(|| format!("{where_}: no .safetensors or .bin weights"))?,
        None => bail!("{where_}: several weight files ({weights:?}); name one of them"),
    };
    files.push(if folder.is_empty() {
        weight.to_string()
    } else {
        format!("{folder}/{weight}")
    });
    Ok(files)
}

/// The pickled weights of a folder that has no safetensors (negimg converts them on loading,
/// [`super::torch_bin`]): the fp16 variant first, as for safetensors.
fn pickled_weights<'a>(listing: &'a [String], folder: &str) -> Option<&'a str> {
    let bins: BTreeSet<&str> = listing
        .iter()
        .filter_map(|f| direct_child(f, folder))
        .filter(|n| n.ends_with(".bin"))
        .collect();
    let preferred = [
        "diffusion_pytorch_model.fp16.bin",
        "pytorch_model.fp16.bin",
        "diffusion_pytorch_model.bin",
        "pytorch_model.bin",
    ];
    match preferred.iter().find(|p| bins.contains(*p)) {
        Some(b) => Some(b),
        None if bins.len() == 1 => bins.into_iter().next(),
        None => None,
    }
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A quick TCP connect to the endpoint (DNS included), so that a machine without network
/// fails in seconds rather than after the HTTP client's long timeouts. Skipped behind a proxy.
fn reachable(endpoint: &str) -> Result<()> {
    let proxied = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    if proxied {
        return Ok(());
    }
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let host_port = rest.split('/').next().unwrap_or(rest);
    let addr = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{}", if scheme == "http" { 80 } else { 443 })
    };
    // Name resolution has no timeout of its own: run it on a thread and stop waiting.
    let (tx, rx) = std::sync::mpsc::channel();
    let lookup = addr.clone();
    std::thread::spawn(move || {
        let _ = tx.send(lookup.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    let addrs = match rx.recv_timeout(CONNECT_TIMEOUT) {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => bail!("cannot resolve {addr}: {e}"),
        Err(_) => bail!("no answer resolving {addr} within {CONNECT_TIMEOUT:?}"),
    };
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => bail!("cannot connect to {addr}: {e}"),
        None => bail!("{addr} has no address"),
    }
}

/// `HF_TOKEN`, else the token file huggingface_hub's `login` writes.
fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Some(t);
        }
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::hf_home().join("token"));
    let t = std::fs::read_to_string(path).ok()?.trim().to_string();
    (!t.is_empty()).then_some(t)
}

fn download_component(
    hf: &HfRef,
    component: Component,
    cache: &Path,
) -> std::result::Result<PathBuf, Fetch> {
    let client = Client::new(endpoint(), token());
    let info = client.repo_info(hf)?;
    let files = plan_files(&info.files, &hf.path, component)
        .with_context(|| format!("{hf}"))
        .map_err(Fetch::Failed)?;
    let repo_dir = cache.join(hf.cache_folder());
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    for file in &files {
        if !snapshot.join(file).is_file() {
            client
                .download(hf, cache, &info.sha, file)
                .map_err(Fetch::Failed)?;
        }
    }
    write_ref(&repo_dir, &hf.revision, &info.sha).map_err(Fetch::Failed)?;
    Ok(snapshot.join(&hf.path))
}

/// What the cache lacks: known files, or why the cached snapshot is not usable.
struct Missing {
    files: Option<Vec<String>>,
    incomplete: Option<String>,
}

/// The error for a model that is not in the cache and cannot be downloaded now.
fn missing_message(
    hf: &HfRef,
    component: Component,
    missing: &Missing,
    hint: &Hint,
    reason: &str,
) -> String {
    let rev = if hf.revision == "main" {
        String::new()
    } else {
        format!(" --revision {}", hf.revision)
    };
    let what = match &missing.files {
        Some(files) => files.join(" "),
        None => include_patterns(&hf.path, component),
    };
    let files = match (&missing.files, &missing.incomplete) {
        (Some(files), _) => format!("files missing: {}", files.join(", ")),
        (None, Some(why)) => format!("the cached copy is incomplete: {why}"),
        (None, None) if hf.path.is_empty() => "nothing of it is cached".to_string(),
        (None, None) => format!("{} is not cached", hf.path),
    };
    let fetch = match hint.experiment {
        Some(exp) => format!(
            "negimg models fetch {}\n  or with huggingface_hub's CLI (`hf`, formerly \
             `huggingface-cli download`):\n    ",
            exp.display()
        ),
        None => "with huggingface_hub's CLI (`hf`, formerly `huggingface-cli download`):\n    "
            .to_string(),
    };
    format!(
        "model {hf} is not in the Hugging Face cache {} and {reason}.\n  \
         repo {} (revision {}); {files}.\n\
         To get it, on a machine with internet:\n    \
         {fetch}hf download {}{rev} {what}\n  \
         then copy that cache folder here, or point HF_HOME / HF_HUB_CACHE at it, or give a \
         local path instead of the hf: reference.",
        hint.cache.display(),
        hf.repo,
        hf.revision,
        hf.repo
    )
}

/// `hf download` arguments for a component whose files are not known without the network.
fn include_patterns(base: &str, component: Component) -> String {
    let join = |name: &str| {
        if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}/{name}")
        }
    };
    let looks_like_file = base.rsplit('/').next().is_some_and(|n| n.contains('.'));
    match component {
        _ if looks_like_file => base.to_string(),
        Component::File => base.to_string(),
        Component::Pipeline => format!(
            "--include {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \
             --exclude \"*.bin\" \"*.ckpt\" \"*.msgpack\" \"*.onnx*\"",
            join("model_index.json"),
            join("unet/*"),
            join("vae/*"),
            join("text_encoder/*"),
            join("tokenizer/*"),
            join("scheduler/*")
        ),
        _ => format!(
            "--include \"{}\" \"{}\" \"{}\"",
            join("*.json"),
            join("*.txt"),
            join("*.safetensors")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = HfRef::parse("hf:h94/IP-Adapter/models/ip-adapter_sd15.safetensors")
            .unwrap()
            .unwrap();
        assert_eq!(r.repo, "h94/IP-Adapter");
        assert_eq!(r.path, "models/ip-adapter_sd15.safetensors");
        assert_eq!(r.revision, "main");
        let r = HfRef::parse("hf:org/repo@v1.0").unwrap().unwrap();
        assert_eq!((r.path.as_str(), r.revision.as_str()), ("", "v1.0"));
        assert_eq!(r.to_string(), "hf:org/repo@v1.0");
        assert_eq!(r.cache_folder(), "models--org--repo");
        assert!(HfRef::parse("models/x.safetensors").unwrap().is_none());
        assert!(HfRef::parse("hf:justone").is_err());
        assert!(HfRef::parse("hf:org/repo/../../etc").is_err());
    }

    #[test]
    fn plans_the_fp16_variant_and_only_needed_files() {
        let listing: Vec<String> = [
            "model_index.json",
            "big-single-file.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "safety_checker/model.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let files = plan_files(&listing, "", Component::Auto).unwrap();
        assert!(files.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(!files.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(
            !files
                .iter()
                .any(|f| f.contains("safety_checker") || f.ends_with(".bin"))
        );
        assert!(!files.contains(&"big-single-file.safetensors".to_string()));
        assert_eq!(files.len(), 10);
        // An SDXL pipeline also brings its second text encoder and tokenizer.
        let mut sdxl = listing.clone();
        sdxl.extend(
            [
                "text_encoder_2/config.json",
                "text_encoder_2/model.safetensors",
                "text_encoder_2/model.fp16.safetensors",
                "tokenizer_2/vocab.json",
                "tokenizer_2/merges.txt",
            ]
            .map(String::from),
        );
        let files = plan_files(&sdxl, "", Component::Auto).unwrap();
        assert_eq!(files.len(), 14);
        assert!(files.contains(&"text_encoder_2/model.fp16.safetensors".to_string()));
        assert!(files.contains(&"tokenizer_2/merges.txt".to_string()));
        let file = plan_files(&listing, "big-single-file.safetensors", Component::Auto).unwrap();
        assert_eq!(file, vec!["big-single-file.safetensors"]);
        let bin_only = vec![
            "enc/config.json".to_string(),
            "enc/pytorch_model.bin".to_string(),
        ];
        // Pickled weights only where a folder has no safetensors.
        let plan = plan_files(&bin_only, "enc", Component::Auto).unwrap();
        assert_eq!(plan, vec!["enc/config.json", "enc/pytorch_model.bin"]);
        let nothing = vec!["enc/config.json".to_string()];
        let err = plan_files(&nothing, "enc", Component::Auto).unwrap_err();
        assert!(
            format!("{err:#}").contains("no .safetensors or .bin"),
            "{err:#}"
        );
    }
}
