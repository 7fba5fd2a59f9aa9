//! switchyard: a reverse proxy and load balancer that routes each request by host,
//! path, query or body parameter, header or method to a named upstream pool.
//!
//! Data flows one way: [`config::load`] → one immutable [`state::Snapshot`] in an
//! `ArcSwap` → the request path in [`proxy`]. [`process`] runs the daemon around them;
//! `main.rs` is a thin shell around [`run`].

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod client_body;
pub mod config;
pub mod conn_cap;
pub mod frappe;
pub mod health;
pub mod host_limit;
pub mod idle;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod resolve;
pub mod routing;
pub mod shortage;
pub mod sites;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod worker;

pub use process::listen::{Listeners, bind, bind_taking};
pub use process::start::{run, run_with_ready};
