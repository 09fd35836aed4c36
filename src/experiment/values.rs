//! Generation parameters as experiment files name them, and their values: single values in
//! `[defaults]`, lists and A1111-style ranges (`1-5 (+2)`, `1-10 [5]`) on `[grid]` axes.
use super::source::Source;
use crate::params::{
    AdapterKind, BlockWeights, IpScaling, Method, MicroPair, NegOff, NegativeMode, NoImage,
    SchedulerKind, StepSet, Window,
};
use crate::sampling::methods::{self, ParamSpec};
use anyhow::Result;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::DeValue;

/// Most values one range may expand to (a bigger grid is refused by the cell count anyway).
pub const MAX_AXIS_VALUES: usize = 1_000_000;

/// A parameter that `[defaults]` sets and `[grid]` varies; names are `Record` field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Param {
    Prompt,
    NegativePrompt,
    Negative,
    PositiveImage,
    NegativeImage,
    Adapter,
    Weight,
    Start,
    End,
    NegWeight,
    NegStart,
    NegEnd,
    Cfg,
    Steps,
    Scheduler,
    Seed,
    NoImage,
    Method,
    NegEmbedScale,
    NegCfg,
    Window,
    Blocks,
    NegBlocks,
    IpScaling,
    Negtome,
    NegtomeAlpha,
    NegtomeThreshold,
    NegtomeTMin,
    NegtomeTMax,
    StepsAt,
    NegStepsAt,
    NegOff,
    Trace,
    /// SDXL's micro-conditioning (`add_time_ids`), diffusers' names.
    OriginalSize,
    CropsCoordsTopLeft,
    TargetSize,
    /// The micro-conditioning of the rows other than the cond row (diffusers'
    /// `negative_original_size` etc.).
    NegativeOriginalSize,
    NegativeCropsCoordsTopLeft,
    NegativeTargetSize,
    /// A parameter of one negative method, by key (declared in its file under
    /// `sampling::methods`).
    MethodParam(&'static str),
    /// A `[subjects.NAME]`: sets the positive and negative image together.
    Subject,
}

