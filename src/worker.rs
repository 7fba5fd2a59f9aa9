//! Which worker thread the current thread is (0 outside the workers), and how many
//! there are: the per-worker scheduler (`process::workers`) keeps some state per worker,
//! such as upstream keep-alive connections (`upstream::h1`).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// This thread's worker, below [`count`].
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Worker threads with their own upstream keep-alive connections (1 unless the
/// per-worker scheduler runs).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

pub(crate) fn set(i: usize) {
    INDEX.with(|c| c.set(i));
}

pub(crate) fn set_count(n: usize) {
    COUNT.store(n.max(1), Ordering::Relaxed);
}
