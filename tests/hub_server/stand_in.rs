//! A Hugging Face hub stand-in on 127.0.0.1 for the download tests: the listing API, the
//! `resolve` URLs (small files served directly with an `ETag`, large LFS files redirected
//! with `X-Linked-Etag`/`X-Linked-Size` to a second "CDN" port, as huggingface.co does),
//! `Range` requests, `X-Repo-Commit`, `X-Error-Code` on 401/404, and faults injected per file.
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault for the next requests of one file's content.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// The first GET sends the headers and half the bytes, then closes the connection.
    DropHalfwayOnce,
    /// Every GET sends the headers, then nothing (until the process ends).
    Stall,
    /// Bodies go out in 16 KiB pieces with this pause between them.
    Slow(Duration),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// "hub" or "cdn".
    pub host: &'static str,
    pub method: String,
    pub path: String,
    /// The query string (the CDN's `repo=`).
    pub query: String,
    pub range: Option<String>,
    pub authorized: bool,
}

pub struct Repo {
    pub sha: String,
    pub files: BTreeMap<String, Arc<Vec<u8>>>,
    /// Answers 401 without a token.
    pub gated: bool,
}

impl Repo {
    pub fn new(seed: &str, files: Vec<(String, Vec<u8>)>) -> Repo {
        Repo {
            sha: hex(&sha2::Sha256::digest(seed.as_bytes()))[..40].to_string(),
            files: files.into_iter().map(|(p, c)| (p, Arc::new(c))).collect(),
            gated: false,
        }
    }
}

struct State {
    repos: HashMap<String, Repo>,
    /// sha256 -> content, for the CDN.
    blobs: HashMap<String, Arc<Vec<u8>>>,
    /// sha256 -> fault.
    faults: Mutex<HashMap<String, Fault>>,
    seen: Mutex<Vec<Seen>>,
    cdn: String,
    token: String,
}

pub struct StandIn {
    state: Arc<State>,
    pub endpoint: String,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Files git keeps in LFS on the hub (and so redirected to the CDN).
fn is_lfs(path: &str) -> bool {
    [".safetensors", ".bin", ".ckpt", ".h5", ".msgpack", ".pt"]
        .iter()
        .any(|e| path.ends_with(e))
}

impl StandIn {
    /// Serves `repos` (by "org/name"); a gated repo accepts `Bearer <token>`.
    pub fn start(repos: Vec<(&str, Repo)>, token: &str) -> StandIn {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        let mut blobs = HashMap::new();
        for (_, repo) in &repos {
            for content in repo.files.values() {
                blobs.insert(
                    hex(&sha2::Sha256::digest(content.as_slice())),
                    content.clone(),
                );
            }
        }
        let state = Arc::new(State {
            repos: repos.into_iter().map(|(n, r)| (n.to_string(), r)).collect(),
            blobs,
            faults: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            cdn: cdn_url,
            token: token.to_string(),
        });
        let endpoint = format!("http://{}", hub.local_addr().unwrap());
        for (listener, host) in [(hub, "hub"), (cdn, "cdn")] {
            let state = state.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = serve(&state, host, stream);
                    });
                }
            });
        }
        StandIn { state, endpoint }
    }

    /// Injects `fault` for the content of `file` in `repo`.
    pub fn fault(&self, repo: &str, file: &str, fault: Fault) {
        let content = &self.state.repos[repo].files[file];
        let sha = hex(&sha2::Sha256::digest(content.as_slice()));
        self.state.faults.lock().unwrap().insert(sha, fault);
    }

    pub fn clear_faults(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn repo(&self, name: &str) -> &Repo {
        &self.state.repos[name]
    }

    /// The repo files whose content was sent (a GET of the body on either host).
    pub fn downloaded(&self) -> Vec<(String, String)> {
        let mut by_sha = HashMap::new();
        for (name, repo) in &self.state.repos {
            for (path, content) in &repo.files {
                let sha = hex(&sha2::Sha256::digest(content.as_slice()));
                by_sha.insert((name.clone(), sha), (name.clone(), path.clone()));
            }
        }
        let mut out = vec![];
        for s in self.seen().iter().filter(|s| s.method == "GET") {
            let hit = if s.host == "cdn" {
                let repo = s.query.strip_prefix("repo=").unwrap_or("").to_string();
                let sha = s.path.strip_prefix("/blob/").unwrap_or("").to_string();
                by_sha.get(&(repo, sha)).cloned()
            } else {
                resolve_target(&s.path).map(|(r, _, f)| (r, f))
            };
            if let Some(hit) = hit
                && !out.contains(&hit)
            {
                out.push(hit);
            }
        }
        out.sort();
        out
    }
}

/// `/{org}/{name}/resolve/{rev}/{file}` split into repo, revision, file.
fn resolve_target(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    match parts.as_slice() {
        [org, name, "resolve", rev, file] => {
            Some((format!("{org}/{name}"), rev.to_string(), file.to_string()))
        }
        _ => None,
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Request {
        method,
        path,
        headers,
    })
}

