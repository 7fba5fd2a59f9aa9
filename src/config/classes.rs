//! Request classes: the names routes set (`class = "report"`; `default` otherwise) and
//! each pool's rule for each of them (`[pools.NAME.classes.CLASS]`).
//!
//! A class a route sets but no pool caps is fine (it is only counted). A class a pool
//! configures that no route sets is an error: a typo would otherwise cap nothing. A
//! cap above the pool's `max_connections` can never bind: a warning.

use std::sync::Arc;
use std::time::Duration;

use super::check::Check;
use super::file::{FileClass, FileConfig};
use super::{ClassRule, PoolConfig};
use crate::routing::Route;

/// Number the classes, point each route at its own and give each pool a rule per class.
/// Returns the class names (index 0 is `default`) and the warnings.
pub(super) fn resolve(
    cx: &mut Check<'_>,
    file: &FileConfig,
    pools: &mut [PoolConfig],
    routes: &mut [Route],
) -> (Vec<Arc<str>>, Vec<String>) {
    let names = number(file, routes);
    let mut warnings = Vec::new();
    for pool in pools.iter_mut() {
        let default = ClassRule {
            cap: None,
            priority: 0,
            queue_size: pool.queue_size,
            queue_timeout: pool.queue_timeout,
        };
        pool.classes = vec![default; names.len()];
        let Some(fp) = file.pools.iter().find(|(k, _)| **k.get_ref() == *pool.name) else {
            continue;
        };
        for (name, fc) in &fp.1.get_ref().classes {
            let Some(i) = names.iter().position(|n| **n == **name.get_ref()) else {
                let set: Vec<&str> = names.iter().map(|n| &**n).collect();
                cx.err(
                    name.span(),
                    format!(
                        "pool `{}` configures class `{}`, which no route sets; routes set: {}",
                        pool.name,
                        name.get_ref(),
                        set.join(", ")
                    ),
                );
                continue;
            };
            pool.classes[i] = rule(cx, pool, name.get_ref(), fc.get_ref(), &mut warnings);
        }
    }
    (names, warnings)
}

/// The class names in order of first use (index 0 is `default`); each route gets its index.
fn number(file: &FileConfig, routes: &mut [Route]) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = vec![Arc::from("default")];
    for (route, fr) in routes.iter_mut().zip(&file.routes) {
        let Some(c) = &fr.get_ref().class else {
            continue;
        };
        route.class = match names.iter().position(|n| **n == **c.get_ref()) {
            Some(i) => i,
            None => {
                names.push(Arc::from(c.get_ref().as_str()));
                names.len() - 1
            }
        };
    }
    names
}

/// One pool's rule for one class; a cap above the pool's `max_connections` is a warning.
fn rule(
    cx: &mut Check<'_>,
    pool: &PoolConfig,
    name: &str,
    fc: &FileClass,
    warnings: &mut Vec<String>,
) -> ClassRule {
    let cap = fc.max_connections.as_ref().map(|m| *m.get_ref());
    if let Some(m) = fc.max_connections.as_ref().filter(|m| *m.get_ref() == 0) {
        cx.err(m.span(), "a class's `max_connections` must be at least 1");
    }
    if let (Some(c), Some(m)) = (cap, pool.max_connections)
        && c > m
    {
        warnings.push(format!("pool `{}`: class `{name}` may have {c} requests in flight per server, more than the server's max_connections {m}; the cap never binds", pool.name));
    }
    let timeout = match &fc.queue_timeout {
        Some(_) => cx.duration(&fc.queue_timeout, "queue_timeout", Duration::ZERO),
        None => pool.queue_timeout,
    };
    ClassRule {
        cap,
        priority: fc.priority.unwrap_or(0),
        queue_size: fc.queue_size.unwrap_or(pool.queue_size),
        queue_timeout: timeout,
    }
}
