//! The few Hugging Face hub requests negimg makes, in huggingface_hub's protocol and cache
//! layout:
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}`: the commit and the file list;
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` without following absolute redirects:
//!   `X-Repo-Commit`, `X-Linked-Etag`/`ETag`, `X-Linked-Size`/`Content-Length`, and for large
//!   (LFS) files a `Location` on another host;
//! - `GET` of that location (no token sent to another host), resumed with `Range` after a
//!   dropped connection.
//!
//! A file goes to `blobs/<etag>.incomplete`, is checked (size; SHA-256 where the etag is one),
//! renamed to `blobs/<etag>`, then linked from `snapshots/<commit>/<file>` by an atomic rename,
//! so `snapshots/` never holds a partial file. A lock per blob (`.locks/`, as huggingface_hub
//! keeps them) lets concurrent processes share one download. Every request has a read
//! timeout (`HF_HUB_ETAG_TIMEOUT`, `HF_HUB_DOWNLOAD_TIMEOUT`, 10 s by default, as in
//! huggingface_hub), so a server that stops sending fails naming the file.
use super::hub::HfRef;
use anyhow::{Context, Result, anyhow, bail};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Tries per file, each resuming where the previous one stopped.
const TRIES: u32 = 3;
const MAX_REDIRECTS: usize = 5;

/// Why a request failed: the hub could not be reached (treated like offline), or it answered
/// with an error.
pub enum Fetch {
    Unreachable(String),
    Failed(anyhow::Error),
}

pub struct RepoInfo {
    pub sha: String,
    pub files: Vec<String>,
}

#[derive(serde::Deserialize)]
struct InfoJson {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

pub struct Client {
    endpoint: String,
    token: Option<String>,
    /// Listing and HEAD requests: no redirects followed, `HF_HUB_ETAG_TIMEOUT`.
    meta: ureq::Agent,
    /// File bodies: redirects followed, `HF_HUB_DOWNLOAD_TIMEOUT` per read.
    data: ureq::Agent,
    download_timeout: Duration,
}

/// What a HEAD on the resolve URL tells about one file.
struct FileMeta {
    commit: String,
    etag: String,
    size: u64,
    /// Where the content is (the resolve URL, or the host a large file is redirected to).
    location: String,
}

fn seconds_from_env(var: &str) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10))
}

