//! `hf:` references resolved from a Hugging Face cache in huggingface_hub's snapshot layout
//! (refs/, snapshots/<sha>/ links into blobs/), and the errors when files are missing.
mod common;

use common::hub_cache::{SHA, add_to_cache, files_under};
use negimg::weights::hub::{Component, resolve_cached};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIPELINE: &[(&str, &[u8])] = &[
    ("model_index.json", b"{}"),
    ("unet/config.json", b"{}"),
    (
        "unet/diffusion_pytorch_model.fp16.safetensors",
        b"unet fp16",
    ),
    ("vae/config.json", b"{}"),
    ("vae/diffusion_pytorch_model.safetensors", b"vae"),
    ("text_encoder/config.json", b"{}"),
    ("text_encoder/model.safetensors", b"text"),
    ("tokenizer/vocab.json", b"{}"),
    ("tokenizer/merges.txt", b""),
    ("scheduler/scheduler_config.json", b"{}"),
];

#[test]
fn hub_snapshot_cache_resolves_offline() {
    let dir = common::scratch("hub_resolve");
    let hub = dir.join("hub");
    let snapshot = add_to_cache(&hub, "org/tiny-pipeline", PIPELINE);
    let adapters = add_to_cache(
        &hub,
        "org/adapters",
        &[
            ("models/ip-adapter_sd15.safetensors", b"adapter"),
            ("models/image_encoder/config.json", b"{}"),
            ("models/image_encoder/model.safetensors", b"encoder"),
        ],
    );
    let base = dir.as_path();
    let got = resolve_cached("hf:org/tiny-pipeline", base, Component::Pipeline, &hub).unwrap();
    assert_eq!(got, snapshot.join(""));
    assert!(
        got.join("unet/diffusion_pytorch_model.fp16.safetensors")
            .is_file()
    );
    // Auto finds the pipeline from model_index.json.
    assert_eq!(
        resolve_cached("hf:org/tiny-pipeline", base, Component::Auto, &hub).unwrap(),
        got
    );

    let adapter = "hf:org/adapters/models/ip-adapter_sd15.safetensors";
    let file = resolve_cached(adapter, base, Component::File, &hub).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"adapter");
    let encoder = resolve_cached(
        "hf:org/adapters/models/image_encoder",
        base,
        Component::Auto,
        &hub,
    );
    assert_eq!(encoder.unwrap(), adapters.join("models/image_encoder"));

    // A commit sha as revision, and a tag through refs/.
    let by_sha = format!("hf:org/adapters/models/ip-adapter_sd15.safetensors@{SHA}");
    assert_eq!(
        resolve_cached(&by_sha, base, Component::File, &hub).unwrap(),
        file
    );
    std::fs::write(hub.join("models--org--adapters/refs/v1"), SHA).unwrap();
    let by_tag = "hf:org/adapters/models/ip-adapter_sd15.safetensors@v1";
    assert_eq!(
        resolve_cached(by_tag, base, Component::File, &hub).unwrap(),
        file
    );

    // Local paths are relative to the base folder and must exist.
    std::fs::write(dir.join("local.safetensors"), b"x").unwrap();
    let local = resolve_cached("local.safetensors", base, Component::File, &hub).unwrap();
    assert_eq!(local, dir.join("local.safetensors"));
    let msg = format!(
        "{:#}",
        resolve_cached("nope.safetensors", base, Component::File, &hub).unwrap_err()
    );
    assert!(
        msg.contains("nope.safetensors") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn hub_missing_file_error_names_repo_file_and_command() {
    let dir = common::scratch("hub_missing");
    let hub = dir.join("hub");
    add_to_cache(&hub, "org/adapters", &[("models/other.safetensors", b"x")]);
    let reference = "hf:org/adapters/models/ip-adapter_sd15.safetensors";
    let msg = format!(
        "{:#}",
        resolve_cached(reference, &dir, Component::File, &hub).unwrap_err()
    );
    for part in [
        "org/adapters",
        "models/ip-adapter_sd15.safetensors",
        "hf download org/adapters models/ip-adapter_sd15.safetensors",
        hub.to_str().unwrap(),
    ] {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
    // A repo never downloaded: the command names the files to include.
    let msg = format!(
        "{:#}",
        resolve_cached("hf:org/never", &dir, Component::Pipeline, &hub).unwrap_err()
    );
    assert!(
        msg.contains("hf download org/never --include") && msg.contains("unet/*"),
        "{msg}"
    );
}

#[test]
fn hub_incomplete_snapshot_lists_missing_files() {
    let dir = common::scratch("hub_incomplete");
    let hub = dir.join("hub");
    // The unet weights were never downloaded, and the vae's blob is gone (dangling link).
    let partial: Vec<(&str, &[u8])> = PIPELINE
        .iter()
        .filter(|(p, _)| !p.starts_with("unet/diffusion"))
        .copied()
        .collect();
    let snapshot = add_to_cache(&hub, "org/partial", &partial);
    let vae = snapshot.join("vae/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(std::fs::canonicalize(&vae).unwrap()).unwrap();
    let err = resolve_cached("hf:org/partial", &dir, Component::Pipeline, &hub).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("org/partial") && msg.contains("incomplete") && msg.contains("unet"),
        "{msg}"
    );
    assert!(msg.contains("hf download org/partial --include"), "{msg}");
    // With the unet weights there, the dangling vae link is the one missing file.
    let blob = snapshot.join("../../blobs/unet");
    std::fs::write(&blob, b"unet").unwrap();
    std::os::unix::fs::symlink(
        "../../../blobs/unet",
        snapshot.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let msg = format!(
        "{:#}",
        resolve_cached("hf:org/partial", &dir, Component::Pipeline, &hub).unwrap_err()
    );
    assert!(
        msg.contains("files missing: vae/diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
}

/// An experiment naming the real default models.
fn real_models_experiment(dir: &Path) -> PathBuf {
    let path = dir.join("real.toml");
    std::fs::write(
        &path,
        r#"
[models]
pipeline = "hf:SG161222/Realistic_Vision_V5.1_noVAE"
vae = "hf:stabilityai/sd-vae-ft-mse"
ip_adapter = { base = "hf:h94/IP-Adapter/models/ip-adapter_sd15.safetensors", plus = "hf:h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors" }
image_encoder = "hf:h94/IP-Adapter/models/image_encoder"
scorer = "hf:openai/clip-vit-large-patch14"
"#,
    )
    .unwrap();
    path
}

fn run_negimg(
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
    offline: bool,
) -> (i32, String, Duration) {
    let mut cmd = std::process::Command::new(common::negimg_bin());
    cmd.args(args).current_dir(cwd);
    for var in [
        "HF_HOME",
        "XDG_CACHE_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.output().expect("cannot run negimg");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, start.elapsed())
}

#[test]
fn hub_offline_empty_cache_fails_fast_with_instructions() {
    let dir = common::scratch("hub_offline_cli");
    let exp = real_models_experiment(&dir);
    let home = dir.join("hf_home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [("HF_HOME", home.to_str().unwrap())];
    for command in ["check", "fetch"] {
        let (code, out, took) = run_negimg(
            &["models", command, exp.to_str().unwrap()],
            &dir,
            &env,
            true,
        );
        assert_ne!(code, 0, "{out}");
        assert!(
            took < Duration::from_secs(10),
            "models {command} took {took:?}"
        );
        assert!(!out.contains("panicked"), "{out}");
        for part in [
            "HF_HUB_OFFLINE",
            "h94/IP-Adapter",
            "models/ip-adapter_sd15.safetensors",
            "hf download",
            "SG161222/Realistic_Vision_V5.1_noVAE",
        ] {
            assert!(
                out.contains(part),
                "models {command}: {part:?} not in:\n{out}"
            );
        }
    }
}

#[test]
fn hub_offline_hints_name_the_component_files_and_the_experiment() {
    let dir = common::scratch("hub_offline_hints");
    let exp = real_models_experiment(&dir);
    let home = dir.join("hf_home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [("HF_HOME", home.to_str().unwrap())];
    let (code, out, _) = run_negimg(
        &["models", "fetch", exp.to_str().unwrap()],
        &dir,
        &env,
        true,
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("<experiment.toml>"), "{out}");
    assert!(
        out.contains(&format!("negimg models fetch {}", exp.display())),
        "{out}"
    );
    // `negimg score` with a scorer from the hub: no experiment to name, and the files are a
    // model folder's, not a pipeline's.
    let (code, out, _) = run_negimg(
        &[
            "score",
            dir.to_str().unwrap(),
            "--scorer",
            "hf:openai/clip-vit-large-patch14",
        ],
        &dir,
        &env,
        true,
    );
    assert_ne!(code, 0, "{out}");
    let hint = out
        .lines()
        .find(|l| l.contains("hf download openai/clip-vit-large-patch14"))
        .unwrap_or_else(|| panic!("no hf download hint in:\n{out}"));
    assert!(
        hint.contains("\"*.safetensors\"") && hint.contains("\"*.json\""),
        "{hint}"
    );
    assert!(!out.contains("unet/*") && !out.contains("vae/*"), "{out}");
    assert!(!out.contains("<experiment.toml>"), "{out}");
}

#[test]
fn hub_cache_follows_xdg_cache_home_as_huggingface_hub() {
    let dir = common::scratch("hub_xdg");
    let xdg = dir.join("xdg");
    add_to_cache(
        &xdg.join("huggingface/hub"),
        "org/adapters",
        &[("models/ip-adapter_sd15.safetensors", b"adapter")],
    );
    let exp = dir.join("xdg.toml");
    std::fs::write(
        &exp,
        "[models]\npipeline = \"hf:org/adapters/models/ip-adapter_sd15.safetensors\"\n\
         image_encoder = \"hf:org/adapters/models/ip-adapter_sd15.safetensors\"\n",
    )
    .unwrap();
    let args = ["models", "check", "--no-load", exp.to_str().unwrap()];
    let env = [("XDG_CACHE_HOME", xdg.to_str().unwrap())];
    let (code, out, _) = run_negimg(&args, &dir, &env, true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(xdg.join("huggingface/hub").to_str().unwrap()),
        "{out}"
    );
    // HF_HOME wins over XDG_CACHE_HOME, HF_HUB_CACHE over both.
    let other = dir.join("other");
    let env = [
        ("XDG_CACHE_HOME", xdg.to_str().unwrap()),
        ("HF_HOME", other.to_str().unwrap()),
    ];
    let (code, out, _) = run_negimg(&args, &dir, &env, true);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(other.join("hub").to_str().unwrap()), "{out}");
    let xdg_hub = xdg.join("huggingface/hub");
    let env = [
        ("HF_HOME", other.to_str().unwrap()),
        ("HF_HUB_CACHE", xdg_hub.to_str().unwrap()),
    ];
    let (code, out, _) = run_negimg(&args, &dir, &env, true);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn hub_unreachable_network_fails_fast_without_offline_flag() {
    let dir = common::scratch("hub_unreachable_cli");
    let exp = real_models_experiment(&dir);
    let home = dir.join("hf_home");
    std::fs::create_dir_all(&home).unwrap();
    // A refused connection (a port just closed) and a listener that accepts and never
    // answers: neither may hang. Only loopback is contacted, so this behaves the same on a
    // machine with internet.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // Accepted connections are kept open and never read from or written to.
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    // The silent one fails after HF_HUB_ETAG_TIMEOUT (huggingface_hub's variable).
    for endpoint in [
        format!("http://127.0.0.1:{closed_port}"),
        format!("http://127.0.0.1:{silent_port}"),
    ] {
        let endpoint = endpoint.as_str();
        let env = [
            ("HF_HOME", home.to_str().unwrap()),
            ("HF_ENDPOINT", endpoint),
            ("HF_HUB_ETAG_TIMEOUT", "3"),
        ];
        let (code, out, took) = run_negimg(
            &["models", "fetch", exp.to_str().unwrap()],
            &dir,
            &env,
            false,
        );
        assert_ne!(code, 0, "{out}");
        assert!(took < Duration::from_secs(10), "{endpoint}: took {took:?}");
        assert!(
            out.contains("cannot be reached") && out.contains("hf download"),
            "{out}"
        );
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn hub_models_check_tiny_models_from_cache() {
    let dir = common::scratch("hub_check_tiny");
    let made = dir.join("made");
    let out = common::negimg(
        &[
            "models",
            "init-random",
            "--preset",
            "tiny",
            "--out",
            made.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = vec![];
    files_under(&made, "", &mut files);
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let home = dir.join("hf_home");
    let snapshot = add_to_cache(&home.join("hub"), "negimg/tiny", &borrowed);
    let exp = dir.join("tiny.toml");
    std::fs::write(
        &exp,
        r#"
[models]
pipeline = "hf:negimg/tiny/pipeline"
ip_adapter = { base = "hf:negimg/tiny/ip-adapter_sd15.safetensors", plus = "hf:negimg/tiny/ip-adapter-plus_sd15.safetensors" }
image_encoder = "hf:negimg/tiny/image_encoder"
scorer = "hf:negimg/tiny/scorer"
"#,
    )
    .unwrap();
    let env = [("HF_HOME", home.to_str().unwrap())];
    let (code, text, _) = run_negimg(
        &["models", "check", exp.to_str().unwrap()],
        &dir,
        &env,
        true,
    );
    assert_eq!(code, 0, "{text}");
    use sha2::Digest;
    let adapter = std::fs::read(snapshot.join("ip-adapter_sd15.safetensors")).unwrap();
    let digest: String = sha2::Sha256::digest(&adapter)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(text.contains(&digest), "sha256 {digest} not in:\n{text}");
    assert!(text.contains("every tensor is present"), "{text}");

    // A truncated UNet blob is found by `check`, naming the file.
    let unet =
        std::fs::canonicalize(snapshot.join("pipeline/unet/diffusion_pytorch_model.safetensors"))
            .unwrap();
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() - 100]).unwrap();
    let (code, text, _) = run_negimg(
        &["models", "check", "--no-hash", exp.to_str().unwrap()],
        &dir,
        &env,
        true,
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("truncated") && text.contains("diffusion_pytorch_model"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}
