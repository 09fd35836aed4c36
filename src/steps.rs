//! Step sets: the sampling steps where a branch is active, written as a list of 0-based
//! step indices and rules (`"12"`, `"3, 5, 7-9"`, `"every 2"`, `"from 10"`, `"until 10"`).
//! A leaf module (params, experiment and the CLI use it).
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest step count a cell may have (`steps` is 1..1000): sets are checked for
/// overlaps over this many steps when they are read.
const MAX_STEPS: usize = 1000;

/// One item of a step set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Item {
    /// Steps `a..=b` (a single step when `a == b`).
    Range(usize, usize),
    /// Steps 0, k, 2k, ...
    Every(usize),
    /// Steps k and after.
    From(usize),
    /// Steps 0 to k, k included.
    Until(usize),
}

impl Item {
    fn contains(self, i: usize) -> bool {
        match self {
            Item::Range(a, b) => a <= i && i <= b,
            Item::Every(k) => i.is_multiple_of(k),
            Item::From(k) => i >= k,
            Item::Until(k) => i <= k,
        }
    }

    /// The highest step this item names by number (`every` names none).
    fn highest_named(self) -> Option<usize> {
        match self {
            Item::Range(_, b) => Some(b),
            Item::From(k) | Item::Until(k) => Some(k),
            Item::Every(_) => None,
        }
    }

    fn first(self) -> usize {
        match self {
            Item::Range(a, _) | Item::From(a) => a,
            Item::Every(_) | Item::Until(_) => 0,
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Range(a, b) if a == b => write!(f, "{a}"),
            Item::Range(a, b) => write!(f, "{a}-{b}"),
            Item::Every(k) => write!(f, "every {k}"),
            Item::From(k) => write!(f, "from {k}"),
            Item::Until(k) => write!(f, "until {k}"),
        }
    }
}

/// A set of 0-based sampling steps: items that do not overlap, kept in order of their first
/// step (so `"7-9, 3"` and `"3, 7-9"` are one set, written the second way).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepSet(Vec<Item>);

impl StepSet {
    /// Whether step `i` (0-based) is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.0.iter().any(|item| item.contains(i))
    }

    /// The steps of the set among `0..steps`.
    pub fn active(&self, steps: usize) -> Vec<usize> {
        (0..steps).filter(|&i| self.contains(i)).collect()
    }

    /// A probe's shape and step: `"k"` is (`"at"`, k), `"from k"` (`"from"`, k), `"until k"`
    /// (`"until"`, k); other sets are not probes (the report's step curves need one step).
    pub fn probe(&self) -> Option<(&'static str, usize)> {
        match self.0.as_slice() {
            [Item::Range(a, b)] if a == b => Some(("at", *a)),
            [Item::From(k)] => Some(("from", *k)),
            [Item::Until(k)] => Some(("until", *k)),
            _ => None,
        }
    }

    /// Whether the set fits a run of `steps` steps: every step it names by number exists,
    /// and it has at least one step there.
    pub fn check(&self, steps: usize) -> Result<(), String> {
        if let Some(k) = self.0.iter().filter_map(|i| i.highest_named()).max()
            && k >= steps
        {
            return Err(format!(
                "\"{self}\" names step {k}, but the cell has {steps} steps (0-{})",
                steps - 1
            ));
        }
        if self.active(steps).is_empty() {
            return Err(format!("\"{self}\" has no step among the cell's {steps}"));
        }
        Ok(())
    }
}

fn whole(x: f64) -> Option<usize> {
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < MAX_STEPS as f64).then_some(x as usize)
}

fn every(k: usize) -> Result<Item, String> {
    if k == 0 {
        return Err("\"every 0\": the interval must be at least 1".into());
    }
    Ok(Item::Every(k))
}

fn index(s: &str, text: &str) -> Result<usize, String> {
    let s = s.trim();
    let x: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} in {text:?} is not a step index (0, 1, 2, ...)"))?;
    whole(x).ok_or_else(|| {
        format!(
            "{s:?} in {text:?} is not a whole step index between 0 and {}",
            MAX_STEPS - 1
        )
    })
}