/// Percent-encodes all but unreserved characters (and '/' where `keep_slash`).
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Client {
    pub fn new(endpoint: String, token: Option<String>) -> Client {
        let etag_timeout = seconds_from_env("HF_HUB_ETAG_TIMEOUT");
        let download_timeout = seconds_from_env("HF_HUB_DOWNLOAD_TIMEOUT");
        let agent = |read: Duration, redirects: u32| {
            ureq::AgentBuilder::new()
                .try_proxy_from_env(true)
                .timeout_connect(CONNECT_TIMEOUT)
                .timeout_read(read)
                .timeout_write(read)
                .redirects(redirects)
                .user_agent(concat!("negimg/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Client {
            endpoint,
            token,
            meta: agent(etag_timeout, 0),
            data: agent(download_timeout, MAX_REDIRECTS as u32),
            download_timeout,
        }
    }

    /// A request with the token, which only goes to the endpoint's own host.
    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let request = agent.request(method, url);
        match &self.token {
            Some(t) if host_of(url) == host_of(&self.endpoint) => {
                request.set("Authorization", &format!("Bearer {t}"))
            }
            _ => request,
        }
    }

    /// The commit and files of `hf`'s repo at its revision.
    pub fn repo_info(&self, hf: &HfRef) -> std::result::Result<RepoInfo, Fetch> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            hf.repo,
            quote(&hf.revision, false)
        );
        let response = match self.request(&self.meta, "GET", &url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                return Err(Fetch::Failed(status_error(hf, code, r, None)));
            }
            Err(ureq::Error::Transport(t)) => return Err(Fetch::Unreachable(t.to_string())),
        };
        let info: InfoJson = response.into_json().map_err(|e| {
            Fetch::Failed(anyhow!("{hf}: unreadable answer listing {}: {e}", hf.repo))
        })?;
        Ok(RepoInfo {
            sha: info.sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Downloads `file` of `hf`'s repo at `commit` into the cache `cache` (unless its blob is
    /// there) and links it into the snapshot; returns the snapshot path.
    pub fn download(&self, hf: &HfRef, cache: &Path, commit: &str, file: &str) -> Result<PathBuf> {
        let repo_dir = cache.join(hf.cache_folder());
        let meta = self
            .file_meta(hf, commit, file)
            .with_context(|| format!("{hf}: cannot download {file}"))?;
        let blob = repo_dir.join("blobs").join(&meta.etag);
        let locks = cache.join(".locks").join(hf.cache_folder());
        for dir in [blob.parent().unwrap_or(&repo_dir), &locks] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock = lock(&locks.join(format!("{}.lock", meta.etag)))?;
        if !blob_is_whole(&blob, meta.size) {
            log::info!("downloading {file} from {}", hf.repo);
            self.fetch_blob(&meta, &blob, file)
                .with_context(|| format!("{hf}: cannot download {file}"))?;
        }
        drop(lock);
        link_into_snapshot(&repo_dir, &meta.commit, file, &meta.etag)
    }

    fn file_meta(&self, hf: &HfRef, commit: &str, file: &str) -> Result<FileMeta> {
        let mut url = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            hf.repo,
            quote(commit, false),
            quote(file, true)
        );
        for _ in 0..MAX_REDIRECTS {
            let response = match self
                .request(&self.meta, "HEAD", &url)
                .set("Accept-Encoding", "identity")
                .call()
            {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    return Err(status_error(hf, code, r, Some(file)));
                }
                Err(ureq::Error::Transport(t)) => bail!("{url}: {t}"),
            };
            let location = response.header("Location").map(str::to_string);
            // A relative redirect (a renamed repo) is followed for the metadata; an
            // absolute one (a large file on the CDN) carries the metadata itself.
            if let Some(loc) = &location
                && (300..400).contains(&response.status())
                && loc.starts_with('/')
            {
                url = format!("{}{loc}", self.endpoint);
                continue;
            }
            let header = |name: &str| response.header(name).map(str::to_string);
            let etag = header("X-Linked-Etag")
                .or_else(|| header("ETag"))
                .with_context(|| format!("{url}: the answer has no ETag"))?;
            let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
            if etag.is_empty() || etag.contains(['/', '\\', '.']) {
                bail!("{url}: unusable ETag {etag:?}");
            }
            let size = header("X-Linked-Size")
                .or_else(|| header("Content-Length"))
                .and_then(|s| s.trim().parse().ok())
                .with_context(|| format!("{url}: the answer has no file size"))?;
            return Ok(FileMeta {
                commit: header("X-Repo-Commit").unwrap_or_else(|| commit.to_string()),
                etag,
                size,
                location: match location {
                    Some(loc) if (300..400).contains(&response.status()) => loc,
                    _ => url,
                },
            });
        }
        bail!("{url}: more than {MAX_REDIRECTS} redirects")
    }

    /// `blobs/<etag>` from `meta.location`, through `<etag>.incomplete`, resumed after a
    /// dropped connection.
    fn fetch_blob(&self, meta: &FileMeta, blob: &Path, file: &str) -> Result<()> {
        let partial = blob.with_extension("incomplete");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        if out.metadata()?.len() > meta.size {
            out.set_len(0)?;
        }
        let progress = progress_bar(meta.size, file);
        let mut last_error = None;
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 * u64::from(attempt)));
            }
            match self.fetch_range(meta, &mut out, &progress) {
                Ok(()) if out.metadata()?.len() == meta.size => {
                    last_error = None;
                    break;
                }
                Ok(()) => {
                    last_error = Some(anyhow!(
                        "the connection closed after {} of {} bytes",
                        out.metadata()?.len(),
                        meta.size
                    ))
                }
                Err(e) => last_error = Some(e),
            }
        }
        progress.finish_and_clear();
        if let Some(e) = last_error {
            return Err(e.context(format!(
                "{} tries from {} failed; {} keeps what arrived and the next try resumes",
                TRIES,
                meta.location,
                partial.display()
            )));
        }
        out.sync_all()?;
        drop(out);
        if meta.etag.len() == 64 && meta.etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            let digest = crate::digest::sha256_file(&partial)?;
            if digest != meta.etag.to_ascii_lowercase() {
                let _ = std::fs::remove_file(&partial);
                bail!(
                    "the download's SHA-256 is {digest}, the hub gives {} (removed; try again)",
                    meta.etag
                );
            }
        }
        std::fs::rename(&partial, blob)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), blob.display()))
    }

    /// One GET from what `out` already holds to the end.
    fn fetch_range(
        &self,
        meta: &FileMeta,
        out: &mut std::fs::File,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let have = out.metadata()?.len();
        progress.set_position(have);
        if have == meta.size {
            return Ok(());
        }
        let request = self
            .request(&self.data, "GET", &meta.location)
            .set("Accept-Encoding", "identity");
        let request = if have > 0 {
            request.set("Range", &format!("bytes={have}-"))
        } else {
            request
        };
        let response = request.call().map_err(|e| anyhow!("{e}"))?;
        if response.status() != 206 && have > 0 {
            // The server ignored the range: start again.
            out.set_len(0)?;
            out.seek(std::io::SeekFrom::Start(0))?;
        }
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ) =>
                {
                    bail!(
                        "no data for {:?} (HF_HUB_DOWNLOAD_TIMEOUT) after {} of {} bytes",
                        self.download_timeout,
                        out.metadata()?.len(),
                        meta.size
                    )
                }
                Err(e) => return Err(e).context("the connection failed"),
            };
            out.write_all(&buf[..n])?;
            progress.inc(n as u64);
        }
        Ok(())
    }
}

