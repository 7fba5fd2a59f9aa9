//! The path as routes see it, normalised as nginx does before it chooses a location:
//! percent-decoded once, `//` merged, `.` and `..` segments resolved. A `..` that would
//! climb above `/` and a NUL byte are refused (nginx answers both with 400).
//!
//! The target sent upstream is not touched: this is only what matching and file
//! serving see.

use std::borrow::Cow;

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `..` above the root, as in `/../etc/passwd` or `/a/%2e%2e/%2e%2e/x`.
    AboveRoot,
    /// A decoded NUL byte (`%00`).
    Nul,
}

impl PathError {
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::AboveRoot => "the path climbs above the root",
            PathError::Nul => "the path contains a NUL byte",
        }
    }
}

/// The normalised path. Paths that need no work (no `%`, no `//`, no `/.`) are
/// returned as they are, without allocating. Targets that are not paths (`*`) too.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') || !needs_work(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if decoded.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split('/').skip(1) {
        trailing = true;
        match seg {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

/// Whether anything in the path can change under normalisation.
fn needs_work(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'%' || (c == b'/' && matches!(b.get(i + 1), Some(b'/' | b'.'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_nginx() {
        let ok = [
            ("/", "/"),
            ("/assets/app.js", "/assets/app.js"),
            ("//assets///app.js", "/assets/app.js"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            (
                "/assets/../erp.test/site_config.json",
                "/erp.test/site_config.json",
            ),
            ("/assets/%2e%2e/x", "/x"),
            ("/assets/%2E%2E/x", "/x"),
            ("/a%20b", "/a b"),
            ("/a/%2f/b", "/a/b"),
            ("/files/%252e%252e/x", "/files/%2e%2e/x"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/", "/a/"),
            ("*", "*"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(normalize("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/%2e%2e/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/..%2f..%2fx"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a%00.txt"), Err(PathError::Nul));
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize("/api/method/ping"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize("/a.b/c.d"), Ok(Cow::Borrowed(_))));
    }
}
