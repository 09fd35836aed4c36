//! `negimg models check` loads through the loader `run` uses, so it fails where `run` fails.
mod common;

fn experiment(dir: &std::path::Path, base: &str, plus: &str) -> std::path::PathBuf {
    let tiny = common::tiny::tiny_models();
    let file = dir.join("check.toml");
    let text = format!(
        "[experiment]\nname = \"check\"\n[models]\npipeline = \"{t}/pipeline\"\n\
         ip_adapter = {{ base = \"{t}/{base}\", plus = \"{t}/{plus}\" }}\n\
         image_encoder = \"{t}/image_encoder\"\nscorer = \"{t}/scorer\"\n\
         [defaults]\nprompt = \"a house\"\n",
        t = tiny.display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn models_check_loads_every_role_through_the_run_loader() {
    let dir = common::scratch("models_check_ok");
    let file = experiment(
        &dir,
        "ip-adapter_sd15.safetensors",
        "ip-adapter-plus_sd15.safetensors",
    );
    let out = common::negimg(
        &["models", "check", "--no-hash", file.to_str().unwrap()],
        &dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for role in [
        "pipeline",
        "ip_adapter.base",
        "ip_adapter.plus",
        "image_encoder",
        "scorer",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(role) && l.ends_with("loads")),
            "{role} not loaded:\n{stdout}"
        );
    }
}

#[test]
fn models_check_fails_where_run_fails_on_swapped_adapters() {
    // Each file alone is a valid adapter; given in each other's role, `run` refuses them.
    let dir = common::scratch("models_check_swapped");
    let file = experiment(
        &dir,
        "ip-adapter-plus_sd15.safetensors",
        "ip-adapter_sd15.safetensors",
    );
    let out = common::negimg(
        &["models", "check", "--no-hash", file.to_str().unwrap()],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed on swapped adapters");
    assert!(
        stderr.contains("given as adapter \"base\"")
            && stderr.contains("but its keys are those of a Resampler")
            && stderr.contains("adapter = plus or plus_face"),
        "{stderr}"
    );
}
