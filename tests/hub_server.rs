//! Downloads from a hub stand-in on 127.0.0.1 (`HF_ENDPOINT` points at it) serving the tiny
//! random models in the layouts of winter.toml's four repos, extra files included: what a run
//! fetches, and how a dropped connection, a stalled server, 401/404, a killed download and two
//! processes fetching at once end.
mod common;
mod hub_server {
    pub mod stand_in;
}

use hub_server::stand_in::{Fault, Repo, StandIn};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = "SG161222/Realistic_Vision_V5.1_noVAE";
const VAE: &str = "stabilityai/sd-vae-ft-mse";
const ADAPTERS: &str = "h94/IP-Adapter";
const SCORER: &str = "openai/clip-vit-large-patch14";
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const TOKEN: &str = "hf_test_token";

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(rel).display()))
}

/// Every file under `dir` as (relative path, content).
fn files_under(dir: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().is_dir() {
            out.extend(files_under(&entry.path(), &rel));
        } else {
            out.push((rel, std::fs::read(entry.path()).unwrap()));
        }
    }
    out
}

fn junk(what: &str) -> Vec<u8> {
    format!("stand-in content of {what}")
        .repeat(64)
        .into_bytes()
}

/// The four repos with the tiny models in their real layouts, and files a run never needs.
fn repos() -> Vec<(&'static str, Repo)> {
    let tiny = common::tiny::tiny_models();
    let mut pipeline = files_under(&tiny.join("pipeline"), "");
    for extra in [
        "unet/diffusion_pytorch_model.bin",
        "text_encoder/pytorch_model.bin",
        "safety_checker/model.safetensors",
        "safety_checker/pytorch_model.bin",
        "Realistic_Vision_V5.1_fp16-no-ema.safetensors",
        "Realistic_Vision_V5.1-inpainting.ckpt",
    ] {
        pipeline.push((extra.to_string(), junk(extra)));
    }
    pipeline.push(("safety_checker/config.json".into(), b"{}".to_vec()));
    pipeline.push((
        "feature_extractor/preprocessor_config.json".into(),
        b"{}".to_vec(),
    ));
    pipeline.push(("README.md".into(), b"# stand-in".to_vec()));

    let vae_dir = tiny.join("pipeline/vae");
    let vae = vec![
        ("config.json".to_string(), read(&vae_dir, "config.json")),
        (
            "diffusion_pytorch_model.safetensors".to_string(),
            read(&vae_dir, "diffusion_pytorch_model.safetensors"),
        ),
        ("diffusion_pytorch_model.bin".to_string(), junk("vae .bin")),
        ("README.md".to_string(), b"# vae".to_vec()),
    ];

    let mut adapters = vec![
        (
            "models/ip-adapter_sd15.safetensors".to_string(),
            read(&tiny, "ip-adapter_sd15.safetensors"),
        ),
        (
            "models/ip-adapter-plus_sd15.safetensors".to_string(),
            read(&tiny, "ip-adapter-plus_sd15.safetensors"),
        ),
    ];
    for (rel, content) in files_under(&tiny.join("image_encoder"), "models/image_encoder") {
        adapters.push((rel, content));
    }
    for extra in [
        "models/ip-adapter_sd15.bin",
        "models/ip-adapter-plus-face_sd15.safetensors",
        "models/image_encoder/pytorch_model.bin",
        "sdxl_models/ip-adapter_sdxl.safetensors",
    ] {
        adapters.push((extra.to_string(), junk(extra)));
    }
    adapters.push((
        "sdxl_models/image_encoder/config.json".into(),
        b"{}".to_vec(),
    ));

    let mut scorer = files_under(&tiny.join("scorer"), "");
    for extra in ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"] {
        scorer.push((extra.to_string(), junk(extra)));
    }
    vec![
        (PIPELINE, Repo::new(PIPELINE, pipeline)),
        (VAE, Repo::new(VAE, vae)),
        (ADAPTERS, Repo::new(ADAPTERS, adapters)),
        (SCORER, Repo::new(SCORER, scorer)),
    ]
}

