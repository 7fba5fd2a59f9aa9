//! One resolution of one name with hickory-resolver: every A/AAAA address of a host,
//! or the targets of an SRV name (lowest priority, their weights) and their addresses.
//! The answer is classified the way the pool must treat it: addresses found; the name
//! has none (NXDOMAIN or no record: the service is gone); or the resolver failed
//! (timeout, SERVFAIL, REFUSED: keep the last good set).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::{MAX_WEIGHT, NameConfig, ResolverSettings, ServerConfig};

/// What one resolution said.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The addresses (with weights) and how long they may be cached.
    Found(Vec<ServerConfig>, Duration),
    /// The name exists nowhere or has no address: the service is gone.
    Gone(String),
    /// The resolver could not answer: the last good set stays.
    Failed(String),
}

/// A resolver for `settings`: its name servers or the system's, `/etc/hosts` first,
/// no cache (the task decides when to ask again).
pub fn resolver(settings: &ResolverSettings) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match &settings.nameservers {
        Some(list) => {
            let mut servers = Vec::new();
            for &addr in list {
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    let mut ns = NameServerConfig::new(addr, protocol);
                    ns.trust_negative_responses = true;
                    servers.push(ns);
                }
            }
            let group = NameServerConfigGroup::from(servers);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = settings.attempts;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.cache_size = 0;
    Ok(builder.build())
}

/// Resolve `name` once.
pub async fn resolve(r: &TokioResolver, name: &NameConfig) -> Outcome {
    match name {
        NameConfig::Host { host, port, weight } => match r.lookup_ip(host.as_str()).await {
            Ok(found) => {
                let ttl = ttl(found.valid_until());
                let addrs = found
                    .iter()
                    .map(|ip| ServerConfig {
                        addr: SocketAddr::new(ip, *port),
                        weight: *weight,
                    })
                    .collect();
                found_or_gone(addrs, ttl, host)
            }
            Err(e) => classify(&e),
        },
        NameConfig::Srv { name } => srv(r, name).await,
    }
}

/// An SRV name: the lowest-priority targets, each target's addresses with its weight.
async fn srv(r: &TokioResolver, name: &str) -> Outcome {
    let found = match r.srv_lookup(name).await {
        Ok(f) => f,
        Err(e) => return classify(&e),
    };
    let mut ttl_left = ttl(found.as_lookup().valid_until());
    let best = found.iter().map(|s| s.priority()).min().unwrap_or(0);
    let mut addrs: Vec<ServerConfig> = Vec::new();
    for rec in found.iter().filter(|s| s.priority() == best) {
        let target = rec.target().to_utf8();
        let weight = u32::from(rec.weight()).clamp(1, MAX_WEIGHT);
        match r.lookup_ip(target.as_str()).await {
            Ok(ips) => {
                ttl_left = ttl_left.min(ttl(ips.valid_until()));
                for ip in ips.iter() {
                    let addr = SocketAddr::new(ip, rec.port());
                    if !addrs.iter().any(|a| a.addr == addr) {
                        addrs.push(ServerConfig { addr, weight });
                    }
                }
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => return Outcome::Failed(format!("SRV target {target}: {e}")),
        }
    }
    found_or_gone(addrs, ttl_left, name)
}

fn found_or_gone(mut addrs: Vec<ServerConfig>, ttl: Duration, name: &str) -> Outcome {
    if addrs.is_empty() {
        return Outcome::Gone(format!("{name} has no address"));
    }
    addrs.sort_by_key(|a| a.addr);
    Outcome::Found(addrs, ttl)
}

fn ttl(valid_until: Instant) -> Duration {
    valid_until.saturating_duration_since(Instant::now())
}

/// NXDOMAIN, or an answer without the records asked for.
fn is_gone(e: &ResolveError) -> bool {
    e.is_nx_domain() || e.is_no_records_found()
}

fn classify(e: &ResolveError) -> Outcome {
    if e.is_nx_domain() {
        Outcome::Gone("NXDOMAIN: no such name".into())
    } else if is_gone(e) {
        Outcome::Gone("no A/AAAA record".into())
    } else {
        Outcome::Failed(e.to_string())
    }
}
