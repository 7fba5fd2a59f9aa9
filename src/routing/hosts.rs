//! The host index of a route table: which routes can match a given host, found by
//! hashing, so a table of thousands of sites (a multi-tenant bench) costs the same per
//! request as a table of ten, as nginx's `server_name` hash does.
//!
//! Routes without a `host` condition may match any host; routes with one are listed
//! under each exact name, and under each wildcard suffix (`*.example.com` as
//! `.example.com`). A request's candidates are those lists merged in file order, so the
//! first matching route is the same one a linear scan finds.

use std::borrow::Cow;
use std::collections::HashMap;

use super::Route;
use super::matcher::HostMatch;

/// Below this many routes with a `host` condition a scan is cheaper than hashing the
/// host (a route test costs about 20 ns, a lookup and merge about 70 ns).
const INDEX_FROM: usize = 16;
/// At most this many candidate lists are merged (any-host, exact, and suffixes); a host
/// with more labels falls back to a scan of every route.
const MAX_LISTS: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    /// Whether the table is large enough to use the index.
    used: bool,
    any: Vec<usize>,
    exact: HashMap<String, Vec<usize>>,
    suffix: HashMap<String, Vec<usize>>,
}

impl HostIndex {
    pub fn new(routes: &[Route]) -> Self {
        Self::from(routes, INDEX_FROM)
    }

    /// The index, used when at least `threshold` routes have a host condition.
    pub fn from(routes: &[Route], threshold: usize) -> Self {
        let mut idx = HostIndex::default();
        for (i, r) in routes.iter().enumerate() {
            if r.matcher.hosts.is_empty() {
                idx.any.push(i);
            }
            for h in &r.matcher.hosts {
                let (map, key) = match h {
                    HostMatch::Exact(k) => (&mut idx.exact, k),
                    HostMatch::Suffix(k) => (&mut idx.suffix, k),
                };
                let list = map.entry(key.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        idx.used = routes.len() - idx.any.len() >= threshold;
        idx
    }

    /// Whether a scan of every route is as good (few routes have a host condition).
    pub fn is_trivial(&self) -> bool {
        !self.used
    }

    /// The candidate lists for `host`, each in file order; `None` when there are too
    /// many to merge (the caller scans every route).
    pub fn candidates<'a>(&'a self, host: Option<&str>) -> Option<Lists<'a>> {
        let mut lists = Lists::default();
        lists.push(&self.any);
        let Some(host) = host else {
            return Some(lists);
        };
        let host: Cow<'_, str> = match host.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Owned(host.to_ascii_lowercase()),
            false => Cow::Borrowed(host),
        };
        if let Some(l) = self.exact.get(host.as_ref()) {
            lists.push(l);
        }
        if !self.suffix.is_empty() {
            // Every proper suffix that starts at a dot: `a.b.c` → `.b.c`, `.c`.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(l) = self.suffix.get(&host[i..]) {
                    if lists.len == MAX_LISTS {
                        return None;
                    }
                    lists.push(l);
                }
            }
        }
        Some(lists)
    }
}

/// Up to [`MAX_LISTS`] sorted lists of route indices, walked as one merged list.
#[derive(Debug, Default)]
pub struct Lists<'a> {
    lists: [&'a [usize]; MAX_LISTS],
    len: usize,
}

impl<'a> Lists<'a> {
    fn push(&mut self, l: &'a [usize]) {
        if self.len < MAX_LISTS && !l.is_empty() {
            self.lists[self.len] = l;
            self.len += 1;
        }
    }

    /// The smallest index at or after `from` in any list, if any.
    pub fn next_at(&self, from: usize) -> Option<usize> {
        self.lists[..self.len]
            .iter()
            .filter_map(|l| {
                let at = l.partition_point(|&i| i < from);
                l.get(at).copied()
            })
            .min()
    }
}
