//! The `Files` action: serve a file from a route's root (nginx `root` + `try_files`).
//!
//! tower-http's `ServeDir` does the mechanics (ETag and Last-Modified with 304,
//! Range/206/416, HEAD, precompressed siblings). Around it, this module:
//! - refuses what must never reach the disk: encoded slashes and backslashes, double
//!   encoding (a `%XX` left after the one decoding), a backslash; `..` and NUL were
//!   already refused when the path was normalised (`routing::normalize`);
//! - confines the file to the root: unless the route follows symlinks, the kernel
//!   resolves the path beneath the root (`openat2` with `RESOLVE_BENEATH`), so a
//!   symlink leading out of it, even one swapped in meanwhile, counts as missing;
//! - does the file system calls inline, as nginx does (see [`Confined`]);
//! - sets nginx's Content-Type table and the route's `Cache-Control`/`Expires`.
//!
//! `Ok(None)` means no file: the caller falls back to the route's pool, or answers 404.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, File};

use super::mime;
use crate::proxy::error::ProxyError;
use crate::proxy::respond::body::ProxyBody;
use crate::routing::FileRoot;

/// Request headers the file server reads: the range and conditional ones (which an
/// X-Accel-Redirect keeps too), and `Accept-Encoding` for precompressed files.
pub(crate) const CONDITIONAL: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Everything but unreserved characters and `/` is encoded for `ServeDir`, which
/// decodes the path exactly once.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Whether the raw target has what a file path must not: an encoded `/` or `\`, or
/// (after the one decoding) an encoded character left over, i.e. double encoding.
pub(crate) fn refused(raw: &str, decoded: &str) -> Option<&'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Some("an encoded slash in a file path");
    }
    if decoded.contains('\\') {
        return Some("a backslash in a file path");
    }
    let b = decoded.as_bytes();
    let double = b
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    double.then_some("double percent-encoding in a file path")
}

/// Serve `path` (normalised) from `root`, for a GET or HEAD request with these
/// conditional and range headers.
pub(crate) async fn serve(
    root: &FileRoot,
    path: &str,
    headers: &http::HeaderMap,
    method: &Method,
    site: Option<&str>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let rel = match &root.strip_prefix {
        Some(p) => match path.strip_prefix(p.as_str()) {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Ok(None),
        },
        None => path,
    };
    if rel.is_empty() || rel.ends_with('/') {
        return Ok(None);
    }
    let dir = match (root.root.contains("{site}"), site) {
        (false, _) => root.root.clone(),
        (true, Some(s)) => root.root.replace("{site}", s),
        (true, None) => return Ok(None),
    };
    let confine = (!root.follow_symlinks).then(|| Arc::<Path>::from(Path::new(&dir)));
    let mut inner = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *inner.method_mut() = method.clone();
    *inner.uri_mut() = percent_encoding::utf8_percent_encode(rel, ENCODE)
        .to_string()
        .parse()
        .map_err(|_| ProxyError::BadRequest("path cannot be served"))?;
    let encoding = root.precompressed.then_some(&header::ACCEPT_ENCODING);
    for h in CONDITIONAL.iter().chain(encoding) {
        for v in headers.get_all(h) {
            inner.headers_mut().append(h, v.clone());
        }
    }
    let mut svc = ServeDir::with_backend(&dir, Confined::new(confine))
        .append_index_html_on_directories(false)
        .redirect_to_trailing_slash(false);
    if root.precompressed {
        svc = svc
            .precompressed_gzip()
            .precompressed_br()
            .precompressed_zstd();
    }
    let resp = match svc.try_call(inner).await {
        Ok(r) => r,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(ProxyError::File(e)),
    };
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let (mut parts, body) = resp.into_parts();
    finish_head(&mut parts, root, rel);
    let body =
        ProxyBody::boxed(body.map_err(|e| Box::new(e) as crate::proxy::respond::body::BoxError));
    Ok(Some(Response::from_parts(parts, body)))
}

/// nginx's Content-Type and the route's caching headers.
fn finish_head(parts: &mut http::response::Parts, root: &FileRoot, rel: &str) {
    if parts.headers.contains_key(header::CONTENT_TYPE) || parts.status.is_success() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(mime::content_type(rel)),
        );
    }
    let ok = matches!(parts.status.as_u16(), 200 | 206 | 304);
    if !ok {
        return;
    }
    if let Some(d) = root.expires {
        let at = SystemTime::now() + d;
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            parts.headers.insert(header::EXPIRES, v);
        }
        if root.cache_control.is_none()
            && let Ok(v) = HeaderValue::from_str(&format!("max-age={}", d.as_secs()))
        {
            parts.headers.insert(header::CACHE_CONTROL, v);
        }
    }
    if let Some(cc) = &root.cache_control {
        parts.headers.insert(header::CACHE_CONTROL, cc.clone());
    }
}

/// Errors that mean "no such file here" (nginx's `try_files` moves on).
fn missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory
    ) || matches!(e.raw_os_error(), Some(20 | 36 | 40))
}

