//! The experiment file's text, to turn byte spans into `FILE:LINE:COLUMN` in messages.
use anyhow::anyhow;
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: &Path, text: String) -> Self {
        Source {
            path: path.to_path_buf(),
            text,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// `FILE:LINE:COL: KEY: MESSAGE`.
    pub fn error(&self, span: Range<usize>, key: &str, msg: impl Display) -> anyhow::Error {
        let (line, col) = self.line_col(span.start);
        anyhow!("{}:{line}:{col}: {key}: {msg}", self.path.display())
    }

    /// `FILE:LINE:COL: SECTION.KEY: unknown key; did you mean `..`? (known: ..)`: the one
    /// message for a key that no table of the experiment file knows (`section` empty at the
    /// top level).
    pub fn unknown_key(
        &self,
        section: &str,
        key: &str,
        span: Range<usize>,
        known: &[&str],
    ) -> anyhow::Error {
        let hint = match suggest(key, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        let full = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        self.error(
            span,
            &full,
            format!("unknown key; {hint}(known: {})", known.join(", ")),
        )
    }

    /// `FILE:12 (grid.start) and :14 (defaults.end)`: the lines of several keys, for a
    /// message that involves all of them; `None` when none has a place in the file.
    pub fn places(&self, keys: &[(String, Range<usize>)]) -> Option<String> {
        let parts: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, (key, span))| {
                let (line, _) = self.line_col(span.start);
                let file = if i == 0 {
                    self.path.display().to_string()
                } else {
                    String::new()
                };
                format!("{file}:{line} ({key})")
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    /// `FILE: KEY: MESSAGE`, for what has no single place in the file.
    pub fn error_at_key(&self, key: &str, msg: impl Display) -> anyhow::Error {
        anyhow!("{}: {key}: {msg}", self.path.display())
    }
}

/// The known name closest to `unknown` (edit distance at most 2), for "did you mean".
pub fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (distance(unknown, k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_lines_and_columns() {
        let src = Source::new(Path::new("x.toml"), "a = 1\nbb = 2\n".into());
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        assert_eq!(src.line_col(11), (2, 6));
        let msg = src.error(6..8, "grid.bb", "bad").to_string();
        assert_eq!(msg, "x.toml:2:1: grid.bb: bad");
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        assert_eq!(suggest("wieght", ["weight", "start"]), Some("weight"));
        assert_eq!(suggest("zzzzzz", ["weight", "start"]), None);
    }
}
