//! A bounded, lock-free set of idle items that hands out the lowest-numbered one first.
//!
//! Idle upstream connections wait here. A FIFO queue rotates requests through every
//! idle connection, so all of them stay warm, none ever times out, and each grows its
//! buffers to the largest body it ever saw. Handing out the lowest slot first (and
//! filling the lowest free one) keeps the busy set as small as the concurrency, like
//! nginx's keep-alive cache: the same few connections serve while the rest age out.
//!
//! Two bitmaps per 64 slots make both ends O(1) atomic operations: `taken` marks a
//! slot a check-in has reserved, `ready` one that holds an item a checkout may claim.
//! An item is stored before its `ready` bit is set, and its `taken` bit is cleared only
//! after it has been taken out, so a slot never holds two items.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::atomic::AtomicCell;

pub struct Slots<T> {
    cells: Box<[AtomicCell<Option<Box<T>>>]>,
    taken: Box<[AtomicU64]>,
    ready: Box<[AtomicU64]>,
}

impl<T> Slots<T> {
    pub fn new(capacity: usize) -> Self {
        let words = capacity.div_ceil(64);
        Slots {
            cells: (0..capacity).map(|_| AtomicCell::new(None)).collect(),
            taken: (0..words).map(|_| AtomicU64::new(0)).collect(),
            ready: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// Items waiting now (a snapshot; others may change it at once).
    pub fn len(&self) -> usize {
        self.ready
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// The bits of word `w` that are real slots.
    fn limit(&self, w: usize) -> u64 {
        let n = self.cells.len() - w * 64;
        if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
    }

    /// Take the item in the lowest-numbered ready slot.
    pub fn pop(&self) -> Option<Box<T>> {
        for (w, word) in self.ready.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let bit = 1u64 << bits.trailing_zeros();
                let before = word.fetch_and(!bit, Ordering::AcqRel);
                if before & bit != 0
                    && let Some(item) = self.take(w, bit)
                {
                    return Some(item);
                }
                bits = before & !bit;
            }
        }
        None
    }

    /// Put `item` into the lowest-numbered free slot; handed back when all are full.
    pub fn push(&self, item: Box<T>) -> Result<(), Box<T>> {
        for (w, word) in self.taken.iter().enumerate() {
            let limit = self.limit(w);
            let mut free = !word.load(Ordering::Acquire) & limit;
            while free != 0 {
                let bit = 1u64 << free.trailing_zeros();
                let before = word.fetch_or(bit, Ordering::AcqRel);
                if before & bit == 0 {
                    self.put(w, bit, item);
                    return Ok(());
                }
                free = !before & limit & !bit;
            }
        }
        Err(item)
    }

    /// Offer every waiting item to `keep`; those it refuses are dropped. Kept items
    /// return to the slot they came from.
    pub fn retain(&self, mut keep: impl FnMut(&mut T) -> bool) {
        for (w, word) in self.ready.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let bit = 1u64 << bits.trailing_zeros();
                bits &= !bit;
                if word.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
                    continue;
                }
                let kept = self.cells[slot(w, bit)]
                    .swap(None)
                    .and_then(|mut item| keep(&mut item).then_some(item));
                match kept {
                    Some(item) => self.put(w, bit, item),
                    None => {
                        self.taken[w].fetch_and(!bit, Ordering::Release);
                    }
                }
            }
        }
    }

    /// Empty the claimed slot and free it for check-ins.
    fn take(&self, w: usize, bit: u64) -> Option<Box<T>> {
        let item = self.cells[slot(w, bit)].swap(None);
        self.taken[w].fetch_and(!bit, Ordering::Release);
        item
    }

    /// Fill a reserved slot and offer it to checkouts.
    fn put(&self, w: usize, bit: u64, item: Box<T>) {
        self.cells[slot(w, bit)].store(Some(item));
        self.ready[w].fetch_or(bit, Ordering::Release);
    }
}

/// The slot that `bit` of word `w` stands for.
fn slot(w: usize, bit: u64) -> usize {
    w * 64 + bit.trailing_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn cells_are_lock_free() {
        assert!(AtomicCell::<Option<Box<u64>>>::is_lock_free());
    }

    #[test]
    fn lowest_slot_first_and_bounded() {
        let s = Slots::new(3);
        assert!(s.pop().is_none());
        for v in [1, 2, 3] {
            assert!(s.push(Box::new(v)).is_ok());
        }
        assert_eq!(s.push(Box::new(4)).map_err(|b| *b), Err(4));
        assert_eq!(s.len(), 3);
        // The lowest slot is taken and refilled, so the same item keeps serving.
        for _ in 0..5 {
            let a = s.pop().map(|b| *b);
            assert_eq!(a, Some(1));
            assert!(s.push(Box::new(1)).is_ok());
        }
        s.retain(|v| *v != 2);
        assert_eq!(s.len(), 2);
        assert_eq!(s.pop().map(|b| *b), Some(1));
        assert_eq!(s.pop().map(|b| *b), Some(3));
        assert!(s.pop().is_none());
    }

    #[test]
    fn more_than_one_word() {
        let s = Slots::new(130);
        for v in 0..130 {
            assert!(s.push(Box::new(v)).is_ok());
        }
        assert!(s.push(Box::new(999)).is_err());
        for v in 0..130 {
            assert_eq!(s.pop().map(|b| *b), Some(v));
        }
        assert!(s.pop().is_none());
    }

    #[test]
    fn concurrent_pushes_and_pops_lose_and_duplicate_nothing() {
        let s = Arc::new(Slots::new(8));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut dropped = 0u64;
                    for i in 0..20_000u64 {
                        if i % 3 == 0 {
                            if let Some(v) = s.pop() {
                                held.push(*v);
                            }
                        } else if s.push(Box::new(t * 1_000_000 + i)).is_err() {
                            dropped += 1;
                        }
                    }
                    (held, dropped)
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut pushed_ok = 0u64;
        for (t, h) in threads.into_iter().enumerate() {
            let Ok((held, dropped)) = h.join() else {
                panic!("thread {t} panicked")
            };
            pushed_ok += (0..20_000u64).filter(|i| i % 3 != 0).count() as u64 - dropped;
            for v in held {
                assert!(seen.insert(v), "item {v} handed out twice");
            }
        }
        while let Some(v) = s.pop() {
            assert!(seen.insert(*v), "item {v} handed out twice");
        }
        assert_eq!(seen.len() as u64, pushed_ok, "items lost");
    }
}
