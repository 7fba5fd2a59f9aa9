//! Requests refused before they were parsed still get an access-log line, as in nginx,
//! so that log readers such as fail2ban's `nginx-bad-request` filter see them: hyper
//! answered 400, 414 or 431 and closed, or a head did not arrive whole within
//! `header_timeout` (408, logged like nginx's `client_header_timeout`, no answer sent).

use std::net::IpAddr;

use crate::access::{AccessLog, AccessRecord};

/// The status a connection error stands for, if it refused a request before parsing.
pub fn status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let h = e.downcast_ref::<hyper::Error>()?;
    if h.is_timeout() || head_timed_out(h) {
        Some(408)
    } else if h.is_parse_too_large() {
        // hyper's one kind covers both; its text tells them apart.
        Some(if h.to_string().contains("URI too long") {
            414
        } else {
            431
        })
    } else if h.is_parse() && !h.is_parse_version_h2() {
        Some(400)
    } else {
        None
    }
}

/// Whether the framing guard ended the read: a head took longer than `header_timeout`.
fn head_timed_out(h: &hyper::Error) -> bool {
    let io = std::error::Error::source(h).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.and_then(|io| io.get_ref())
        .is_some_and(|inner| inner.is::<super::framing::HeadTimeout>())
}

/// Log a refused request: an access-log line (what arrived of its head) and an event.
pub fn log(access: Option<&AccessLog>, client: IpAddr, status: u16, head: &[u8]) {
    tracing::info!(%client, status, "request refused before it was parsed");
    if let Some(a) = access {
        a.submit(AccessRecord::refused(client, status, head));
    }
}
