//! `[defaults]` and `[grid]`: read from the spanned document, expanded into cells.
//!
//! Axes keep the file's order; the first axis is the outermost loop, seeds the innermost.
//! A `[[grid.zip]]` table is one axis whose parameters vary together.
use super::cell::CellSpec;
use super::source::Source;
use super::values::{self, Param, Value};
use anyhow::Result;
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One axis of the grid: `params` vary together over `rows` (one parameter unless zipped).
#[derive(Clone, Debug)]
pub struct Axis {
    pub params: Vec<Param>,
    pub rows: Vec<Vec<Value>>,
    /// Where it is written (`grid.weight`, `grid.zip[0]`, `defaults.seeds`).
    pub key: String,
    pub span: Range<usize>,
}

#[derive(Clone, Debug)]
pub struct Grid {
    /// `[defaults]` applied to the built-in defaults.
    pub base: CellSpec,
    pub axes: Vec<Axis>,
    pub dtype: Option<String>,
    /// Where each parameter set in the file is written (`grid.start`, `defaults.end`,
    /// `grid.zip[0].cfg`) and the span of its key; an axis wins over `[defaults]`.
    pub origins: HashMap<Param, (String, Range<usize>)>,
}

impl Grid {
    /// Number of cells, without expanding them (a huge grid is refused before it exists).
    pub fn count(&self) -> u128 {
        self.axes.iter().map(|a| a.rows.len() as u128).product()
    }

    /// `weight 5 × seed 4`.
    pub fn shape(&self) -> String {
        self.axes
            .iter()
            .map(|a| {
                let names: Vec<_> = a.params.iter().map(|p| p.name()).collect();
                format!("{} {}", names.join("+"), a.rows.len())
            })
            .collect::<Vec<_>>()
            .join(" × ")
    }

    /// Every cell, first axis outermost.
    pub fn expand(&self) -> Vec<CellSpec> {
        let mut cells = vec![self.base.clone()];
        for axis in &self.axes {
            let mut next = Vec::with_capacity(cells.len() * axis.rows.len());
            for cell in &cells {
                for row in &axis.rows {
                    let mut c = cell.clone();
                    for (p, v) in axis.params.iter().zip(row) {
                        c.set(*p, v);
                    }
                    next.push(c);
                }
            }
            cells = next;
        }
        cells
    }

    /// The axes as plots and statistics see them: `(parameter, values as in records.csv)`.
    /// A zip is labelled by its first parameter whose values tell its rows apart; when none
    /// does, each zipped parameter is listed with its distinct values.
    pub fn labels(&self) -> Vec<(Param, Vec<String>)> {
        let column = |a: &Axis, i: usize| -> Vec<String> {
            a.rows.iter().map(|r| r[i].to_string()).collect()
        };
        let distinct = |v: &[String]| {
            let mut seen = std::collections::HashSet::new();
            v.iter().all(|x| seen.insert(x.clone()))
        };
        let mut out = Vec::new();
        for a in &self.axes {
            let key = (0..a.params.len()).find(|&i| distinct(&column(a, i)));
            match key {
                Some(i) => out.push((a.params[i], column(a, i))),
                None => {
                    for (i, p) in a.params.iter().enumerate() {
                        let mut values = column(a, i);
                        let mut seen = std::collections::HashSet::new();
                        values.retain(|v| seen.insert(v.clone()));
                        out.push((*p, values));
                    }
                }
            }
        }
        out
    }

    /// Where `param` gets its value in the file, if it is written there.
    pub fn origin(&self, param: Param) -> Option<&(String, Range<usize>)> {
        self.origins.get(&param)
    }

    /// Parameters that vary, in axis order.
    pub fn varying(&self) -> Vec<Param> {
        self.axes
            .iter()
            .filter(|a| a.rows.len() > 1)
            .flat_map(|a| a.params.iter().copied())
            .collect()
    }
}

fn section<'a, 'i>(root: &'a DeTable<'i>, name: &str) -> Option<&'a DeTable<'i>> {
    root.iter()
        .find(|(k, _)| k.get_ref() == name)
        .and_then(|(_, v)| v.get_ref().as_table())
}

/// Entries in the order they are written.
fn entries<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
)> {
    let mut e: Vec<_> = table.iter().collect();
    e.sort_by_key(|(k, _)| k.span().start);
    e
}

fn unknown(
    src: &Source,
    section: &str,
    key: &Spanned<std::borrow::Cow<str>>,
    extra: &[&str],
) -> anyhow::Error {
    let names: Vec<&str> = Param::all()
        .iter()
        .map(|p| p.name())
        .chain(extra.iter().copied())
        .collect();
    src.unknown_key(section, key.get_ref(), key.span(), &names)
}

