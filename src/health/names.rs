//! Server names in the manager: a reload's config is kept as loaded (`raw`), the
//! resolver task is told its names, and every snapshot is built from `raw` with the
//! names' current addresses added (`resolve::expand`). A changed set rebuilds the
//! current generation; servers that stay keep their state, new ones join through
//! health checks where the pool has them, and removed ones finish what they have.

use super::Manager;
use crate::config::Config;
use crate::resolve::{Resolved, Spec, expand};

impl Manager {
    /// A reload: follow its names, and build it as the next generation.
    pub(super) fn apply(&mut self, config: Config) -> u64 {
        let spec = Spec::of(&config);
        self.sets
            .retain(|(pool, name), _| spec.names.iter().any(|(p, n, _)| p == pool && n == name));
        self.spec.send_if_modified(|s| {
            let changed = *s != spec;
            *s = spec;
            changed
        });
        self.raw = config;
        let expanded = expand(&self.raw, &self.sets, &self.state.names);
        let generation = self.state.load().generation + 1;
        self.build(&expanded, generation)
    }

    /// A name's set changed: rebuild the current generation with it. The build
    /// publishes; nothing more to do after.
    pub(super) fn on_resolved(&mut self, r: Resolved) -> bool {
        let followed = self
            .raw
            .pools
            .iter()
            .any(|p| p.name == r.key.0 && p.names.contains(&r.key.1));
        if !followed {
            return false;
        }
        self.sets.insert(r.key, r.addrs);
        let expanded = expand(&self.raw, &self.sets, &self.state.names);
        let generation = self.state.load().generation;
        self.build(&expanded, generation);
        false
    }
}
