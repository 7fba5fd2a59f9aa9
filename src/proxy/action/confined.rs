//! The file system behind the `Files` action: tower-http's [`Backend`], confined to a
//! route's root unless the route follows symlinks.
//!
//! Opens, stats and reads are plain blocking calls on the worker thread, as nginx makes
//! them without `aio threads`: on a local disk (page cache) they take microseconds,
//! where a hand-off to tokio's blocking pool per call cost ten times the CPU of the
//! whole answer. A root on a slow network file system stalls the worker meanwhile.
//!
//! One answer costs one `openat2` and one `fstat`: `ServeDir` asks for a path's
//! metadata (is it a directory?) and then opens it; the metadata call opens the file
//! and keeps it, and the open takes the kept one. The root directory is opened once
//! per second per worker thread (see [`ROOT_REUSE`]), not per request.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File};

/// How long a worker thread reuses an open root directory. A root replaced on disk (a
/// deploy that swaps the directory) is seen within this time, as with nginx's
/// `open_file_cache_valid`.
const ROOT_REUSE: Duration = Duration::from_secs(1);
/// Roots a worker thread keeps open at once (one per route root, or per site).
const ROOTS_KEPT: usize = 32;

/// An open root: its path, its descriptor, and when it was opened.
type OpenRoot = (Arc<Path>, Arc<OwnedFd>, Instant);

thread_local! {
    /// This worker thread's open roots.
    static ROOTS: RefCell<Vec<OpenRoot>> = const { RefCell::new(Vec::new()) };
}

/// The root directory as an `O_PATH` descriptor, from this thread's reuse list.
fn root_dir(root: &Arc<Path>) -> io::Result<Arc<OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    ROOTS.with_borrow_mut(|roots| {
        let now = Instant::now();
        roots.retain(|(_, _, at)| now.duration_since(*at) < ROOT_REUSE);
        if let Some((_, fd, _)) = roots.iter().find(|(p, ..)| p == root) {
            return Ok(fd.clone());
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = Arc::new(rustix::fs::open(&**root, flags, Mode::empty())?);
        if roots.len() < ROOTS_KEPT {
            roots.push((root.clone(), fd.clone(), now));
        }
        Ok(fd)
    })
}

/// The file system of one answer, confined to `root` unless it is `None`.
#[derive(Debug, Clone)]
pub(super) struct Confined {
    root: Option<Arc<Path>>,
    /// The file the metadata call opened, for the open call that follows.
    kept: Arc<OnceLock<Kept>>,
}

#[derive(Debug)]
struct Kept {
    path: PathBuf,
    file: Arc<std::fs::File>,
    meta: std::fs::Metadata,
}

impl Confined {
    pub(super) fn new(root: Option<Arc<Path>>) -> Self {
        Confined {
            root,
            kept: Arc::default(),
        }
    }

    /// Open `path` for reading (never blocking on a FIFO); when confined, no symlink or
    /// `..` may lead out of the root: `openat2(RESOLVE_BENEATH)` refuses that in the
    /// kernel, atomically.
    fn open_checked(&self, path: &Path) -> io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Some(root) = &self.root else {
            return Ok(rustix::fs::open(path, flags, Mode::empty())?.into());
        };
        let rel = path
            .strip_prefix(root)
            .map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
        let dir = root_dir(root)?;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&*dir, rel, flags, Mode::empty(), how) {
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

/// Only regular files and directories (which `ServeDir` answers 404) are served; a
/// FIFO, socket or device under the root counts as missing, as nginx refuses it.
fn served(meta: std::fs::Metadata) -> io::Result<std::fs::Metadata> {
    match meta.is_file() || meta.is_dir() {
        true => Ok(meta),
        false => Err(io::ErrorKind::NotFound.into()),
    }
}

type Ready<T> = std::future::Ready<io::Result<T>>;

impl Backend for Confined {
    type File = OpenFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<OpenFile>;
    type MetadataFuture = Ready<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        if let Some(k) = self.kept.get().filter(|k| k.path == path) {
            return std::future::ready(Ok(OpenFile::new(k.file.clone(), k.meta.clone())));
        }
        let file = self.open_checked(&path).map(Arc::new);
        std::future::ready(file.and_then(|f| {
            let meta = served(f.metadata()?)?;
            Ok(OpenFile::new(f, meta))
        }))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let kept = self.open_checked(&path).and_then(|file| {
            let meta = served(file.metadata()?)?;
            let file = Arc::new(file);
            Ok(Kept { path, file, meta })
        });
        std::future::ready(kept.map(|k| {
            let meta = k.meta.clone();
            let _ = self.kept.set(k);
            meta
        }))
    }
}

/// A file opened through [`Confined`], read with blocking calls (see there).
#[derive(Debug)]
pub(super) struct OpenFile {
    file: Arc<std::fs::File>,
    /// Taken when the file was opened; the answer's length is this one's.
    meta: std::fs::Metadata,
    pos: u64,
    /// The result of the seek started last.
    seek: Option<io::Result<u64>>,
}

impl OpenFile {
    fn new(file: Arc<std::fs::File>, meta: std::fs::Metadata) -> Self {
        OpenFile {
            file,
            meta,
            pos: 0,
            seek: None,
        }
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
        let n = io::Read::read(&mut &*self.file, buf.initialize_unfilled_to(want))?;
        buf.advance(n);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for OpenFile {
    fn start_seek(mut self: Pin<&mut Self>, pos: io::SeekFrom) -> io::Result<()> {
        let done = io::Seek::seek(&mut &*self.file, pos);
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
