//! Every type error of a file, not only the first. serde stops at the first error, so
//! when a syntactically valid file fails to deserialize, each of its sections (a
//! `[table]` or `[[array]]` header with its sub-tables) is deserialized on its own as
//! well, and the errors of all of them are reported, each at its place in the file.

use std::ops::Range;
use std::path::Path;

use super::error::{ConfigError, hint};
use super::file::FileConfig;

/// The errors for a file whose deserialization failed with `first`.
pub fn errors(path: &Path, src: &str, first: &toml::de::Error) -> Vec<ConfigError> {
    let at = |span: Option<Range<usize>>, msg: &str| {
        ConfigError::at(path, src, span.clone(), hint(msg.trim_end(), src, span))
    };
    let mut out = vec![at(first.span(), first.message())];
    // A syntax error makes the sections meaningless: report it alone.
    if toml::from_str::<toml::Table>(src).is_err() {
        return out;
    }
    let mut seen: Vec<usize> = first.span().map(|s| s.start).into_iter().collect();
    for (offset, text) in sections(src) {
        let Err(e) = toml::from_str::<FileConfig>(text) else {
            continue;
        };
        let span = e.span().map(|s| s.start + offset..s.end + offset);
        let start = span.as_ref().map_or(usize::MAX, |s| s.start);
        if span.is_some() && !seen.contains(&start) {
            seen.push(start);
            out.push(at(span, e.message()));
        }
    }
    out.sort_by_key(|e| (e.line, e.col));
    out
}

/// The file cut at headers: a section runs from a header to the next header that is
/// not one of its sub-tables (`[routes.match]` stays with its `[[routes]]`).
fn sections(src: &str) -> Vec<(usize, &str)> {
    let mut cuts = vec![0];
    let mut open: Option<String> = None;
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        if let Some(header) = header_path(line) {
            let child = open
                .as_ref()
                .is_some_and(|o| header.starts_with(&format!("{o}.")));
            if !child {
                cuts.push(offset);
                open = Some(header);
            }
        }
        offset += line.len();
    }
    cuts.push(src.len());
    cuts.dedup();
    cuts.windows(2).map(|w| (w[0], &src[w[0]..w[1]])).collect()
}

/// `a.b` for a `[a.b]` or `[[a.b]]` line (spaces and quotes dropped).
fn header_path(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let path: Vec<String> = inner
        .split('.')
        .map(|p| p.trim().trim_matches('"').to_owned())
        .collect();
    Some(path.join("."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sub_tables_stay_with_their_section() {
        let src = "[[routes]]\nname = \"a\"\n[routes.match]\nmethod = [\"GET\"]\n[[routes]]\nname = \"b\"\n[pools.a]\nservers = []\n[pools.a.health]\npath = \"/\"\n[pools.b]\n";
        let cut: Vec<&str> = super::sections(src).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            cut,
            [
                "[[routes]]\nname = \"a\"\n[routes.match]\nmethod = [\"GET\"]\n",
                "[[routes]]\nname = \"b\"\n",
                "[pools.a]\nservers = []\n[pools.a.health]\npath = \"/\"\n",
                "[pools.b]\n",
            ]
        );
    }
}
