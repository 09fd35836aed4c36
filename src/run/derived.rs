//! Derived images of a run, into `inputs/NAME.png` after the images they come from. Each is
//! cached in `results/.cache/inputs/ID.png`, where ID (also the image's identity in cell
//! ids) comes from the recipe and the identity of its source, so a derived image is made
//! once per machine and changes when its source or recipe does.
use super::fsio::atomic_write;
use super::png;
use crate::derive::{Recipe, noise};
use crate::experiment::{Experiment, ImageSource};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Bumped when the computation of derived images changes (their identities change with it).
const VERSION: u32 = 1;

/// The identity of a derived image: its recipe (not the source's name) and the source's
/// identity (`None`: the black image).
pub fn identity(recipe: &Recipe, source: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        version: u32,
        recipe: Recipe,
        source: Option<&'a str>,
    }
    let identity = Identity {
        version: VERSION,
        recipe: Recipe {
            from: None,
            ..recipe.clone()
        },
        source,
    };
    let json = serde_json::to_vec(&identity).unwrap_or_default();
    crate::digest::sha256_hex(&json)[..16].to_string()
}

/// Writes every derived image of `exp` into `inputs_dir`, each after its source, and returns
/// `ids` (every other input's identity) with theirs added.
pub fn write_all(
    exp: &Experiment,
    inputs_dir: &Path,
    cache_dir: &Path,
    mut ids: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut pending: Vec<(&String, &Recipe)> = exp
        .images
        .iter()
        .filter_map(|(name, source)| match source {
            ImageSource::Derive(r) => Some((name, r)),
            _ => None,
        })
        .collect();
    // Passes over the images whose source is ready (plan time refused cycles).
    while !pending.is_empty() {
        let before = pending.len();
        let mut waiting = Vec::new();
        for (name, recipe) in pending {
            let source = match &recipe.from {
                Some(from) => match ids.get(from) {
                    Some(id) => Some((from.as_str(), id.clone())),
                    None => {
                        waiting.push((name, recipe));
                        continue;
                    }
                },
                None => None,
            };
            let id = identity(recipe, source.as_ref().map(|(_, id)| id.as_str()));
            let bytes = cached_or_made(
                name,
                recipe,
                source.map(|(from, _)| from),
                inputs_dir,
                &cache_dir.join(format!("{id}.png")),
            )?;
            super::inputs::write_if_changed(&inputs_dir.join(format!("{name}.png")), &bytes)?;
            ids.insert(name.clone(), id);
        }
        if waiting.len() == before {
            let names: Vec<&str> = waiting.iter().map(|(n, _)| n.as_str()).collect();
            bail!("the derived images {} have no source", names.join(", "));
        }
        pending = waiting;
    }
    Ok(ids)
}

/// The PNG of a derived image: from the cache, or made from `inputs/FROM.png` and cached.
fn cached_or_made(
    name: &str,
    recipe: &Recipe,
    from: Option<&str>,
    inputs_dir: &Path,
    cached: &Path,
) -> Result<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(cached) {
        return Ok(bytes);
    }
    let source = from
        .map(|f| crate::images::load_rgb(&inputs_dir.join(format!("{f}.png"))))
        .transpose()
        .with_context(|| format!("[images.{name}]: cannot read its source"))?;
    let img = noise::derive(source.as_ref(), recipe)
        .with_context(|| format!("[images.{name}]: cannot derive the image"))?;
    // The recipe travels in the PNG, as cells carry their parameters.
    let bytes = png::encode(&img, &[("negimg", &serde_json::to_string(recipe)?)])?;
    if let Some(dir) = cached.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    atomic_write(cached, &bytes)?;
    Ok(bytes)
}

/// Each derived image's recipe, for the manifest.
pub fn recipes(exp: &Experiment) -> BTreeMap<&str, &Recipe> {
    exp.images
        .iter()
        .filter_map(|(name, source)| match source {
            ImageSource::Derive(r) => Some((name.as_str(), r)),
            _ => None,
        })
        .collect()
}

/// Each derived image's caption (`fade 0.25 of house`), for grids and the report.
pub fn captions(exp: &Experiment) -> BTreeMap<String, String> {
    recipes(exp)
        .into_iter()
        .map(|(name, r)| (name.to_string(), r.caption()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::NoiseKind;

    #[test]
    fn identity_follows_recipe_and_source_content_not_names() {
        let r = Recipe {
            from: Some("house".into()),
            noise: NoiseKind::Fade,
            strength: 0.5,
            blur: 0,
        };
        let a = identity(&r, Some("sha-house"));
        let renamed = Recipe {
            from: Some("home".into()),
            ..r.clone()
        };
        assert_eq!(a, identity(&renamed, Some("sha-house")));
        assert_ne!(a, identity(&r, Some("sha-other")));
        assert_ne!(a, identity(&r, None));
        let stronger = Recipe {
            strength: 0.75,
            ..r.clone()
        };
        assert_ne!(a, identity(&stronger, Some("sha-house")));
        let dissolve = Recipe {
            noise: NoiseKind::Dissolve,
            ..r
        };
        assert_ne!(a, identity(&dissolve, Some("sha-house")));
    }
}
