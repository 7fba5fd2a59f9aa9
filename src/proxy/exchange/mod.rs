//! The upstream exchange: from a routed, shaped request to the upstream's answer.
//!
//! - `attempt.rs`: the [`Exchange`](attempt::Exchange) of one request, attempt by attempt.
//! - `body_source.rs`: the request body across attempts.
//! - `pick.rs`: the server for an attempt, and a place in the pool's queue (admission).
//! - `retry.rs`: the one pure decision whether a failed attempt may be followed by
//!   another (never a write twice).
//! - `passive.rs`: answers and failures reported to the server's counters.
//! - `upstream_request.rs`: the one place an upstream request is shaped.
//! - `headers.rs`: hop-by-hop removal and `X-Forwarded-*`.
//! - `tunnel.rs`: WebSocket upgrades, relayed both ways.

pub mod attempt;
pub mod body_source;
pub mod headers;
pub mod passive;
pub mod pick;
pub mod retry;
pub mod tunnel;
pub mod upstream_request;