/// winter.toml's models, on the tiny sizes: two images made by the pipeline, four cells.
fn tiny_winter(dir: &Path) -> PathBuf {
    let path = dir.join("winter-tiny.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[experiment]
name = "winter-tiny"
description = "winter.toml's models, served by the hub stand-in"

[models]
pipeline = "hf:{PIPELINE}"
vae = "hf:{VAE}"
ip_adapter = {{ base = "hf:{ADAPTERS}/models/ip-adapter_sd15.safetensors", plus = "hf:{ADAPTERS}/models/ip-adapter-plus_sd15.safetensors" }}
image_encoder = "hf:{ADAPTERS}/models/image_encoder"
scorer = "hf:{SCORER}"

[images.house]
generate = {{ prompt = "a house with a green lawn", seed = 11, steps = 2 }}

[images.lawn]
generate = {{ prompt = "a green lawn", seed = 12, steps = 2 }}

[defaults]
steps = 2
scheduler = "ddim"
size = 64
dtype = "fp32"
positive_image = "house"
negative_image = "lawn"
seeds = {{ count = 1, base = 1000 }}

[grid]
negative = ["none", "image"]
weight = "0.5-1 (+0.5)"

[scoring]
targets = ["a house in winter", "a house with a green lawn"]
positive_reference = "house"
negative_reference = "lawn"

[plots]
rows = "negative"
cols = "weight"
curve_x = "weight"
"#
        ),
    )
    .unwrap();
    path
}

fn negimg(hub: &StandIn, home: &Path, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(common::negimg_bin());
    cmd.args(args).current_dir(home.parent().unwrap());
    for var in [
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", home)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("NO_PROXY", "127.0.0.1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn output(mut cmd: Command) -> (bool, String, Duration) {
    let start = Instant::now();
    let out = cmd.output().expect("cannot run negimg");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, start.elapsed())
}

/// The snapshot folder of `repo` in the cache under `home`, from refs/main.
fn snapshot(home: &Path, repo: &str) -> PathBuf {
    let dir = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let sha = std::fs::read_to_string(dir.join("refs/main")).unwrap();
    dir.join("snapshots").join(sha.trim())
}

/// Every snapshot file of `repo` is whole: its content is the repo's.
fn assert_snapshot_matches(hub: &StandIn, home: &Path, repo: &str) -> Vec<String> {
    let snap = snapshot(home, repo);
    let mut names = vec![];
    for (rel, content) in files_under(&snap, "") {
        assert_eq!(
            &content,
            hub.repo(repo).files[&rel].as_slice(),
            "{repo}/{rel} differs from the hub's"
        );
        names.push(rel);
    }
    names
}

#[test]
fn hub_run_of_tiny_winter_downloads_exactly_the_needed_files() {
    let dir = common::scratch("hub_server_run");
    let home = dir.join("hf_home");
    let hub = StandIn::start(repos(), TOKEN);
    let exp = tiny_winter(&dir);
    let results = dir.join("results");
    let cmd = negimg(
        &hub,
        &home,
        &[
            "--device",
            "cpu",
            "run",
            exp.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
        &[],
    );
    let (ok, text, _) = output(cmd);
    assert!(ok, "{text}");
    let tiny_pipeline: Vec<String> = files_under(&common::tiny::tiny_models().join("pipeline"), "")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let scorer: Vec<String> = files_under(&common::tiny::tiny_models().join("scorer"), "")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut expected: Vec<(String, String)> = vec![];
    expected.extend(
        tiny_pipeline
            .iter()
            .map(|f| (PIPELINE.to_string(), f.clone())),
    );
    expected.extend(
        ["config.json", "diffusion_pytorch_model.safetensors"]
            .iter()
            .map(|f| (VAE.to_string(), f.to_string())),
    );
    expected.extend(
        [
            "models/ip-adapter_sd15.safetensors",
            "models/ip-adapter-plus_sd15.safetensors",
            "models/image_encoder/config.json",
            "models/image_encoder/model.safetensors",
        ]
        .iter()
        .map(|f| (ADAPTERS.to_string(), f.to_string())),
    );
    expected.extend(scorer.iter().map(|f| (SCORER.to_string(), f.clone())));
    expected.sort();
    assert_eq!(hub.downloaded(), expected, "downloaded files\n{text}");
    for repo in [PIPELINE, VAE, ADAPTERS, SCORER] {
        let mut in_cache = assert_snapshot_matches(&hub, &home, repo);
        in_cache.sort();
        let mut wanted: Vec<String> = expected
            .iter()
            .filter(|(r, _)| r == repo)
            .map(|(_, f)| f.clone())
            .collect();
        wanted.sort();
        assert_eq!(in_cache, wanted, "{repo} snapshot");
    }
    // Every large file came from the CDN host, none with the token.
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.host == "cdn"));
    assert!(seen.iter().all(|s| s.host == "hub" || !s.authorized));
    let runs = results.join("winter-tiny");
    assert!(
        std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .any(|e| e.path().join("records.csv").is_file()),
        "no run with records.csv in {}\n{text}",
        runs.display()
    );
    // A second run finds everything in the cache: only listings, no content.
    let before = hub.seen().len();
    let cmd = negimg(
        &hub,
        &home,
        &["models", "fetch", exp.to_str().unwrap()],
        &[],
    );
    let (ok, text, _) = output(cmd);
    assert!(ok, "{text}");
    assert!(
        hub.seen()[before..]
            .iter()
            .all(|s| s.method != "GET" || s.path.starts_with("/api/")),
        "{:?}",
        &hub.seen()[before..]
    );
}