impl Param {
    /// The parameters every cell has; [`Param::all`] adds the methods' own.
    const COMMON: [Param; 40] = [
        Param::Prompt,
        Param::NegativePrompt,
        Param::Negative,
        Param::PositiveImage,
        Param::NegativeImage,
        Param::Adapter,
        Param::Weight,
        Param::Start,
        Param::End,
        Param::NegWeight,
        Param::NegStart,
        Param::NegEnd,
        Param::Cfg,
        Param::Steps,
        Param::Scheduler,
        Param::Seed,
        Param::NoImage,
        Param::Method,
        Param::NegEmbedScale,
        Param::NegCfg,
        Param::Window,
        Param::Blocks,
        Param::NegBlocks,
        Param::IpScaling,
        Param::Negtome,
        Param::NegtomeAlpha,
        Param::NegtomeThreshold,
        Param::NegtomeTMin,
        Param::NegtomeTMax,
        Param::Subject,
        Param::StepsAt,
        Param::NegStepsAt,
        Param::NegOff,
        Param::Trace,
        Param::OriginalSize,
        Param::CropsCoordsTopLeft,
        Param::TargetSize,
        Param::NegativeOriginalSize,
        Param::NegativeCropsCoordsTopLeft,
        Param::NegativeTargetSize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Param::Prompt => "prompt",
            Param::NegativePrompt => "negative_prompt",
            Param::Negative => "negative",
            Param::PositiveImage => "positive_image",
            Param::NegativeImage => "negative_image",
            Param::Adapter => "adapter",
            Param::Weight => "weight",
            Param::Start => "start",
            Param::End => "end",
            Param::NegWeight => "neg_weight",
            Param::NegStart => "neg_start",
            Param::NegEnd => "neg_end",
            Param::Cfg => "cfg",
            Param::Steps => "steps",
            Param::Scheduler => "scheduler",
            Param::Seed => "seed",
            Param::NoImage => "no_image",
            Param::Method => "method",
            Param::NegEmbedScale => "neg_embed_scale",
            Param::NegCfg => "neg_cfg",
            Param::Window => "window",
            Param::Blocks => "blocks",
            Param::NegBlocks => "neg_blocks",
            Param::IpScaling => "ip_scaling",
            Param::Negtome => "negtome",
            Param::NegtomeAlpha => "negtome_alpha",
            Param::NegtomeThreshold => "negtome_threshold",
            Param::NegtomeTMin => "negtome_t_min",
            Param::NegtomeTMax => "negtome_t_max",
            Param::MethodParam(name) => name,
            Param::Subject => "subject",
            Param::StepsAt => "steps_at",
            Param::NegStepsAt => "neg_steps_at",
            Param::NegOff => "neg_off",
            Param::Trace => "trace",
            Param::OriginalSize => "original_size",
            Param::CropsCoordsTopLeft => "crops_coords_top_left",
            Param::TargetSize => "target_size",
            Param::NegativeOriginalSize => "negative_original_size",
            Param::NegativeCropsCoordsTopLeft => "negative_crops_coords_top_left",
            Param::NegativeTargetSize => "negative_target_size",
        }
    }

    /// Every parameter: the common ones, then each method's own.
    pub fn all() -> Vec<Param> {
        let own = methods::all_params().map(|(_, spec)| Param::MethodParam(spec.name));
        Param::COMMON.into_iter().chain(own).collect()
    }

    pub fn from_name(name: &str) -> Option<Param> {
        Param::all().into_iter().find(|p| p.name() == name)
    }

    /// Numeric parameters accept ranges; the others take lists only.
    fn numeric(self) -> Option<NumKind> {
        Some(match self {
            // Down to -1 as ComfyUI's IP-Adapter nodes (their weight inputs take -1 to 5; a
            // negative weight pushes the image's features away instead of towards them).
            Param::Weight | Param::NegWeight => NumKind::Float {
                min: -1.0,
                max: 10.0,
            },
            Param::Start | Param::End | Param::NegStart | Param::NegEnd => {
                NumKind::Float { min: 0.0, max: 1.0 }
            }
            Param::Cfg | Param::NegCfg => NumKind::Float {
                min: 0.0,
                max: 100.0,
            },
            Param::NegEmbedScale | Param::NegtomeAlpha => NumKind::Float {
                min: 0.0,
                max: 10.0,
            },
            Param::NegtomeThreshold => NumKind::Float {
                min: -1.0,
                max: 1.0,
            },
            Param::NegtomeTMin | Param::NegtomeTMax => NumKind::Float {
                min: 0.0,
                max: 1000.0,
            },
            Param::Steps => NumKind::Int { min: 1, max: 1000 },
            Param::MethodParam(name) => NumKind::Method(methods::param(name)?),
            Param::Seed => NumKind::Int {
                min: 0,
                max: i64::MAX as u64,
            },
            _ => return None,
        })
    }
}