fn serve(state: &State, host: &'static str, mut stream: TcpStream) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let (path, query) = (path.to_string(), query.to_string());
    let authorized = req.headers.get("authorization") == Some(&format!("Bearer {}", state.token));
    state.seen.lock().unwrap().push(Seen {
        host,
        method: req.method.clone(),
        path: path.clone(),
        query,
        range: req.headers.get("range").cloned(),
        authorized,
    });
    if host == "cdn" {
        let sha = path.strip_prefix("/blob/").unwrap_or("");
        return match state.blobs.get(sha) {
            Some(content) => send_content(state, &mut stream, &req, sha, content, &[]),
            None => send(&mut stream, 404, &[], b"no such blob"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let [org, name, "revision", rev] = parts.as_slice() else {
            return send(&mut stream, 404, &[], b"");
        };
        let repo = match find_repo(state, &format!("{org}/{name}"), rev, authorized) {
            Ok(repo) => repo,
            Err((code, headers)) => return send(&mut stream, code, &headers, b"{}"),
        };
        let siblings: Vec<serde_json::Value> = repo
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({
            "id": format!("{org}/{name}"),
            "sha": repo.sha,
            "siblings": siblings,
        });
        let json = ("Content-Type".to_string(), "application/json".to_string());
        return send(&mut stream, 200, &[json], body.to_string().as_bytes());
    }
    let Some((name, rev, file)) = resolve_target(&path) else {
        return send(&mut stream, 404, &[], b"");
    };
    let repo = match find_repo(state, &name, &rev, authorized) {
        Ok(repo) => repo,
        Err((code, headers)) => return send(&mut stream, code, &headers, b""),
    };
    let Some(content) = repo.files.get(&file) else {
        let code = header("X-Error-Code", "EntryNotFound");
        return send(&mut stream, 404, &[code], b"");
    };
    let sha = hex(&sha2::Sha256::digest(content.as_slice()));
    let commit = header("X-Repo-Commit", &repo.sha);
    if is_lfs(&file) {
        let headers = [
            commit,
            header("X-Linked-Etag", &format!("\"{sha}\"")),
            header("X-Linked-Size", &content.len().to_string()),
            header("ETag", &format!("\"{}\"", &sha[..40])),
            header("Location", &format!("{}/blob/{sha}?repo={name}", state.cdn)),
        ];
        return send(&mut stream, 302, &headers, b"");
    }
    // A small file: its git blob id as the ETag (any 40 hex digits serve here).
    let etag = header("ETag", &format!("\"{}\"", &sha[24..]));
    send_content(state, &mut stream, &req, &sha, content, &[commit, etag])
}

fn header(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

type Refusal = (u16, Vec<(String, String)>);

fn find_repo<'a>(
    state: &'a State,
    name: &str,
    rev: &str,
    authorized: bool,
) -> Result<&'a Repo, Refusal> {
    let Some(repo) = state.repos.get(name) else {
        return Err((404, vec![header("X-Error-Code", "RepoNotFound")]));
    };
    if repo.gated && !authorized {
        let msg = "Access to model is restricted. You must have access to it and be authenticated";
        return Err((
            401,
            vec![
                header("X-Error-Code", "GatedRepo"),
                header("X-Error-Message", msg),
            ],
        ));
    }
    if rev != "main" && rev != repo.sha {
        return Err((404, vec![header("X-Error-Code", "RevisionNotFound")]));
    }
    Ok(repo)
}

fn send(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(stream, code, headers, body.len())?;
    stream.write_all(body)
}

fn write_head(
    stream: &mut TcpStream,
    code: u16,
    headers: &[(String, String)],
    length: usize,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {code} {reason}\r\nContent-Length: {length}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Accept-Ranges: bytes\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

/// A file's bytes, the `Range` (`bytes=N-` or `bytes=N-M`) honoured, with the file's fault.
fn send_content(
    state: &State,
    stream: &mut TcpStream,
    req: &Request,
    sha: &str,
    content: &[u8],
    extra: &[(String, String)],
) -> std::io::Result<()> {
    let total = content.len();
    let (start, end) = match req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
    {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(total).min(total);
            if a >= total {
                let range = header("Content-Range", &format!("bytes */{total}"));
                return send(stream, 416, &[range], b"");
            }
            (a, b)
        }
        None => (0, total),
    };
    let mut headers = extra.to_vec();
    let code = if req.headers.contains_key("range") {
        let range = format!("bytes {start}-{}/{total}", end - 1);
        headers.push(header("Content-Range", &range));
        206
    } else {
        200
    };
    write_head(stream, code, &headers, end - start)?;
    if req.method == "HEAD" {
        return Ok(());
    }
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        let fault = faults.get(sha).copied();
        if fault == Some(Fault::DropHalfwayOnce) {
            faults.remove(sha);
        }
        fault
    };
    let body = &content[start..end];
    match fault {
        Some(Fault::Stall) => {
            stream.flush()?;
            std::thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        Some(Fault::DropHalfwayOnce) => {
            stream.write_all(&body[..body.len() / 2])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)
        }
        Some(Fault::Slow(pause)) => {
            for piece in body.chunks(16 << 10) {
                stream.write_all(piece)?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        None => stream.write_all(body),
    }
}
