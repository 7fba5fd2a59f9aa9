//! What goes back to the client.
//!
//! - `body.rs`: [`ProxyBody`](body::ProxyBody), the response body every stage produces,
//!   streamed frame by frame, with the request's end-of-response accounting.
//! - `filters.rs`: error pages and added response headers, on every response.
//! - `compress.rs`: gzip, brotli or zstd, streaming.
//! - `error_response.rs`: the short answer and log event for a failed request.

pub mod body;
pub mod compress;
pub mod error_response;
pub mod filters;