impl Param {
    /// The range an experiment file accepts for `x`, for flags (`negimg generate`) too: one
    /// validation for both.
    pub fn check_value(self, x: f64) -> std::result::Result<(), String> {
        let (min, max) = match self.numeric() {
            Some(NumKind::Float { min, max }) => (min, max),
            Some(NumKind::Int { min, max }) => (min as f64, max as f64),
            Some(NumKind::Method(spec)) => return spec.check(x),
            None => return Ok(()),
        };
        if !x.is_finite() || x < min || x > max {
            return Err(format!(
                "{x} is out of range: it must be between {min} and {max}"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug)]
enum NumKind {
    Float {
        min: f64,
        max: f64,
    },
    Int {
        min: u64,
        max: u64,
    },
    /// A method's parameter: a float in the range its spec gives.
    Method(&'static ParamSpec),
}

/// One value of a parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Num(f64),
    Int(u64),
    Text(String),
    Negative(NegativeMode),
    Adapter(AdapterKind),
    Scheduler(SchedulerKind),
    NoImage(NoImage),
    Method(Method),
    Window(Window),
    Blocks(BlockWeights),
    IpScaling(IpScaling),
    Bool(bool),
    /// A step set; `None`: the branch follows its window.
    Steps(Option<StepSet>),
    NegOff(NegOff),
    /// An `[images.NAME]` reference; `None` is no image.
    Image(Option<String>),
    /// A micro-conditioning pair; `None` (`auto`): the image's own size (a `negative_*` key:
    /// the cond row's value).
    Size(Option<MicroPair>),
}

impl fmt::Display for Value {
    /// As records.csv writes the value (floats keep a decimal point, as the csv crate writes them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(x) => write!(f, "{x:?}"),
            Value::Int(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
            Value::Negative(v) => write!(f, "{v}"),
            Value::Adapter(v) => write!(f, "{v}"),
            Value::Scheduler(v) => write!(f, "{v}"),
            Value::NoImage(v) => write!(f, "{v}"),
            Value::Method(v) => write!(f, "{v}"),
            Value::Window(v) => write!(f, "{v}"),
            Value::Blocks(v) => write!(f, "{v}"),
            Value::IpScaling(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Steps(v) => v.as_ref().map_or(Ok(()), |s| write!(f, "{s}")),
            Value::NegOff(v) => write!(f, "{v}"),
            Value::Image(v) => f.write_str(v.as_deref().unwrap_or("")),
            Value::Size(Some(p)) => write!(f, "{p}"),
            Value::Size(None) => f.write_str("auto"),
        }
    }
}

/// Reads one value of `param` (a `[defaults]` entry).
pub fn single(src: &Source, key: &str, param: Param, v: &Spanned<DeValue>) -> Result<Value> {
    let span = v.span();
    match (param.numeric(), v.get_ref()) {
        (Some(kind), DeValue::Integer(_) | DeValue::Float(_)) => {
            let x = number(src, key, v)?;
            check_number(src, key, span, kind, x)
        }
        (Some(_), other) => Err(src.error(
            span,
            key,
            format!("expected a number, found {}", other.type_str()),
        )),
        (None, DeValue::String(s)) => word(src, key, span, param, s),
        (None, DeValue::Boolean(b)) if param == Param::Negtome => Ok(Value::Bool(*b)),
        (None, DeValue::Integer(_) | DeValue::Float(_)) if is_steps(param) => {
            let x = number(src, key, v)?;
            word(src, key, span, param, &x.to_string())
        }
        // `original_size = [1024, 768]`: one pair.
        (None, DeValue::Array(items)) if is_micro(param) => {
            let pair = items
                .iter()
                .map(|item| number(src, key, item).map(|x| x.to_string()))
                .collect::<Result<Vec<_>>>()?;
            match pair.as_slice() {
                [a, b] => word(src, key, span, param, &format!("{a}x{b}")),
                _ => Err(src.error(
                    span,
                    key,
                    format!(
                        "expected two numbers [height, width] (crops_coords_top_left: [top, left]), found {}",
                        pair.len()
                    ),
                )),
            }
        }
        // `trace = [0, 6, 12]`: one set of the listed steps.
        (None, DeValue::Array(items)) if param == Param::Trace => {
            let steps = items
                .iter()
                .map(|item| number(src, key, item).map(|x| x.to_string()))
                .collect::<Result<Vec<_>>>()?;
            word(src, key, span, param, &steps.join(", "))
        }
        (None, other) if is_micro(param) => Err(src.error(
            span,
            key,
            format!(
                "expected a pair such as \"1024x768\" or [1024, 768] (a grid axis: a list of them), found {}",
                other.type_str()
            ),
        )),
        (None, other) => Err(src.error(
            span,
            key,
            format!("expected a string, found {}", other.type_str()),
        )),
    }
}

/// Reads the values of a `[grid]` axis: a list, a single value, or (numbers) a string of
/// comma-separated numbers and ranges: `0-1 (+0.25)` (step), `1-10 [5]` (count), `5-1 (-2)`.
/// Text prompts and block weights (`"4:0.25, 5:1"` is one value) are never split on commas.
pub fn list(src: &Source, key: &str, param: Param, v: &Spanned<DeValue>) -> Result<Vec<Value>> {
    let span = v.span();
    let mut out = Vec::new();
    match v.get_ref() {
        DeValue::Array(items) => {
            for item in items.iter() {
                match (param.numeric(), item.get_ref()) {
                    (Some(kind), DeValue::String(s)) => {
                        expand_numbers(src, key, item.span(), kind, s, &mut out)?
                    }
                    (None, DeValue::String(s)) if is_steps(param) => {
                        each_step_set(src, key, item.span(), param, s, &mut out)?
                    }
                    _ => out.push(single(src, key, param, item)?),
                }
            }
        }
        DeValue::String(s) => match param.numeric() {
            Some(kind) => expand_numbers(src, key, span.clone(), kind, s, &mut out)?,
            None if matches!(param, Param::Prompt | Param::NegativePrompt) => {
                out.push(Value::Text(s.to_string()))
            }
            None if matches!(param, Param::Blocks | Param::NegBlocks) => {
                out.push(word(src, key, span.clone(), param, s)?)
            }
            None if is_steps(param) => each_step_set(src, key, span.clone(), param, s, &mut out)?,
            None => {
                for part in s.split(',') {
                    out.push(word(src, key, span.clone(), param, part.trim())?);
                }
            }
        },
        DeValue::Table(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {
            return Err(src.error(
                span,
                key,
                format!(
                    "expected a list of values, found {}",
                    v.get_ref().type_str()
                ),
            ));
        }
        _ => out.push(single(src, key, param, v)?),
    }
    if out.is_empty() {
        return Err(src.error(span, key, "an axis needs at least one value"));
    }
    Ok(out)
}

/// An axis must not repeat a value (two cells would be the same image).
pub fn unique(src: &Source, key: &str, span: Range<usize>, values: &[Value]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for a in values {
        if !seen.insert(format!("{a:?}")) {
            return Err(src.error(
                span,
                key,
                format!("value `{a}` appears twice; every cell must differ"),
            ));
        }
    }
    Ok(())
}

pub fn number(src: &Source, key: &str, v: &Spanned<DeValue>) -> Result<f64> {
    let parsed = match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|x| x as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        other => {
            return Err(src.error(
                v.span(),
                key,
                format!("expected a number, found {}", other.type_str()),
            ));
        }
    };
    parsed.ok_or_else(|| src.error(v.span(), key, "cannot read this number"))
}

/// An integer (`steps`, `seed`, counts) in `min..=max`.
pub fn integer(src: &Source, key: &str, v: &Spanned<DeValue>, min: u64, max: u64) -> Result<u64> {
    let x = number(src, key, v)?;
    match check_number(src, key, v.span(), NumKind::Int { min, max }, x)? {
        Value::Int(n) => Ok(n),
        _ => unreachable!("NumKind::Int checks to Value::Int"),
    }
}

fn check_number(
    src: &Source,
    key: &str,
    span: Range<usize>,
    kind: NumKind,
    x: f64,
) -> Result<Value> {
    if !x.is_finite() {
        return Err(src.error(span, key, format!("{x} is not a finite number")));
    }
    match kind {
        NumKind::Float { min, max } => {
            if x < min || x > max {
                return Err(src.error(
                    span,
                    key,
                    format!("{x} is out of range: it must be between {min} and {max}"),
                ));
            }
            Ok(Value::Num(x))
        }
        NumKind::Int { min, max } => {
            if x.fract() != 0.0 {
                return Err(src.error(span, key, format!("{x} is not a whole number")));
            }
            if x < min as f64 || x > max as f64 {
                return Err(src.error(
                    span,
                    key,
                    format!("{x} is out of range: it must be between {min} and {max}"),
                ));
            }
            Ok(Value::Int(x as u64))
        }
        NumKind::Method(spec) => match spec.check(x) {
            Ok(()) => Ok(Value::Num(x)),
            Err(e) => Err(src.error(span, key, e)),
        },
    }
}

fn word(src: &Source, key: &str, span: Range<usize>, param: Param, s: &str) -> Result<Value> {
    fn parse<T: DeserializeOwned>(
        src: &Source,
        key: &str,
        span: Range<usize>,
        s: &str,
        choices: &str,
    ) -> Result<T> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| src.error(span, key, format!("{s:?} is not one of {choices}")))
    }
    Ok(match param {
        Param::Prompt | Param::NegativePrompt | Param::Subject => Value::Text(s.to_string()),
        Param::Negative => Value::Negative(parse(src, key, span, s, "none, text, image, both")?),
        Param::Adapter => Value::Adapter(parse(src, key, span, s, AdapterKind::NAMES)?),
        Param::Scheduler => Value::Scheduler(parse(
            src,
            key,
            span,
            s,
            "ddim, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras",
        )?),
        Param::NoImage => Value::NoImage(parse(src, key, span, s, "reference, black")?),
        Param::Method => Value::Method(parse(src, key, span, s, Method::NAMES)?),
        Param::Window => Value::Window(parse(src, key, span, s, "steps, sigma")?),
        Param::Blocks | Param::NegBlocks => {
            Value::Blocks(s.parse().map_err(|e: String| src.error(span, key, e))?)
        }
        Param::IpScaling => Value::IpScaling(parse(src, key, span, s, IpScaling::NAMES)?),
        Param::Negtome => match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(src.error(span, key, format!("{s:?} is not one of true, false"))),
        },
        Param::StepsAt | Param::NegStepsAt | Param::Trace => Value::Steps(Some(
            s.parse().map_err(|e: String| src.error(span, key, e))?,
        )),
        Param::NegOff => Value::NegOff(parse(src, key, span, s, NegOff::NAMES)?),
        Param::PositiveImage | Param::NegativeImage => {
            Value::Image((!(s.is_empty() || s == "none")).then(|| s.to_string()))
        }
        // The sizes' default follows the image (`auto`); the crop's is 0x0; the negative
        // keys' follow the cond row's values.
        Param::OriginalSize
        | Param::TargetSize
        | Param::NegativeOriginalSize
        | Param::NegativeCropsCoordsTopLeft
        | Param::NegativeTargetSize
            if s == "auto" =>
        {
            Value::Size(None)
        }
        p if is_micro(p) => Value::Size(Some(
            s.parse::<MicroPair>()
                .map_err(|e| src.error(span, key, e))?,
        )),
        _ => {
            return Err(src.error(span, key, format!("expected a number, found {s:?}")));
        }
    })
}

