//! The request pipeline, one folder per stage in the order a request meets them:
//!
//! ```text
//! serve/      accept loop, connection rounds, framing guard, refused-request log lines
//!   └─ forward.rs   the orchestrator, one request start to finish:
//!        route/     which route (with the bounded body look for `param` routes)
//!        action/    what the route does: files (+ mime), redirects, X-Accel-Redirect
//!        exchange/  the upstream side: pick and admission, attempts and the retry
//!                   decision, passive health, upstream request shaping, tunnels
//!        respond/   response body, filters (headers, error pages), compression,
//!                   error answers
//! request.rs  the per-request context every stage takes (`Ctx`, `Meta`, `Conn`, `Shared`)
//! error.rs    `ProxyError`: every way a request fails, its blame and its status
//! ```
//!
//! Imports point down this list: a stage takes `request.rs`, `error.rs` and the
//! response body, never the orchestrator or the loop above it.

mod action;
pub(crate) mod error;
mod exchange;
mod forward;
pub(crate) mod request;
mod respond;
mod route;
pub mod serve;

pub use error::ProxyError;
pub use respond::body::ProxyBody;
