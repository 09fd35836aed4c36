//! The JSON configs of model folders (`config.json`, `scheduler_config.json`). A value that
//! does not fit is reported with the file, its key and, for an option, the allowed values.
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

/// Reads the config `path` as `T`; `what` names the config in messages.
pub fn read<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    parse(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

/// Reads the config `path` as `T` ([`read`]) and checks it with `validate`; a config that
/// does not pass is "unsupported": `unsupported` names it in that message.
pub fn read_valid<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    unsupported: &str,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let cfg: T = read(path, what)?;
    validate(&cfg).with_context(|| format!("{}: unsupported {unsupported}", path.display()))?;
    Ok(cfg)
}

/// The config.json of `cfg` that diffusers' `<class>.from_pretrained` loads.
pub fn diffusers_json(cfg: &impl Serialize, class: &str) -> String {
    let mut v = serde_json::to_value(cfg).expect("config serializes");
    v["_class_name"] = class.into();
    v["_diffusers_version"] = "0.42.1".into();
    serde_json::to_string_pretty(&v).expect("config serializes")
}

/// Parses `text` as `T`. serde's messages name the value but not its key, so the key is
/// found by leaving keys out one at a time: the one whose absence makes the config parse.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T> {
    let err = match serde_json::from_str(text) {
        Ok(cfg) => return Ok(cfg),
        Err(e) if e.is_syntax() || e.is_eof() => return Err(e.into()),
        Err(e) => e,
    };
    let root: Value = serde_json::from_str(text)?;
    let Some(key) = culprit::<T>(&root, &[]) else {
        return Err(err.into());
    };
    let hint = if err.to_string().starts_with("unknown variant") {
        " (negimg computes only the listed values)"
    } else {
        ""
    };
    bail!("key {:?}: {err}{hint}", key.join("."))
}

/// The path of the key under `prefix` whose removal lets `root` parse as `T`, as deep as
/// one is found (`vision_config.hidden_act` rather than `vision_config`).
fn culprit<T: DeserializeOwned>(root: &Value, prefix: &[String]) -> Option<Vec<String>> {
    let mut here = root;
    for key in prefix {
        here = here.get(key)?;
    }
    for key in here.as_object()?.keys() {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        let mut trial = root.clone();
        let mut parent = &mut trial;
        for k in prefix {
            parent = parent.get_mut(k)?;
        }
        parent.as_object_mut()?.remove(key);
        if T::deserialize(&trial).is_ok() {
            return Some(culprit::<T>(root, &path).unwrap_or(path));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Exact,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Inner {
        mode: Option<Mode>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Outer {
        size: i64,
        inner: Inner,
    }

    #[test]
    fn errors_name_the_nested_key_and_the_allowed_values() {
        let ok: Outer = parse(r#"{"size": 2, "inner": {"mode": "exact"}}"#).unwrap();
        assert_eq!(ok.inner.mode, Some(Mode::Exact));
        let err = parse::<Outer>(r#"{"size": 2, "inner": {"mode": "fats"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"key "inner.mode": unknown variant `fats`"#),
            "{err}"
        );
        assert!(err.contains("`fast`") && err.contains("`exact`"), "{err}");
        let err = parse::<Outer>(r#"{"size": "two"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(r#"key "size": invalid type"#), "{err}");
        // A syntax error keeps serde_json's line and column.
        let err = parse::<Outer>("{\"size\": 2,\n}").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
