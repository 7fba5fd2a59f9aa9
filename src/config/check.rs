//! The config check's collector ([`Check`]): every problem found while turning the file
//! into a runtime config, each pointing at the value that caused it, and the parsers of
//! values every section shares (sizes, durations, counts, paths).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors};
use super::file::SpanStr;

/// The config check under way: the file being read, and every problem found so far,
/// each at its line and column.
pub(super) struct Check<'a> {
    pub(super) path: &'a Path,
    pub(super) src: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Check<'a> {
    pub(super) fn new(path: &'a Path, src: &'a str) -> Self {
        Check {
            path,
            src,
            errors: Vec::new(),
        }
    }

    pub(super) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every problem, in file order.
    pub(super) fn into_errors(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.col));
        ConfigErrors(self.errors)
    }

    pub(super) fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors
            .push(ConfigError::at(self.path, self.src, Some(span), msg));
    }

    /// A size like nginx's `client_max_body_size`: bytes, or with `k`, `m` or `g`
    /// (KiB, MiB, GiB; `KB`/`MB`/`GB` and `KiB`/`MiB`/`GiB` too). `"0"` means no limit.
    pub(super) fn body_size(&mut self, v: &Option<SpanStr>, key: &str) -> Option<u64> {
        let v = v.as_ref()?;
        match parse_size(v.get_ref()) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` = {:?} is not a size; write e.g. \"1m\", \"50MB\", \"512k\" or \"0\" for no limit",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A count that must be at least 1.
    pub(super) fn count(&mut self, v: &Option<toml::Spanned<u32>>, key: &str, d: u32) -> u32 {
        match v {
            Some(n) if *n.get_ref() == 0 => {
                self.err(n.span(), format!("`{key}` must be at least 1"));
                d
            }
            Some(n) => *n.get_ref(),
            None => d,
        }
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<SpanStr>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(v.span(), format!("`{key}` must be greater than zero"));
                default
            }
            Err(e) => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` = {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"2m\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn size(&mut self, v: &Option<Spanned<u64>>, key: &str, default: usize) -> usize {
        match v {
            None => default,
            Some(n) if *n.get_ref() == 0 => {
                self.err(n.span(), format!("`{key}` must be greater than zero"));
                default
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(usize::MAX),
        }
    }
}

/// A path from the config, relative to the config file's directory.
pub(super) fn relative(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// `"50m"` → 52,428,800; see [`Check::body_size`].
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A header name from the config.
pub(super) fn header_name(cx: &mut Check<'_>, n: &SpanStr) -> Option<HeaderName> {
    match HeaderName::from_bytes(n.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            cx.err(
                n.span(),
                format!("{:?} is not a valid header name", n.get_ref()),
            );
            None
        }
    }
}

/// `{ "Name" = "value" }` header tables (`add_response_headers`, `add_request_headers`).
pub(super) fn header_pairs(
    cx: &mut Check<'_>,
    map: &std::collections::BTreeMap<SpanStr, SpanStr>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(name) = header_name(cx, k) else {
            continue;
        };
        match HeaderValue::from_str(v.get_ref()) {
            Ok(val) => out.push((name, val)),
            Err(_) => cx.err(
                v.span(),
                format!(
                    "{:?} is not a valid header value (control characters are not allowed)",
                    v.get_ref()
                ),
            ),
        }
    }
    out
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_parse_like_nginx() {
        for (s, want) in [
            ("0", Some(0)),
            ("1m", Some(1 << 20)),
            ("50MB", Some(50 << 20)),
            ("512k", Some(512 << 10)),
            ("2 GiB", Some(2 << 30)),
            ("1024", Some(1024)),
        ] {
            assert_eq!(super::parse_size(s), want, "{s}");
        }
        for s in ["", "m", "1x", "-1", "1.5m"] {
            assert_eq!(super::parse_size(s), None, "{s}");
        }
    }
}