/// `images(NAME)`: the images NAME stands for (itself, or the members of a family of derived
/// images); `None` when there is no such image.
pub fn read(
    src: &Source,
    root: &DeTable,
    images: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Grid> {
    // Image names checked, families expanded into their members (on axes only).
    let resolve = |key: &str, span: Range<usize>, vals: Vec<Value>, axis: bool| {
        let mut out = Vec::with_capacity(vals.len());
        for v in vals {
            let Value::Image(Some(name)) = &v else {
                out.push(v);
                continue;
            };
            let Some(members) = images(name) else {
                return Err(src.error(
                    span,
                    key,
                    format!("there is no [images.{name}] in this file"),
                ));
            };
            if !axis && members != [name.as_str()] {
                return Err(src.error(
                    span,
                    key,
                    format!(
                        "{name:?} is a family of {} derived images; name one ({:?}) or put the \
                         family on a [grid] axis",
                        members.len(),
                        members[0]
                    ),
                ));
            }
            out.extend(members.into_iter().map(|m| Value::Image(Some(m))));
        }
        Ok(out)
    };
    let mut base = CellSpec::default();
    let mut dtype = None;
    let mut seeds: Option<(Vec<u64>, Range<usize>)> = None;
    let mut seed_key: Option<Range<usize>> = None;
    let mut origins: HashMap<Param, (String, Range<usize>)> = HashMap::new();
    if let Some(defaults) = section(root, "defaults") {
        for (k, v) in entries(defaults) {
            let key = format!("defaults.{}", k.get_ref());
            match k.get_ref().as_ref() {
                "seeds" => seeds = Some((read_seeds(src, &key, v)?, k.span())),
                "size" => (base.width, base.height) = read_size(src, &key, v)?,
                "dtype" => dtype = Some(read_dtype(src, &key, v)?),
                name => match Param::from_name(name) {
                    Some(p) => {
                        if p == Param::Seed {
                            seed_key = Some(k.span());
                        }
                        origins.insert(p, (key.clone(), k.span()));
                        let value = values::single(src, &key, p, v)?;
                        let value = resolve(&key, v.span(), vec![value], false)?.remove(0);
                        base.set(p, &value)
                    }
                    None => return Err(unknown(src, "defaults", k, &["seeds", "size", "dtype"])),
                },
            }
        }
    }
    if let (Some((_, span)), Some(_)) = (&seeds, &seed_key) {
        return Err(src.error(
            span.clone(),
            "defaults.seeds",
            "give either `seed` (one) or `seeds` (a list), not both",
        ));
    }

    let mut axes: Vec<Axis> = Vec::new();
    let mut owner: HashMap<Param, String> = HashMap::new();
    let mut claim = |p: Param, key: &str, span: Range<usize>| -> Result<()> {
        if let Some(first) = owner.insert(p, key.to_string()) {
            return Err(src.error(
                span,
                key,
                format!("`{p}` already varies in {first}; a parameter can be on one axis only"),
            ));
        }
        Ok(())
    };
    if let Some(grid) = section(root, "grid") {
        for (k, v) in entries(grid) {
            let name = k.get_ref().as_ref();
            if name == "zip" {
                let Some(tables) = v.get_ref().as_array() else {
                    return Err(src.error(
                        v.span(),
                        "grid.zip",
                        "expected [[grid.zip]] tables of parameter lists",
                    ));
                };
                for (i, t) in tables.iter().enumerate() {
                    let zkey = format!("grid.zip[{i}]");
                    let Some(table) = t.get_ref().as_table() else {
                        return Err(src.error(
                            t.span(),
                            &zkey,
                            "expected a table of parameter lists",
                        ));
                    };
                    let mut params = Vec::new();
                    let mut columns: Vec<Vec<Value>> = Vec::new();
                    for (zk, zv) in entries(table) {
                        let key = format!("{zkey}.{}", zk.get_ref());
                        let Some(p) = Param::from_name(zk.get_ref()) else {
                            return Err(unknown(src, &zkey, zk, &[]));
                        };
                        claim(p, &key, zk.span())?;
                        origins.insert(p, (key.clone(), zk.span()));
                        let col = resolve(&key, zv.span(), values::list(src, &key, p, zv)?, true)?;
                        if let Some(first) = columns.first()
                            && first.len() != col.len()
                        {
                            return Err(src.error(
                                zv.span(),
                                &key,
                                format!(
                                    "has {} values but `{}` in the same zip has {}; zipped lists \
                                     must have the same length",
                                    col.len(),
                                    params.first().map_or("", |p: &Param| p.name()),
                                    first.len()
                                ),
                            ));
                        }
                        params.push(p);
                        columns.push(col);
                    }
                    if params.is_empty() {
                        return Err(src.error(t.span(), &zkey, "an empty zip"));
                    }
                    let rows: Vec<Vec<Value>> = (0..columns[0].len())
                        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
                        .collect();
                    let mut seen = std::collections::HashSet::new();
                    for (r, row) in rows.iter().enumerate() {
                        if !seen.insert(format!("{row:?}")) {
                            return Err(src.error(
                                t.span(),
                                &zkey,
                                format!(
                                    "row {} repeats an earlier row; every cell must differ",
                                    r + 1
                                ),
                            ));
                        }
                    }
                    axes.push(Axis {
                        params,
                        rows,
                        key: zkey,
                        span: t.span(),
                    });
                }
                continue;
            }
            let key = format!("grid.{name}");
            let Some(p) = Param::from_name(name) else {
                return Err(unknown(src, "grid", k, &["zip"]));
            };
            claim(p, &key, k.span())?;
            origins.insert(p, (key.clone(), k.span()));
            let values = resolve(&key, v.span(), values::list(src, &key, p, v)?, true)?;
            values::unique(src, &key, v.span(), &values)?;
            axes.push(Axis {
                params: vec![p],
                rows: values.into_iter().map(|v| vec![v]).collect(),
                key,
                span: k.span(),
            });
        }
    }
    if let Some((_, span)) = &seeds {
        origins
            .entry(Param::Seed)
            .or_insert_with(|| ("defaults.seeds".into(), span.clone()));
    }
    match (owner.get(&Param::Seed), seeds) {
        (Some(axis), Some((_, span))) => {
            return Err(src.error(
                span,
                "defaults.seeds",
                format!("the seed already varies in {axis}; remove one of them"),
            ));
        }
        (None, seeds) => {
            let (list, span) = seeds.unwrap_or((vec![base.seed], 0..0));
            axes.push(Axis {
                params: vec![Param::Seed],
                rows: list.into_iter().map(|s| vec![Value::Int(s)]).collect(),
                key: "defaults.seeds".into(),
                span,
            });
        }
        (Some(_), None) => {}
    }
    Ok(Grid {
        base,
        axes,
        dtype,
        origins,
    })
}

/// `seeds = [1, 2, 3]`, `seeds = "1-8"`, or `seeds = { count = 8, base = 1000 }`.
fn read_seeds(src: &Source, key: &str, v: &Spanned<DeValue>) -> Result<Vec<u64>> {
    let max = i64::MAX as u64;
    match v.get_ref() {
        DeValue::Table(t) => {
            let (mut count, mut base) = (None, 0);
            for (k, x) in entries(t) {
                match k.get_ref().as_ref() {
                    "count" => {
                        count = Some(values::integer(
                            src,
                            &format!("{key}.count"),
                            x,
                            1,
                            values::MAX_AXIS_VALUES as u64,
                        )?)
                    }
                    "base" => base = values::integer(src, &format!("{key}.base"), x, 0, max)?,
                    other => {
                        return Err(src.error(
                            k.span(),
                            &format!("{key}.{other}"),
                            "unknown key; write seeds = { count = N, base = SEED }",
                        ));
                    }
                }
            }
            let Some(count) = count else {
                return Err(src.error(v.span(), key, "needs `count` (and optionally `base`)"));
            };
            if base.checked_add(count).is_none_or(|end| end > max) {
                return Err(src.error(v.span(), key, "base + count is too large for a seed"));
            }
            Ok((base..base + count).collect())
        }
        DeValue::Integer(_) => Err(src.error(
            v.span(),
            key,
            "ambiguous: write seeds = [N] for one seed, or seeds = { count = N } for N seeds",
        )),
        _ => {
            let list = values::list(src, key, Param::Seed, v)?;
            values::unique(src, key, v.span(), &list)?;
            Ok(list
                .into_iter()
                .filter_map(|x| match x {
                    Value::Int(n) => Some(n),
                    _ => None,
                })
                .collect())
        }
    }
}

/// `size = 512`, `size = [768, 512]` (width, height) or `size = "768x512"`.
fn read_size(src: &Source, key: &str, v: &Spanned<DeValue>) -> Result<(usize, usize)> {
    let check = |x: f64| -> Result<usize> {
        if !(x.fract() == 0.0 && (8.0..=4096.0).contains(&x) && x % 8.0 == 0.0) {
            return Err(src.error(
                v.span(),
                key,
                format!("{x} is not a multiple of 8 between 8 and 4096 (the VAE downsamples by 8)"),
            ));
        }
        Ok(x as usize)
    };
    let num = |s: &str| -> Result<f64> {
        s.trim()
            .parse::<f64>()
            .map_err(|_| src.error(v.span(), key, format!("{s:?} is not a number")))
    };
    match v.get_ref() {
        DeValue::Integer(_) | DeValue::Float(_) => {
            let x = check(values::number(src, key, v)?)?;
            Ok((x, x))
        }
        DeValue::Array(a) if a.len() == 2 => Ok((
            check(values::number(src, key, &a[0])?)?,
            check(values::number(src, key, &a[1])?)?,
        )),
        DeValue::String(s) => match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok((check(num(w)?)?, check(num(h)?)?)),
            None => {
                let x = check(num(s)?)?;
                Ok((x, x))
            }
        },
        _ => Err(src.error(
            v.span(),
            key,
            "expected 512, [width, height] or \"WIDTHxHEIGHT\"",
        )),
    }
}

fn read_dtype(src: &Source, key: &str, v: &Spanned<DeValue>) -> Result<String> {
    match v.get_ref().as_str() {
        Some(s @ ("auto" | "fp32" | "fp16" | "bf16")) => Ok(s.to_string()),
        _ => Err(src.error(v.span(), key, "expected one of auto, fp32, fp16, bf16")),
    }
}
