//! The experiment file as serde reads it. Unknown keys are refused everywhere, so a typo fails
//! with the key and its line. `[defaults]` and `[grid]` are only type-checked here (tables);
//! they are read again from the spanned document by `grid.rs`, to report values with lines.
use super::source::Source;
use crate::params::AdapterKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;
use toml::de::DeTable;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRaw {
    #[serde(default)]
    pub experiment: ExperimentRaw,
    pub models: ModelsRaw,
    #[serde(default)]
    pub images: BTreeMap<String, Spanned<ImageRaw>>,
    /// Type-checked here, read by `grid.rs`.
    #[serde(default, rename = "defaults")]
    pub _defaults: Option<toml::Table>,
    #[serde(default, rename = "grid")]
    pub _grid: Option<toml::Table>,
    /// Type-checked here, read by `subjects.rs`.
    #[serde(default, rename = "subjects")]
    pub _subjects: Option<toml::Table>,
    #[serde(default)]
    pub scoring: ScoringRaw,
    #[serde(default)]
    pub plots: PlotsRaw,
    #[serde(default)]
    pub maps: MapsRaw,
}

/// `[maps]`: what the run records besides images.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapsRaw {
    /// Attention maps of the IP-Adapter's image attention, per cell.
    pub attention: Option<bool>,
    /// The steps the attention maps cover (a step set, as `steps_at`); all by default.
    pub steps: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRaw {
    /// Folder name under results/ (default: the file name without .toml).
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsRaw {
    pub pipeline: Spanned<String>,
    pub vae: Option<Spanned<String>>,
    #[serde(default)]
    pub ip_adapter: IpAdapterRaw,
    pub image_encoder: Spanned<String>,
    pub scorer: Option<Spanned<String>>,
    /// A DINOv2 model (transformers' Dinov2Model layout), the second embedding.
    pub scorer_dino: Option<Spanned<String>>,
    /// The LAION improved aesthetic predictor's head (`.pth`), on the scorer's embedding.
    pub aesthetic: Option<Spanned<String>>,
    /// Create random models when `dir` is missing (`negimg models init-random`).
    pub init_random: Option<Spanned<InitRandomRaw>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAdapterRaw {
    pub base: Option<Spanned<String>>,
    pub plus: Option<Spanned<String>>,
    pub light: Option<Spanned<String>>,
    pub plus_face: Option<Spanned<String>>,
    pub full_face: Option<Spanned<String>>,
}

impl IpAdapterRaw {
    /// The reference given for `kind`.
    pub fn get(&self, kind: AdapterKind) -> Option<&Spanned<String>> {
        match kind {
            AdapterKind::Base => self.base.as_ref(),
            AdapterKind::Plus => self.plus.as_ref(),
            AdapterKind::Light => self.light.as_ref(),
            AdapterKind::PlusFace => self.plus_face.as_ref(),
            AdapterKind::FullFace => self.full_face.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRandomRaw {
    /// `tiny` or `sd15`.
    pub preset: String,
    /// The folder to create, relative to the experiment file.
    pub dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRaw {
    /// An image file, relative to the experiment file (spanned: errors name its line).
    pub path: Option<Spanned<String>>,
    /// Or: made text-to-image by the experiment's pipeline.
    pub generate: Option<GenerateRaw>,
    /// Or: derived from another input image (`derived.rs`).
    pub derive: Option<Spanned<DeriveRaw>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeriveRaw {
    /// The source image; none: a black 224x224 image.
    pub from: Option<Spanned<String>>,
    pub noise: Spanned<String>,
    /// A number, or a list or range string for a family.
    pub strength: Option<Spanned<toml::Value>>,
    pub blur: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRaw {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub seed: u64,
    pub steps: Option<u64>,
    pub cfg: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringRaw {
    #[serde(default)]
    pub targets: Vec<String>,
    pub positive_reference: Option<Spanned<String>>,
    pub negative_reference: Option<Spanned<String>>,
    /// The baseline cells: axis = value (default `negative = "none"`).
    pub baseline: Option<Spanned<toml::Table>>,
    /// A binary mask for the change maps' region shares.
    pub region: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotsRaw {
    pub rows: Option<Spanned<String>>,
    pub cols: Option<Spanned<String>>,
    pub pages: Option<Spanned<String>>,
    pub curve_x: Option<Spanned<String>>,
    #[serde(default)]
    pub series: Vec<Spanned<String>>,
    pub show: Option<Spanned<String>>,
    pub filmstrip: Option<Spanned<bool>>,
    pub overlay: Option<Spanned<String>>,
}

/// The keys each table of the experiment file may have, for [`check_keys`]. serde refuses
/// unknown keys too (`deny_unknown_fields`), but with the parser's text; this walk gives the
/// message `[grid]` gives (file:line:col, key, "did you mean"). A test keeps it equal to the
/// structs above.
#[derive(Clone, Copy)]
enum Keys {
    /// A table with these keys.
    Table(&'static [(&'static str, Keys)]),
    /// A table of named tables, each with these keys (`[images.NAME]`).
    Each(&'static [(&'static str, Keys)]),
    /// A value, or a table checked elsewhere (`[defaults]`, `[grid]` by `grid.rs`,
    /// `[scoring] baseline` against the axes).
    Value,
}

const TOP: &[(&str, Keys)] = &[
    ("experiment", Keys::Table(EXPERIMENT)),
    ("models", Keys::Table(MODELS)),
    ("images", Keys::Each(IMAGE)),
    ("defaults", Keys::Value),
    ("grid", Keys::Value),
    ("subjects", Keys::Value),
    ("scoring", Keys::Table(SCORING)),
    ("plots", Keys::Table(PLOTS)),
    ("maps", Keys::Table(MAPS)),
];
const EXPERIMENT: &[(&str, Keys)] = &[
    ("name", Keys::Value),
    ("description", Keys::Value),
    ("tags", Keys::Value),
];
const MODELS: &[(&str, Keys)] = &[
    ("pipeline", Keys::Value),
    ("vae", Keys::Value),
    (
        "ip_adapter",
        Keys::Table(&[
            ("base", Keys::Value),
            ("plus", Keys::Value),
            ("light", Keys::Value),
            ("plus_face", Keys::Value),
            ("full_face", Keys::Value),
        ]),
    ),
    ("image_encoder", Keys::Value),
    ("scorer", Keys::Value),
    ("scorer_dino", Keys::Value),
    ("aesthetic", Keys::Value),
    (
        "init_random",
        Keys::Table(&[("preset", Keys::Value), ("dir", Keys::Value)]),
    ),
];
const IMAGE: &[(&str, Keys)] = &[
    ("path", Keys::Value),
    (
        "generate",
        Keys::Table(&[
            ("prompt", Keys::Value),
            ("negative_prompt", Keys::Value),
            ("seed", Keys::Value),
            ("steps", Keys::Value),
            ("cfg", Keys::Value),
        ]),
    ),
    (
        "derive",
        Keys::Table(&[
            ("from", Keys::Value),
            ("noise", Keys::Value),
            ("strength", Keys::Value),
            ("blur", Keys::Value),
        ]),
    ),
];
const SCORING: &[(&str, Keys)] = &[
    ("targets", Keys::Value),
    ("positive_reference", Keys::Value),
    ("negative_reference", Keys::Value),
    ("baseline", Keys::Value),
    ("region", Keys::Value),
];
const MAPS: &[(&str, Keys)] = &[("attention", Keys::Value), ("steps", Keys::Value)];
const PLOTS: &[(&str, Keys)] = &[
    ("rows", Keys::Value),
    ("cols", Keys::Value),
    ("pages", Keys::Value),
    ("curve_x", Keys::Value),
    ("series", Keys::Value),
    ("show", Keys::Value),
    ("filmstrip", Keys::Value),
    ("overlay", Keys::Value),
];

/// Refuses the first key (in file order) that its table does not have. Values of the wrong
/// type are left to serde.
pub fn check_keys(src: &Source, doc: &DeTable) -> anyhow::Result<()> {
    check_table(src, "", doc, TOP)
}

fn check_table(
    src: &Source,
    section: &str,
    table: &DeTable,
    known: &[(&str, Keys)],
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (k, v) in entries {
        let name = k.get_ref().as_ref();
        let Some((_, keys)) = known.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            return Err(src.unknown_key(section, name, k.span(), &names));
        };
        let path = if section.is_empty() {
            name.to_string()
        } else {
            format!("{section}.{name}")
        };
        match (keys, v.get_ref().as_table()) {
            (Keys::Table(inner), Some(t)) => check_table(src, &path, t, inner)?,
            (Keys::Each(inner), Some(t)) => {
                for (each, value) in t.iter() {
                    if let Some(t) = value.get_ref().as_table() {
                        check_table(src, &format!("{path}.{}", each.get_ref()), t, inner)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde's `deny_unknown_fields` lists for the table at `header` (`""`: top).
    fn serde_keys(header: &str) -> Vec<String> {
        let text = if header.is_empty() {
            "zzzz = 1\n".to_string()
        } else {
            format!("[{header}]\nzzzz = 1\n")
        };
        let err = toml::from_str::<FileRaw>(&text).unwrap_err().to_string();
        let listed = err
            .split_once("expected")
            .unwrap_or_else(|| panic!("{header}: {err}"))
            .1;
        let mut keys: Vec<String> = listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    fn table_at(path: &[&str]) -> Vec<String> {
        let mut keys = TOP;
        for part in path {
            keys = match keys.iter().find(|(n, _)| n == part).map(|(_, k)| *k) {
                Some(Keys::Table(t) | Keys::Each(t)) => t,
                _ => panic!("{path:?}"),
            };
        }
        let mut names: Vec<String> = keys.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_key_lists_are_those_of_the_structs() {
        for (header, path) in [
            ("", &[][..]),
            ("experiment", &["experiment"][..]),
            ("models", &["models"]),
            ("models.ip_adapter", &["models", "ip_adapter"]),
            ("models.init_random", &["models", "init_random"]),
            ("images.x", &["images"]),
            ("images.x.generate", &["images", "generate"]),
            ("images.x.derive", &["images", "derive"]),
            ("scoring", &["scoring"]),
            ("plots", &["plots"]),
            ("maps", &["maps"]),
        ] {
            assert_eq!(table_at(path), serde_keys(header), "[{header}]");
        }
    }
}