/// An experiment with only the models (`models fetch` reads no more).
fn models_only(dir: &Path, pipeline_repo: &str) -> PathBuf {
    let path = dir.join("models.toml");
    std::fs::write(
        &path,
        format!(
            "[models]\npipeline = \"hf:{pipeline_repo}\"\n\
             image_encoder = \"hf:{ADAPTERS}/models/image_encoder\"\n"
        ),
    )
    .unwrap();
    path
}

fn fetch(hub: &StandIn, home: &Path, exp: &Path, env: &[(&str, &str)]) -> Command {
    negimg(hub, home, &["models", "fetch", exp.to_str().unwrap()], env)
}

#[test]
fn hub_dropped_connection_is_resumed_and_the_file_is_whole() {
    let dir = common::scratch("hub_server_drop");
    let home = dir.join("hf_home");
    let hub = StandIn::start(repos(), TOKEN);
    hub.fault(PIPELINE, UNET, Fault::DropHalfwayOnce);
    let (ok, text, _) = output(fetch(&hub, &home, &models_only(&dir, PIPELINE), &[]));
    assert!(ok, "{text}");
    assert_snapshot_matches(&hub, &home, PIPELINE);
    let size = hub.repo(PIPELINE).files[UNET].len();
    let resumed: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.host == "cdn" && s.range.as_deref() == Some(&format!("bytes={}-", size / 2)))
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "a second GET from byte {}: {:?}",
        size / 2,
        hub.seen()
    );
}