/// The error for a refused request: gated/private (401, 403) and missing (404) repos or files.
fn status_error(
    hf: &HfRef,
    code: u16,
    response: ureq::Response,
    file: Option<&str>,
) -> anyhow::Error {
    let hub_code = response.header("X-Error-Code").unwrap_or("").to_string();
    let message = response.header("X-Error-Message").unwrap_or("").to_string();
    let detail = format!("HTTP {code} {hub_code} {message}")
        .trim()
        .to_string();
    match (code, file) {
        (401 | 403, _) => anyhow!(
            "{hf}: access to {} denied ({detail}); a private or gated repo needs HF_TOKEN \
             (a token from your account, after accepting the model's terms on its page)",
            hf.repo
        ),
        (404, Some(f)) if hub_code != "RepoNotFound" && hub_code != "RevisionNotFound" => {
            anyhow!("{hf}: the repo has no file {f} ({detail})")
        }
        (404, _) => anyhow!(
            "{hf}: no repo {} with revision {} ({detail}); check the name, or set HF_TOKEN if \
             it is private",
            hf.repo,
            hf.revision
        ),
        _ => anyhow!("{hf}: the hub answered {detail}"),
    }
}

fn progress_bar(size: u64, file: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(file.to_string());
    bar
}

fn blob_is_whole(blob: &Path, size: u64) -> bool {
    std::fs::metadata(blob).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// An exclusive lock held until dropped (flock: released by the kernel if the process dies).
struct Lock(std::fs::File);

fn lock(path: &Path) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(Lock(file))
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor locked in `lock`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `snapshots/<commit>/<file>` as a relative link to `blobs/<etag>`, made under a temporary
/// name and renamed into place.
fn link_into_snapshot(repo_dir: &Path, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
    let link = repo_dir.join("snapshots").join(commit).join(file);
    let parent = link.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let depth = file.matches('/').count() + 2;
    let target = format!("{}blobs/{etag}", "../".repeat(depth));
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(&target)) {
        return Ok(link);
    }
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("cannot create link {}", tmp.display()))?;
    std::fs::rename(&tmp, &link)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), link.display()))?;
    Ok(link)
}

/// `refs/<revision>` holding `commit`, written atomically (a branch or tag; not for a sha).
pub fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    let parent = path.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".ref.{}.tmp", std::process::id()));
    std::fs::write(&tmp, commit).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}