/// The file system, confined to a root unless `root` is `None`.
///
/// Opens, stats and reads are plain blocking calls on the worker thread, as nginx makes
/// them without `aio threads`: on a local disk (page cache) they take microseconds,
/// where a hand-off to tokio's blocking pool per call cost ten times the CPU of the
/// whole answer. A root on a slow network file system stalls the worker meanwhile.
#[derive(Debug, Clone)]
struct Confined {
    root: Option<Arc<Path>>,
    /// The root directory, opened once per request (the metadata and open calls of one
    /// answer share it).
    dir: Arc<std::sync::OnceLock<rustix::fd::OwnedFd>>,
}

impl Confined {
    fn new(root: Option<Arc<Path>>) -> Self {
        Confined {
            root,
            dir: Arc::default(),
        }
    }

    /// Open `path` (under the root); when confined, no symlink or `..` may lead out of
    /// the root: `openat2(RESOLVE_BENEATH)` refuses that in the kernel, atomically.
    /// `only_path`: an `O_PATH` descriptor, enough for its metadata.
    fn open_checked(&self, path: &Path, only_path: bool) -> io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let Some(root) = &self.root else {
            return std::fs::File::open(path);
        };
        let rel = path
            .strip_prefix(root)
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        let dir = match self.dir.get() {
            Some(d) => d,
            None => {
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let _ = self
                    .dir
                    .set(rustix::fs::open(&**root, flags, Mode::empty())?);
                self.dir.get().ok_or(io::ErrorKind::NotFound)?
            }
        };
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let mode = if only_path {
            OFlags::PATH
        } else {
            OFlags::RDONLY
        };
        match rustix::fs::openat2(dir, rel, mode | OFlags::CLOEXEC, Mode::empty(), how) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(rustix::io::Errno::XDEV) => Err(outside(path)),
            // No openat2 (kernel before 5.6, or a seccomp filter): check after opening.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => open_then_check(root, path),
            Err(e) => Err(e.into()),
        }
    }
}

/// Log a file kept from a client because the way to it leaves the root.
fn outside(path: &Path) -> io::Error {
    tracing::warn!(path = %path.display(), "refused a file outside its route's root (a symlink leaving it; set follow_symlinks to allow)");
    io::ErrorKind::NotFound.into()
}

/// The fallback check: the file actually opened (its descriptor's link, so a swapped
/// symlink cannot race the check) must lie inside the root.
fn open_then_check(root: &Path, path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let root = std::fs::canonicalize(root)?;
    #[cfg(target_os = "linux")]
    let real = {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(path))?
    };
    #[cfg(not(target_os = "linux"))]
    let real = std::fs::canonicalize(path)?;
    if !real.starts_with(&root) {
        return Err(outside(path));
    }
    Ok(file)
}

type Ready<T> = std::future::Ready<io::Result<T>>;

impl Backend for Confined {
    type File = OpenFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<OpenFile>;
    type MetadataFuture = Ready<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        std::future::ready(self.open_checked(&path, false).and_then(OpenFile::new))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        std::future::ready(match &self.root {
            None => std::fs::metadata(&path),
            Some(_) => self.open_checked(&path, true).and_then(|f| f.metadata()),
        })
    }
}

/// A file opened through [`Confined`], read with blocking calls (see there).
#[derive(Debug)]
struct OpenFile {
    file: std::fs::File,
    /// Taken when the file was opened; the answer's length is this one's.
    meta: std::fs::Metadata,
    pos: u64,
    /// The result of the seek started last.
    seek: Option<io::Result<u64>>,
}

impl OpenFile {
    fn new(file: std::fs::File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(OpenFile {
            file,
            meta,
            pos: 0,
            seek: None,
        })
    }
}

impl AsyncRead for OpenFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Only the part of the buffer the rest of the file can fill is zeroed (the
        // reader offers 64 KiB whatever the file's size).
        let left = self.meta.len().saturating_sub(self.pos);
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let n = io::Read::read(&mut self.file, buf.initialize_unfilled_to(want))?;
        buf.advance(n);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for OpenFile {
    fn start_seek(mut self: Pin<&mut Self>, pos: io::SeekFrom) -> io::Result<()> {
        let done = io::Seek::seek(&mut self.file, pos);
        if let Ok(p) = &done {
            self.pos = *p;
        }
        self.seek = Some(done);
        Ok(())
    }

    fn poll_complete(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let pos = self.pos;
        Poll::Ready(self.seek.take().unwrap_or(Ok(pos)))
    }
}

impl File for OpenFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = Ready<std::fs::Metadata>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.meta.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn refuses_encoded_slashes_and_double_encoding() {
        assert!(refused("/files/a%2fb", "/files/a/b").is_some());
        assert!(refused("/files/a%5Cb", "/files/a\\b").is_some());
        assert!(refused("/files/a\\b", "/files/a\\b").is_some());
        assert!(refused("/files/%252e%252e/x", "/files/%2e%2e/x").is_some());
        assert!(refused("/files/a%20b.pdf", "/files/a b.pdf").is_none());
        assert!(refused("/files/100%", "/files/100%").is_none());
    }
}