fn is_micro(param: Param) -> bool {
    matches!(
        param,
        Param::OriginalSize
            | Param::CropsCoordsTopLeft
            | Param::TargetSize
            | Param::NegativeOriginalSize
            | Param::NegativeCropsCoordsTopLeft
            | Param::NegativeTargetSize
    )
}

fn is_steps(param: Param) -> bool {
    matches!(param, Param::StepsAt | Param::NegStepsAt | Param::Trace)
}

/// A step-set axis string: one set (`"3, 5, 7-9"`), or with the range form `each [every |
/// from | until] RANGE` one set per value of an A1111 integer range: `"each 0-24"` is one
/// single-step set per step 0..24, `"each from 0-20 (+5)"` is from 0, from 5, ..., from 20.
fn each_step_set(
    src: &Source,
    key: &str,
    span: Range<usize>,
    param: Param,
    s: &str,
    out: &mut Vec<Value>,
) -> Result<()> {
    let Some(rest) = s.trim().strip_prefix("each ") else {
        out.push(word(src, key, span, param, s)?);
        return Ok(());
    };
    let rest = rest.trim();
    let (rule, range) = ["every", "from", "until"]
        .into_iter()
        .find_map(|w| Some((w, rest.strip_prefix(w)?)))
        .unwrap_or(("", rest));
    let values = parse_range(range).map_err(|e| src.error(span.clone(), key, e))?;
    for x in values {
        if x.fract() != 0.0 || x < 0.0 {
            return Err(src.error(
                span,
                key,
                format!("{s:?}: {x} is not a whole step index (steps are 0, 1, 2, ...)"),
            ));
        }
        out.push(word(
            src,
            key,
            span.clone(),
            param,
            format!("{rule} {x}").trim(),
        )?);
    }
    Ok(())
}

