//! How sending a request upstream failed, for the retry rule: whether anything may have
//! reached the server.

/// Why a send failed, for the retry rule.
#[derive(Debug)]
pub enum SendError {
    /// Nothing reached the server: the connect failed or timed out.
    Connect(std::io::Error),
    /// Nothing reached the server: the HTTP/1 handshake failed on a fresh connection
    /// (or hyper handed the request back unsent).
    NotSent(hyper::Error),
    /// The request may have been written.
    Failed(hyper::Error),
    /// A reused connection ended before any answer: most likely the server closed it
    /// while idle and the request was never read, but that cannot be known.
    Stale(hyper::Error),
    /// No answer began before the deadline (the request may have been written).
    TimedOut,
}

/// Whether a send failed because the connection ended (closed or reset) before an
/// answer began, rather than by a timeout or a bad answer.
pub(super) fn closed_early(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        src = s.source();
    }
    false
}
