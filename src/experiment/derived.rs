//! `[images.NAME] derive = { from = "house", noise = "fade", strength = 0.3, blur = 5 }`:
//! an image derived from another input (or, without `from`, from a black 224x224 image).
//!
//! `strength` is a number (one image, named NAME) or a list or range (`"0-1 [5]"`, `[0, 0.5]`):
//! a family, one image per strength named `NAME@STRENGTH` (`lawn_fade@0.25`). A grid axis or
//! zip that names the family takes all its members in order; one member is named in full.
use super::ImageSource;
use super::schema::DeriveRaw;
use super::source::{Source, suggest};
use super::values;
use crate::derive::{MAX_BLUR, NoiseKind, Recipe};
use anyhow::Result;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

/// What one `derive` table declares.
pub enum Declared {
    One(Recipe),
    /// `(NAME@STRENGTH, recipe)` in the order of the strengths.
    Family(Vec<(String, Recipe)>),
}

/// Reads `[images.NAME] derive`; `key` is `images.NAME`.
pub fn read(src: &Source, key: &str, name: &str, raw: &Spanned<DeriveRaw>) -> Result<Declared> {
    let d = raw.get_ref();
    let kind_key = format!("{key}.derive.noise");
    let noise = NoiseKind::from_name(d.noise.get_ref()).ok_or_else(|| {
        let names: Vec<&str> = NoiseKind::ALL.iter().map(|k| k.name()).collect();
        let hint = suggest(d.noise.get_ref(), names.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        src.error(
            d.noise.span(),
            &kind_key,
            format!(
                "{:?} is not a noise kind; {hint}(kinds: {})",
                d.noise.get_ref(),
                names.join(", ")
            ),
        )
    })?;
    let blur = match &d.blur {
        Some(b) if (0..=i64::from(MAX_BLUR)).contains(b.get_ref()) => *b.get_ref() as u32,
        Some(b) => {
            return Err(src.error(
                b.span(),
                &format!("{key}.derive.blur"),
                format!(
                    "{} is out of range: it must be between 0 and {MAX_BLUR}",
                    b.get_ref()
                ),
            ));
        }
        None => 0,
    };
    if noise == NoiseKind::Blur && blur == 0 {
        return Err(src.error(
            raw.span(),
            &format!("{key}.derive.blur"),
            "noise = \"blur\" needs its kernel size: blur = 1 to 32",
        ));
    }
    let recipe = |strength: f64| Recipe {
        from: d.from.as_ref().map(|f| f.get_ref().clone()),
        noise,
        strength,
        blur,
    };
    let strength_key = format!("{key}.derive.strength");
    let Some(s) = &d.strength else {
        // ComfyUI's default strength.
        return Ok(Declared::One(recipe(1.0)));
    };
    let span = s.span();
    let check = |x: f64| -> Result<f64> {
        if x.is_finite() && (0.0..=1.0).contains(&x) {
            Ok(x)
        } else {
            Err(src.error(
                span.clone(),
                &strength_key,
                format!("{x} is out of range: the strength must be between 0 and 1"),
            ))
        }
    };
    let number = |v: &toml::Value| -> Result<f64> {
        match v {
            toml::Value::Float(x) => check(*x),
            toml::Value::Integer(i) => check(*i as f64),
            other => Err(src.error(
                span.clone(),
                &strength_key,
                format!("expected a number, found {}", other.type_str()),
            )),
        }
    };
    let strengths: Vec<f64> = match s.get_ref() {
        toml::Value::String(text) => {
            let mut all = Vec::new();
            for item in text.split(',') {
                let xs = values::parse_range(item)
                    .map_err(|e| src.error(span.clone(), &strength_key, e))?;
                for x in xs {
                    all.push(check(x)?);
                }
            }
            all
        }
        toml::Value::Array(items) => items.iter().map(number).collect::<Result<_>>()?,
        single => return Ok(Declared::One(recipe(number(single)?))),
    };
    if strengths.is_empty() {
        return Err(src.error(span, &strength_key, "a family needs at least one strength"));
    }
    let mut members: Vec<(String, Recipe)> = Vec::new();
    for x in strengths {
        let member = format!("{name}@{x}");
        if members.iter().any(|(m, _)| *m == member) {
            return Err(src.error(
                span,
                &strength_key,
                format!("strength {x} appears twice; every member must differ"),
            ));
        }
        members.push((member, recipe(x)));
    }
    Ok(Declared::Family(members))
}

/// Checks every derived image's `from`: an image of this file (not a family), and no cycle.
/// `from_spans` has the place of each derived image's `from`.
pub fn check_sources(
    src: &Source,
    images: &BTreeMap<String, ImageSource>,
    families: &BTreeMap<String, Vec<String>>,
    from_spans: &BTreeMap<String, Range<usize>>,
) -> Result<()> {
    let from_of = |name: &str| match images.get(name) {
        Some(ImageSource::Derive(r)) => r.from.clone(),
        _ => None,
    };
    for (name, span) in from_spans {
        let Some(from) = from_of(name) else { continue };
        let key = format!("images.{}.derive.from", family_of(name));
        if let Some(members) = families.get(&from) {
            return Err(src.error(
                span.clone(),
                &key,
                format!(
                    "{from:?} is a family of {} images; derive from one of them, e.g. {:?}",
                    members.len(),
                    members[0]
                ),
            ));
        }
        if !images.contains_key(&from) {
            return Err(src.error(
                span.clone(),
                &key,
                format!("there is no [images.{from}] in this file"),
            ));
        }
        // Follow the chain of sources; coming back to `name` is a cycle.
        let mut chain = vec![name.clone()];
        let mut next = Some(from);
        while let Some(n) = next {
            if chain.contains(&n) {
                chain.push(n);
                return Err(src.error(
                    span.clone(),
                    &key,
                    format!("a cycle of derived images: {}", chain.join(" -> ")),
                ));
            }
            next = from_of(&n);
            chain.push(n);
        }
    }
    Ok(())
}

/// `lawn_fade` for `lawn_fade@0.25` (the table the member is declared in).
fn family_of(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}