#[test]
fn hub_stalled_server_fails_in_bounded_time_naming_the_file() {
    let dir = common::scratch("hub_server_stall");
    let home = dir.join("hf_home");
    let hub = StandIn::start(repos(), TOKEN);
    hub.fault(PIPELINE, UNET, Fault::Stall);
    let env = [("HF_HUB_DOWNLOAD_TIMEOUT", "1")];
    let (ok, text, took) = output(fetch(&hub, &home, &models_only(&dir, PIPELINE), &env));
    assert!(!ok, "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        text.contains(UNET) && text.contains("no data for") && text.contains(PIPELINE),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let repo_dir = home.join("hub/models--SG161222--Realistic_Vision_V5.1_noVAE");
    let sha = &hub.repo(PIPELINE).sha;
    assert!(!repo_dir.join("snapshots").join(sha).join(UNET).exists());
}

#[test]
fn hub_killed_download_leaves_no_partial_file_in_snapshots() {
    let dir = common::scratch("hub_server_kill");
    let home = dir.join("hf_home");
    let hub = StandIn::start(repos(), TOKEN);
    hub.fault(PIPELINE, UNET, Fault::Slow(Duration::from_millis(100)));
    let exp = models_only(&dir, PIPELINE);
    let mut child = fetch(&hub, &home, &exp, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let blobs = home.join("hub/models--SG161222--Realistic_Vision_V5.1_noVAE/blobs");
    let partial = blobs.join(format!("{}.incomplete", sha_of(&hub, UNET)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0) {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let snap = home
        .join("hub/models--SG161222--Realistic_Vision_V5.1_noVAE/snapshots")
        .join(&hub.repo(PIPELINE).sha);
    assert!(!snap.join(UNET).exists(), "a partial UNet in snapshots/");
    for (rel, content) in files_under(&snap, "") {
        assert_eq!(&content, hub.repo(PIPELINE).files[&rel].as_slice(), "{rel}");
    }
    // The next fetch resumes from what arrived.
    let kept = std::fs::metadata(&partial).unwrap().len();
    hub.clear_faults();
    let (ok, text, _) = output(fetch(&hub, &home, &exp, &[]));
    assert!(ok, "{text}");
    assert_snapshot_matches(&hub, &home, PIPELINE);
    let range = format!("bytes={kept}-");
    assert!(
        hub.seen()
            .iter()
            .any(|s| s.range.as_deref() == Some(range.as_str())),
        "no GET resuming at {kept}: {:?}",
        hub.seen()
    );
}

#[test]
fn hub_gated_and_missing_repos_give_their_errors() {
    let dir = common::scratch("hub_server_status");
    let home = dir.join("hf_home");
    let mut all = repos();
    for (name, repo) in &mut all {
        repo.gated = *name == PIPELINE;
    }
    let hub = StandIn::start(all, TOKEN);
    let exp = models_only(&dir, PIPELINE);
    let (ok, text, _) = output(fetch(&hub, &home, &exp, &[]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("denied") && text.contains("HF_TOKEN") && text.contains("GatedRepo"),
        "{text}"
    );
    // With the token the gated repo downloads; the token never goes to the CDN host.
    let (ok, text, _) = output(fetch(&hub, &home, &exp, &[("HF_TOKEN", TOKEN)]));
    assert!(ok, "{text}");
    assert_snapshot_matches(&hub, &home, PIPELINE);
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.host == "hub" && s.authorized));
    assert!(seen.iter().all(|s| s.host == "hub" || !s.authorized));

    let missing = models_only(&dir, "nobody/no-such-model");
    let (ok, text, _) = output(fetch(&hub, &home, &missing, &[]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("no repo nobody/no-such-model") && text.contains("RepoNotFound"),
        "{text}"
    );
}

#[test]
fn hub_two_fetches_at_once_leave_a_consistent_cache() {
    let dir = common::scratch("hub_server_concurrent");
    let home = dir.join("hf_home");
    let hub = StandIn::start(repos(), TOKEN);
    // Slow enough that the two processes overlap on the same blob.
    hub.fault(PIPELINE, UNET, Fault::Slow(Duration::from_millis(5)));
    let exp = models_only(&dir, PIPELINE);
    let children: Vec<_> = (0..2)
        .map(|_| {
            fetch(&hub, &home, &exp, &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = assert_snapshot_matches(&hub, &home, PIPELINE);
    assert!(names.contains(&UNET.to_string()), "{names:?}");
    let blobs = home.join("hub/models--SG161222--Realistic_Vision_V5.1_noVAE/blobs");
    for entry in std::fs::read_dir(&blobs).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".incomplete"), "left over: {name}");
    }
    // The lock made the second process wait and reuse the first one's blob.
    let unet_gets = hub
        .seen()
        .iter()
        .filter(|s| s.host == "cdn" && s.method == "GET" && s.path.contains(&sha_of(&hub, UNET)))
        .count();
    assert_eq!(unet_gets, 1, "{:?}", hub.seen());
}

fn sha_of(hub: &StandIn, file: &str) -> String {
    use sha2::Digest;
    hub_server::stand_in::hex(&sha2::Sha256::digest(
        hub.repo(PIPELINE).files[file].as_slice(),
    ))
}

#[test]
fn hub_fetches_bin_only_for_folders_without_safetensors_and_loads_it() {
    let dir = common::scratch("hub_server_bin");
    let home = dir.join("hf_home");
    let tiny = common::tiny::tiny_models();
    // A pickled UNet as older repos ship it: torch.save of the state dict.
    let bin = dir.join("unet.bin");
    let code = "import sys, torch; from safetensors.torch import load_file; \
                torch.save(load_file(sys.argv[1]), sys.argv[2])";
    let out = Command::new(common::python())
        .args(["-c", code])
        .arg(tiny.join("pipeline").join(UNET))
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = repos();
    let pipeline = &mut all.iter_mut().find(|(n, _)| *n == PIPELINE).unwrap().1;
    pipeline.files.remove(UNET);
    pipeline.files.insert(
        "unet/diffusion_pytorch_model.bin".into(),
        std::sync::Arc::new(std::fs::read(&bin).unwrap()),
    );
    let hub = StandIn::start(all, TOKEN);
    let exp = models_only(&dir, PIPELINE);
    let (ok, text, _) = output(fetch(&hub, &home, &exp, &[]));
    assert!(ok, "{text}");
    let got: Vec<String> = hub
        .downloaded()
        .into_iter()
        .filter(|(r, f)| {
            r == PIPELINE && (f.starts_with("unet/") || f.starts_with("text_encoder/"))
        })
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        got,
        [
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin"
        ]
    );
    // `models check` loads it through a safetensors copy kept outside blobs/ and snapshots/.
    let converted = dir.join("converted");
    let check = negimg(
        &hub,
        &home,
        &["models", "check", "--no-hash", exp.to_str().unwrap()],
        &[
            ("NEGIMG_CONVERTED", converted.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    let (ok, text, _) = output(check);
    assert!(ok, "{text}");
    assert!(text.contains("every tensor is present"), "{text}");
    let copies: Vec<_> = files_under(&converted, "")
        .into_iter()
        .filter(|(p, _)| p.ends_with(".safetensors"))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "{:?}",
        copies.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    let in_cache = files_under(&home.join("hub"), "");
    assert!(
        !in_cache
            .iter()
            .any(|(p, _)| p.contains("unet/") && p.ends_with(".safetensors")),
        "a converted file in the hub cache"
    );
}

/// `plan` of an SDXL pipeline named only by its hub id (no SDXL adapter name, no
/// micro-conditioning key) fetches that repo's model_index.json and unet/config.json alone and
/// counts the UNet on them (the printed figure is `unet_row_flops` on the served config);
/// offline with an empty cache it falls back to SD1.5's shapes and says why.
#[test]
fn hub_plan_counts_a_hub_pipeline_on_its_fetched_unet_config_alone() {
    use negimg::models::clip_vision::ClipVisionConfig;
    use negimg::models::ip_adapter::typical_tokens;
    use negimg::models::unet::UNet2DConditionConfig;
    use negimg::models::unet_flops::{Context, unet_row_flops};
    let dir = common::scratch("hub_server_plan");
    let repo = "example/some-sdxl";
    let pipeline = common::tiny::tiny_sdxl_models().join("pipeline");
    let hub = StandIn::start(
        vec![(repo, Repo::new(repo, files_under(&pipeline, "")))],
        TOKEN,
    );
    std::fs::write(
        dir.join("plan.toml"),
        format!(
            "[experiment]\nname = \"plan\"\n[models]\npipeline = \"hf:{repo}\"\n\
             ip_adapter = {{ base = \"hf:example/adapters/adapter.safetensors\" }}\n\
             image_encoder = \"hf:example/encoder\"\n\
             [defaults]\nsize = 64\nsteps = 2\nseeds = [1]\nnegative = \"none\"\n"
        ),
    )
    .unwrap();
    let plan = |home: &Path, env: &[(&str, &str)]| {
        let args = ["--device", "cpu", "plan", "plan.toml", "--no-calibrate"];
        let (ok, text, _) = output(negimg(&hub, home, &args, env));
        assert!(ok, "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("estimate on "))
            .unwrap_or_else(|| panic!("no estimate in:\n{text}"))
            .to_string();
        let figure: f64 = line
            .split_once("UNet row-step at 64x64: ")
            .and_then(|(_, rest)| rest.split_once(" FLOP"))
            .and_then(|(x, _)| x.parse().ok())
            .unwrap_or_else(|| panic!("no figure in: {line}"));
        (line, figure)
    };
    let (line, figure) = plan(&dir.join("hf_home"), &[]);
    assert!(
        line.contains("UNet FLOPs counted from") && line.contains("unet/config.json"),
        "{line}"
    );
    let unet = UNet2DConditionConfig::from_json_file(&pipeline.join("unet/config.json")).unwrap();
    let ctx = Context {
        text_tokens: 77,
        ip_tokens: typical_tokens(
            negimg::params::AdapterKind::Base,
            ClipVisionConfig::vit_h().num_positions(),
        ),
    };
    let want = unet_row_flops(&unet, 8, 8, ctx);
    assert!(
        (figure - want).abs() / want < 1e-3,
        "{figure:e} vs {want:e}"
    );
    let mut fetched: Vec<String> = hub.downloaded().into_iter().map(|(_, f)| f).collect();
    fetched.sort();
    assert_eq!(fetched, ["model_index.json", "unet/config.json"]);

    let (line, _) = plan(&dir.join("hf_home_offline"), &[("HF_HUB_OFFLINE", "1")]);
    assert!(
        line.contains("unet config not on disk") && line.contains("`sd15` preset's shapes"),
        "{line}"
    );
}
