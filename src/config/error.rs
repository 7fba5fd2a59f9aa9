//! Config errors a person can act on: `file:line:col: message`, then the source line
//! and a caret under the offending value.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line; 0 when the problem has no position (the file could not be read).
    pub line: usize,
    /// 1-based column in characters.
    pub col: usize,
    pub msg: String,
    /// The source line the error points into, for the caret rendering.
    pub snippet: String,
}

impl ConfigError {
    /// An error at a byte span of `src`.
    pub fn at(path: &Path, src: &str, span: Option<Range<usize>>, msg: impl Into<String>) -> Self {
        let (line, col, snippet) = match span {
            Some(span) => locate(src, span.start),
            None => (0, 0, String::new()),
        };
        ConfigError {
            path: path.to_path_buf(),
            line,
            col,
            msg: msg.into(),
            snippet,
        }
    }
}

/// Byte offset → (1-based line, 1-based char column, the line's text).
fn locate(src: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = src
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    let text = src[line_start..].lines().next().unwrap_or("").to_owned();
    (line, col, text)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.path.display(), self.msg);
        }
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.msg
        )?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.snippet)?;
        write!(f, "{:gutter$} | {:>col$}", "", "^", col = self.col)
    }
}

/// Every error found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{e}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{} in config", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}

/// A hint for serde's type and key errors: the duration format where a number was
/// given for a duration key, the closest valid key for a typo.
pub(super) fn hint(msg: &str, src: &str, span: Option<std::ops::Range<usize>>) -> String {
    let mut out = msg.to_owned();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let typo = rest.split('`').next().unwrap_or("");
        let expected = rest.split_once("expected").map_or("", |(_, e)| e);
        let closest = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|k| (distance(typo, k), k))
            .min();
        if let Some((d, k)) = closest
            && d <= 2.max(typo.len() / 3)
        {
            out.push_str(&format!("; did you mean `{k}`?"));
        }
        return out;
    }
    if msg.contains("invalid type: integer") && msg.contains("expected a string") {
        let key = span
            .and_then(|s| src.get(..s.start))
            .and_then(|before| before.lines().last())
            .map(|l| l.split('=').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        const DURATIONS: [&str; 7] = [
            "timeout",
            "interval",
            "debounce",
            "time",
            "slow_start",
            "aging",
            "expires",
        ];
        if DURATIONS.iter().any(|d| key.ends_with(d)) {
            out.push_str(&format!(
                "; `{key}` is a duration like \"30s\", \"500ms\" or \"2m\""
            ));
        } else {
            out.push_str("; write it in quotes");
        }
    }
    out
}

/// Levenshtein distance of two short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "a = 1\nbb = \"x\"\n";
        let e = ConfigError::at(Path::new("f.toml"), src, Some(11..14), "bad");
        assert_eq!((e.line, e.col), (2, 6));
        assert_eq!(e.snippet, "bb = \"x\"");
        let shown = e.to_string();
        assert!(shown.starts_with("f.toml:2:6: bad\n"), "{shown}");
        assert!(shown.ends_with("  |      ^"), "{shown:?}");
    }

    #[test]
    fn no_span_has_no_position() {
        let e = ConfigError::at(Path::new("f.toml"), "", None, "cannot read");
        assert_eq!(e.to_string(), "f.toml: cannot read");
    }
}
