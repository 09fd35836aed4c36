//! `[subjects]`: named studies, each a positive image, a negative image, their captions and an
//! optional region mask, that the grid crosses with every other axis as the `subject` axis.
//!
//! ```toml
//! [subjects.house_lawn]
//! positive = "house"                 # an [images.NAME]
//! negative = "lawn"
//! negative_caption = "a green lawn"  # CLIP zero-shot presence of the negative (removal rate)
//! positive_caption = "a house"       # the neutral caption it is compared with
//! mask = "masks/house.png"           # optional, a file relative to the experiment file
//! [subjects]
//! from = "pairs.csv"                 # or: one subject per CSV row, paths relative to the CSV
//! ```
use super::ImageSource;
use super::outputs::Subject;
use super::source::Source;
use crate::images;
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::de::DeTable;

/// Keys of one `[subjects.NAME]` table.
const KEYS: [&str; 5] = [
    "positive",
    "negative",
    "positive_caption",
    "negative_caption",
    "mask",
];
/// Columns a `from` CSV must have; `positive_caption` and `mask` may be added.
pub const CSV_REQUIRED: [&str; 4] = ["name", "positive", "negative", "negative_caption"];
const CSV_OPTIONAL: [&str; 2] = ["positive_caption", "mask"];

/// The subjects in the order they are written, and the images a CSV adds
/// (`NAME.positive`, `NAME.negative`: its files).
#[derive(Debug, Default)]
pub struct Declared {
    pub subjects: Vec<(String, Subject)>,
    pub images: Vec<(String, ImageSource)>,
}

/// Reads `[subjects]` from the spanned document; `images` are the file's `[images]` (the names
/// a TOML subject may use); `base_dir` anchors relative paths.
pub fn read(
    src: &Source,
    root: &DeTable,
    images: &BTreeMap<String, ImageSource>,
    base_dir: &Path,
) -> Result<Declared> {
    let Some((_, table)) = root.iter().find(|(k, _)| k.get_ref() == "subjects") else {
        return Ok(Declared::default());
    };
    let Some(table) = table.get_ref().as_table() else {
        return Err(src.error(
            table.span(),
            "subjects",
            "expected [subjects.NAME] tables or `from = \"pairs.csv\"`",
        ));
    };
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Declared::default();
    // Where each subject is declared, to name both places of a duplicate.
    let mut declared_at: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in entries {
        let name = k.get_ref().as_ref();
        if name == "from" {
            let Some(file) = v.get_ref().as_str() else {
                return Err(src.error(v.span(), "subjects.from", "expected a CSV file name"));
            };
            for (line, name, subject, added) in read_csv(src, v.span(), &base_dir.join(file))? {
                let place = format!("{file}:{line}");
                claim(
                    src,
                    &mut declared_at,
                    &name,
                    place,
                    v.span(),
                    "subjects.from",
                )?;
                for (image, source) in added {
                    if images.contains_key(&image) {
                        return Err(src.error(
                            v.span(),
                            "subjects.from",
                            format!(
                                "{file}:{line}: subject {name:?} adds the image {image:?}, which \
                                 [images] already names; rename one of them"
                            ),
                        ));
                    }
                    out.images.push((image, source));
                }
                out.subjects.push((name, subject));
            }
            continue;
        }
        let key = format!("subjects.{name}");
        let Some(t) = v.get_ref().as_table() else {
            return Err(src.error(
                v.span(),
                &key,
                "expected a table: [subjects.NAME] positive = \"...\", negative = \"...\"",
            ));
        };
        check_name(src, k.span(), &key, name)?;
        let (line, _) = src.line_col(k.span().start);
        let place = format!("{}:{line}", src.path.display());
        claim(src, &mut declared_at, name, place, k.span(), &key)?;
        let subject = toml_subject(src, &key, k.span(), t, images, base_dir)?;
        out.subjects.push((name.to_string(), subject));
    }
    Ok(out)
}

/// Refuses a second subject of the same name, naming where the first is.
fn claim(
    src: &Source,
    declared_at: &mut BTreeMap<String, String>,
    name: &str,
    place: String,
    span: Range<usize>,
    key: &str,
) -> Result<()> {
    if let Some(first) = declared_at.get(name) {
        return Err(src.error(
            span,
            key,
            format!(
                "subject {name:?} at {place} is already declared at {first}; names must be unique"
            ),
        ));
    }
    declared_at.insert(name.to_string(), place);
    Ok(())
}

fn check_name(src: &Source, span: Range<usize>, key: &str, name: &str) -> Result<()> {
    if super::is_safe_name(name) {
        Ok(())
    } else {
        Err(src.error(
            span,
            key,
            "subject names may use letters, digits, '-', '_' and '.' only",
        ))
    }
}