/// Expands `1, 2.5, 3-9 (+3), 0-1 [5]` into numbers checked against `kind`.
fn expand_numbers(
    src: &Source,
    key: &str,
    span: Range<usize>,
    kind: NumKind,
    text: &str,
    out: &mut Vec<Value>,
) -> Result<()> {
    for item in text.split(',') {
        let values = parse_range(item).map_err(|e| src.error(span.clone(), key, e))?;
        if out.len() + values.len() > MAX_AXIS_VALUES {
            return Err(src.error(span, key, format!("more than {MAX_AXIS_VALUES} values")));
        }
        for x in values {
            out.push(check_number(src, key, span.clone(), kind, x)?);
        }
    }
    Ok(())
}

/// One item of a numeric axis string: a number, `A-B` (step 1), `A-B (+S)`, `A-B (-S)` or
/// `A-B [N]` (N values evenly spaced, ends included).
pub fn parse_range(item: &str) -> std::result::Result<Vec<f64>, String> {
    let item = item.trim();
    if item.is_empty() {
        return Err("empty value (a stray comma?)".into());
    }
    let (body, suffix) = match item.find(['(', '[']) {
        Some(i) => (item[..i].trim(), Some(item[i..].trim())),
        None => (item, None),
    };
    let num = |s: &str| -> std::result::Result<f64, String> {
        let s = s.trim();
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{s:?} is not a number (in {item:?})"))
    };
    // The '-' between the ends: not a leading sign, not an exponent's sign.
    let bytes = body.as_bytes();
    let dash =
        (1..bytes.len()).find(|&i| bytes[i] == b'-' && !matches!(bytes[i - 1], b'e' | b'E' | b'-'));
    let Some(dash) = dash else {
        if suffix.is_some() {
            return Err(format!(
                "{item:?}: a step or count needs a range like 1-5 (+2) or 1-10 [5]"
            ));
        }
        return Ok(vec![num(body)?]);
    };
    let (a, b) = (num(&body[..dash])?, num(&body[dash + 1..])?);
    let too_many = || format!("{item:?} has more than {MAX_AXIS_VALUES} values");
    let values = match suffix {
        Some(s) if s.starts_with('[') && s.ends_with(']') => {
            let n: usize = s[1..s.len() - 1]
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: the count in [..] must be a whole number"))?;
            if n == 0 {
                return Err(format!("{item:?}: the count must be at least 1"));
            }
            if n > MAX_AXIS_VALUES {
                return Err(too_many());
            }
            if n == 1 {
                vec![a]
            } else {
                (0..n)
                    .map(|i| round(a + (b - a) * i as f64 / (n - 1) as f64))
                    .collect()
            }
        }
        Some(s) if s.starts_with('(') && s.ends_with(')') => {
            let step = num(&s[1..s.len() - 1])?;
            stepped(item, a, b, step)?
        }
        Some(s) => {
            return Err(format!(
                "{item:?}: cannot read {s:?}; write (+STEP) or [COUNT]"
            ));
        }
        None => stepped(item, a, b, if b >= a { 1.0 } else { -1.0 })?,
    };
    Ok(values)
}

