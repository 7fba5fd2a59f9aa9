//! The numbers the generated config derives from the bench, each with where it came
//! from: the web pool's concurrency (gunicorn's workers), the `report` class's cap
//! (one worker always left for transactions), and each listener's upload limit
//! (Frappe's `max_file_size` plus room for the multipart form).

use super::Options;
use super::bench::{Bench, Site};

/// bench's nginx: `client_max_body_size 50m`.
const BENCH_BODY_LIMIT: u64 = 50 << 20;
/// Room for the multipart boundaries and the other form fields of an upload.
const MULTIPART_ROOM: u64 = 1 << 20;

/// How many requests one app server handles at once, and why we think so.
#[derive(Debug, Clone)]
pub struct Workers {
    pub n: u32,
    pub from: String,
}

/// The request classes of the web pool: its limit and the `report` cap.
#[derive(Debug, Clone)]
pub struct Classes {
    pub workers: Workers,
    pub report_cap: u32,
    pub cap_from: String,
}

/// `--workers`; with `--from-env` frappe_docker's gunicorn (2 workers × 4 threads);
/// else `gunicorn_workers`, else bench's own default (2 × CPU + 1 of the machine bench
/// runs on; this one).
pub fn workers(b: &Bench, o: &Options) -> Workers {
    if let Some(n) = o.workers {
        return Workers {
            n,
            from: "--workers".into(),
        };
    }
    if o.docker.is_some() {
        // frappe_docker's backend runs gunicorn with its own settings, not the bench's.
        return Workers {
            n: 8,
            from: "frappe_docker's gunicorn: --workers=2 --threads=4 (GUNICORN_WORKERS x GUNICORN_THREADS)".into(),
        };
    }
    if let Some(n) = b.gunicorn_workers {
        return Workers {
            n,
            from: "gunicorn_workers of common_site_config.json".into(),
        };
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = u32::try_from(cpus * 2 + 1).unwrap_or(u32::MAX);
    Workers {
        n,
        from: format!("no gunicorn_workers: bench's default 2 x CPU + 1 with {cpus} CPU(s) here"),
    }
}

/// The classes, or `None` with `--no-classes`.
pub fn classes(b: &Bench, o: &Options) -> Option<Classes> {
    if o.no_classes {
        return None;
    }
    let workers = workers(b, o);
    let (report_cap, cap_from) = match o.report_cap {
        Some(n) => (n.max(1), "--report-cap".to_owned()),
        None => (
            workers.n.saturating_sub(1).max(1),
            "workers - 1: one worker stays free for transactions".to_owned(),
        ),
    };
    Some(Classes {
        workers,
        report_cap,
        cap_from,
    })
}

/// The site's `max_file_size`: its own, else the common config's.
fn max_file_size(b: &Bench, site: &Site) -> Option<u64> {
    site.max_file_size.or(b.max_file_size)
}

/// A listener's `max_body_size` for `sites`, with its comment: bench's 50m, or the
/// largest `max_file_size` plus the multipart room when that is larger.
pub fn body_size<'a>(b: &Bench, sites: impl IntoIterator<Item = &'a Site>) -> (String, String) {
    let need = sites
        .into_iter()
        .filter_map(|s| max_file_size(b, s).map(|m| (m + MULTIPART_ROOM, s)))
        .max_by_key(|(n, _)| *n);
    match need {
        Some((n, s)) if n > BENCH_BODY_LIMIT => {
            let mib = n.div_ceil(1 << 20);
            let file = max_file_size(b, s).unwrap_or(0);
            (
                format!("{mib}m"),
                format!(
                    "max_file_size of {} ({file} bytes) + 1 MiB for the multipart form; bench's nginx has 50m",
                    s.name
                ),
            )
        }
        _ => ("50m".into(), "client_max_body_size 50m".into()),
    }
}

/// The sites whose uploads need more than bench's 50m, with the limit they get.
pub fn raised(b: &Bench) -> Vec<(String, String)> {
    b.sites
        .iter()
        .filter_map(|s| {
            let (size, why) = body_size(b, [s]);
            (why != "client_max_body_size 50m").then(|| (s.name.clone(), size))
        })
        .collect()
}