fn item(s: &str, text: &str) -> Result<Item, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("an empty item in {text:?} (a stray comma?)"));
    }
    for (word, make) in [
        ("every", every as fn(usize) -> Result<Item, String>),
        ("from", |k| Ok(Item::From(k))),
        ("until", |k| Ok(Item::Until(k))),
    ] {
        if let Some(rest) = s.strip_prefix(word) {
            return make(index(rest, text)?);
        }
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (index(a, text)?, index(b, text)?);
            if a > b {
                return Err(format!("{s:?} in {text:?} runs backwards; write {b}-{a}"));
            }
            Ok(Item::Range(a, b))
        }
        None => {
            let i = index(s, text)?;
            Ok(Item::Range(i, i))
        }
    }
}

impl std::str::FromStr for StepSet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("an empty step set: name at least one step (e.g. \"12\", \"3, 5, 7-9\", \"every 2\", \"from 10\", \"until 10\")".into());
        }
        let mut items = text
            .split(',')
            .map(|s| item(s, text))
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|i| (i.first(), *i));
        for (n, a) in items.iter().enumerate() {
            for b in &items[n + 1..] {
                if let Some(i) = (0..MAX_STEPS).find(|&i| a.contains(i) && b.contains(i)) {
                    return Err(format!(
                        "\"{a}\" and \"{b}\" in {text:?} overlap (both name step {i})"
                    ));
                }
            }
        }
        Ok(StepSet(items))
    }
}

impl fmt::Display for StepSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(", "))
    }
}

/// As the text `"3, 5, 7-9"` (TOML, JSON, records.csv).
impl Serialize for StepSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StepSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> StepSet {
        s.parse().unwrap()
    }

    #[test]
    fn step_set_forms_name_their_steps() {
        assert_eq!(set("12").active(25), vec![12]);
        assert_eq!(set("3, 5, 7-9").active(25), vec![3, 5, 7, 8, 9]);
        assert_eq!(set("every 2").active(7), vec![0, 2, 4, 6]);
        assert_eq!(set("from 10").active(13), vec![10, 11, 12]);
        assert_eq!(set("until 2").active(25), vec![0, 1, 2]);
        assert_eq!(set("until 0").active(25), vec![0]);
        assert_eq!(set(" 7-9 ,3").to_string(), "3, 7-9");
        assert_eq!(set("every 3, 1").active(7), vec![0, 1, 3, 6]);
        let json = serde_json::to_string(&set("from 10, 2")).unwrap();
        assert_eq!(json, "\"2, from 10\"");
        assert_eq!(
            serde_json::from_str::<StepSet>(&json).unwrap(),
            set("2, from 10")
        );
    }

    #[test]
    fn step_set_probe_names_one_step_sets_only() {
        assert_eq!(set("12").probe(), Some(("at", 12)));
        assert_eq!(set("from 5").probe(), Some(("from", 5)));
        assert_eq!(set("until 0").probe(), Some(("until", 0)));
        for other in ["3-4", "3, 5", "every 2", "from 5, 1"] {
            assert_eq!(set(other).probe(), None, "{other}");
        }
    }

    #[test]
    fn step_set_errors_say_why() {
        for (bad, why) in [
            ("", "empty step set"),
            ("3,", "empty item"),
            ("2.5", "not a whole step index"),
            ("-1", "not a step index"),
            ("x", "not a step index"),
            ("every 0", "at least 1"),
            ("9-7", "backwards"),
            ("3, 3", "overlap"),
            ("3-5, 4", "overlap"),
            ("from 10, 12", "overlap"),
            ("until 5, from 5", "overlap"),
            ("every 2, 4", "overlap"),
        ] {
            let err = bad.parse::<StepSet>().unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn step_set_check_names_the_step_count() {
        assert!(set("24").check(25).is_ok());
        let err = set("25").check(25).unwrap_err();
        assert!(
            err.contains("names step 25") && err.contains("25 steps"),
            "{err}"
        );
        assert!(set("from 30").check(25).is_err());
        assert!(set("until 30").check(25).is_err());
        assert!(set("every 30").check(25).is_ok());
    }
}