/// One `[subjects.NAME]` table.
fn toml_subject(
    src: &Source,
    key: &str,
    at: Range<usize>,
    table: &DeTable,
    images: &BTreeMap<String, ImageSource>,
    base_dir: &Path,
) -> Result<Subject> {
    let mut fields: BTreeMap<&str, (String, Range<usize>)> = BTreeMap::new();
    for (k, v) in table.iter() {
        let field = k.get_ref().as_ref();
        let Some(known) = KEYS.iter().find(|n| **n == field) else {
            return Err(src.unknown_key(key, field, k.span(), &KEYS));
        };
        let Some(text) = v.get_ref().as_str() else {
            return Err(src.error(
                v.span(),
                &format!("{key}.{field}"),
                format!("expected a string, found {}", v.get_ref().type_str()),
            ));
        };
        fields.insert(known, (text.to_string(), v.span()));
    }
    let image = |field: &str| -> Result<String> {
        let Some((name, span)) = fields.get(field) else {
            return Err(src.error(
                at.clone(),
                &format!("{key}.{field}"),
                "missing: name an [images.NAME]",
            ));
        };
        if !images.contains_key(name) {
            return Err(src.error(
                span.clone(),
                &format!("{key}.{field}"),
                format!("there is no [images.{name}] in this file"),
            ));
        }
        Ok(name.clone())
    };
    let text = |field: &str| fields.get(field).map(|(t, _)| t.clone());
    let mask = match fields.get("mask") {
        Some((file, span)) => Some(
            check_mask(&base_dir.join(file))
                .map_err(|e| src.error(span.clone(), &format!("{key}.mask"), format!("{e:#}")))?,
        ),
        None => None,
    };
    Ok(Subject {
        positive: image("positive")?,
        negative: image("negative")?,
        positive_caption: text("positive_caption"),
        negative_caption: text("negative_caption"),
        mask,
    })
}

/// A mask must decode as an image (as `run` would read it); its path as given.
fn check_mask(file: &Path) -> Result<String> {
    images::load_rgb(file).map_err(|e| anyhow!("the region mask is not an image: {e:#}"))?;
    Ok(file.display().to_string())
}

/// One CSV row: its line, the subject's name, the subject and the images it adds.
type CsvRow = (u64, String, Subject, Vec<(String, ImageSource)>);

/// The rows of a `from` CSV; errors name the TOML key and the CSV's line and column.
fn read_csv(src: &Source, span: Range<usize>, file: &Path) -> Result<Vec<CsvRow>> {
    let shown = file.display().to_string();
    let fail = |msg: String| src.error(span.clone(), "subjects.from", msg);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| fail(format!("cannot read {shown}: {e}")))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| fail(format!("{shown}: {e}")))?
        .iter()
        .map(String::from)
        .collect();
    let missing: Vec<&str> = CSV_REQUIRED
        .iter()
        .copied()
        .filter(|c| !header.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "{shown}:1: missing column(s) {} (needs {}; may add {})",
            missing.join(", "),
            CSV_REQUIRED.join(", "),
            CSV_OPTIONAL.join(", ")
        )));
    }
    if let Some(h) = header
        .iter()
        .find(|h| !CSV_REQUIRED.contains(&h.as_str()) && !CSV_OPTIONAL.contains(&h.as_str()))
    {
        return Err(fail(format!(
            "{shown}:1: unknown column {h:?} (known: {}, {})",
            CSV_REQUIRED.join(", "),
            CSV_OPTIONAL.join(", ")
        )));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| fail(format!("{shown}: {e}")))?;
        let line = row.position().map_or(0, |p| p.line());
        if row.len() != header.len() {
            return Err(fail(format!(
                "{shown}:{line}: the row has {} fields, the header {}",
                row.len(),
                header.len()
            )));
        }
        let get = |column: &str| -> Option<String> {
            let i = header.iter().position(|h| h == column)?;
            Some(row[i].to_string()).filter(|v| !v.is_empty())
        };
        let need = |column: &str| {
            get(column).ok_or_else(|| fail(format!("{shown}:{line}: column {column} is empty")))
        };
        let name = need("name")?;
        if !super::is_safe_name(&name) {
            return Err(fail(format!(
                "{shown}:{line}: column name: {name:?}: subject names may use letters, digits, \
                 '-', '_' and '.' only"
            )));
        }
        let mut added = Vec::new();
        let mut image = |column: &str| -> Result<String> {
            let path = dir.join(need(column)?);
            images::load_rgb(&path)
                .map_err(|e| fail(format!("{shown}:{line}: column {column}: {e:#}")))?;
            let image = format!("{name}.{column}");
            added.push((image.clone(), ImageSource::File(path)));
            Ok(image)
        };
        let (positive, negative) = (image("positive")?, image("negative")?);
        let mask = get("mask")
            .map(|m| {
                check_mask(&dir.join(m))
                    .map_err(|e| fail(format!("{shown}:{line}: column mask: {e:#}")))
            })
            .transpose()?;
        let subject = Subject {
            positive,
            negative,
            positive_caption: get("positive_caption"),
            negative_caption: Some(need("negative_caption")?),
            mask,
        };
        rows.push((line, name, subject, added));
    }
    if rows.is_empty() {
        return Err(fail(format!("{shown} has no rows")));
    }
    Ok(rows)
}