fn stepped(item: &str, a: f64, b: f64, step: f64) -> std::result::Result<Vec<f64>, String> {
    if step == 0.0 {
        return Err(format!("{item:?}: the step must not be zero"));
    }
    if (b - a) * step < 0.0 {
        return Err(format!(
            "{item:?}: the step {step} goes away from the end {b}; write a positive step \
             for an increasing range and a negative one for a decreasing range"
        ));
    }
    let n = ((b - a) / step + 1e-9).floor() + 1.0;
    if n > MAX_AXIS_VALUES as f64 {
        return Err(format!("{item:?} has more than {MAX_AXIS_VALUES} values"));
    }
    Ok((0..n as usize)
        .map(|i| round(a + step * i as f64))
        .collect())
}

/// Removes float noise (0.1 * 3 = 0.30000000000000004) from range values.
fn round(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_ranges_expand_with_steps_and_counts() {
        assert_eq!(parse_range("1-5 (+2)").unwrap(), vec![1.0, 3.0, 5.0]);
        assert_eq!(parse_range("1-5").unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(parse_range("5-1 (-2)").unwrap(), vec![5.0, 3.0, 1.0]);
        assert_eq!(
            parse_range("1-10 [5]").unwrap(),
            vec![1.0, 3.25, 5.5, 7.75, 10.0]
        );
        assert_eq!(
            parse_range("0-1 (+0.1)").unwrap().len(),
            11,
            "float steps include the end"
        );
        assert_eq!(parse_range("0-0.3 (+0.1)").unwrap()[3], 0.3);
        assert_eq!(parse_range(" 2.5 ").unwrap(), vec![2.5]);
        assert_eq!(parse_range("1e-1").unwrap(), vec![0.1]);
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        for (bad, why) in [
            ("1-5 (+0)", "zero"),
            ("1-5 (-1)", "goes away"),
            ("5-1 (+1)", "goes away"),
            ("1-5 [0]", "at least 1"),
            ("1-5 [x]", "whole number"),
            ("a-5", "not a number"),
            ("", "empty"),
            ("3 (+1)", "needs a range"),
            ("0-1e9 (+0.0001)", "more than"),
        ] {
            let err = parse_range(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
