//! The retry rule, as one pure decision: never send a write twice.
//!
//! A failed attempt is described by what failed, whether the connection was reused,
//! whether any request byte may have reached the server, whether the body can be sent
//! again, and the method. From that alone [`decide`] says whether another attempt may
//! follow (and where), and whether the client must be told that the outcome is unknown.
//!
//! - Nothing left (connect refused or timed out, or a request handed back unsent): any
//!   method may go again, if its body can (empty, kept whole, or handed back untouched).
//! - A reused connection that closed before any answer (the keep-alive race: the server
//!   closed it while idle): a safe method with a replayable body is sent once more on a
//!   new connection to the same server; anything else stops, outcome unknown.
//! - Anything else after bytes may have left (reset or close after writing, a read
//!   timeout, a malformed answer): only a method in the pool's `idempotent_methods`
//!   (default GET HEAD OPTIONS TRACE) with a replayable body goes again, and after a
//!   read timeout only if the pool sets `retry.on_timeout` (a slow report run twice
//!   doubles the load that made it slow).

use http::Method;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    ConnectRefused,
    ConnectTimeout,
    /// The connection ended before the request was written (hyper handed it back).
    ClosedBeforeWrite,
    /// Reset or closed after (part of) the request was written, before an answer.
    ClosedAfterWrite,
    /// No response head within `read_timeout`.
    ReadTimeout,
    /// The answer could not be parsed.
    BadResponse,
}

/// Where the request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// Kept whole: every attempt replays it.
    Kept,
    /// Streamed and handed back untouched: it can still go.
    Unsent,
    /// Streamed: gone with the failed attempt.
    Streamed,
}

/// One failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub failure: Failure,
    pub reused: bool,
    pub body: Body,
    pub method: &'a Method,
}

/// The pool's settings that bear on the rule.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub idempotent: &'a [Method],
    pub on_timeout: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send again: on a new connection to the same server, or on another server.
    Retry { same_server: bool },
    /// Answer the client with the error; `unknown` when a write may have been applied.
    Stop { unknown: bool },
}

impl Attempt<'_> {
    /// Whether any byte of the request may have reached the server.
    pub fn may_have_reached(&self) -> bool {
        !matches!(
            self.failure,
            Failure::ConnectRefused | Failure::ConnectTimeout | Failure::ClosedBeforeWrite
        )
    }
}

/// Safe methods (RFC 9110 §9.2.1): never a write, whatever an application does.
fn is_safe(m: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(m)
}

pub fn decide(a: &Attempt<'_>, p: &Policy<'_>) -> Decision {
    let replayable = matches!(a.body, Body::Empty | Body::Kept | Body::Unsent);
    if !a.may_have_reached() {
        return match replayable {
            true => Decision::Retry { same_server: false },
            false => Decision::Stop { unknown: false },
        };
    }
    let unknown = !is_safe(a.method);
    let again = replayable && p.idempotent.contains(a.method);
    if a.reused && a.failure == Failure::ClosedAfterWrite {
        return match again {
            true => Decision::Retry { same_server: true },
            false => Decision::Stop { unknown },
        };
    }
    let timeout_ok = a.failure != Failure::ReadTimeout || p.on_timeout;
    match again && timeout_ok {
        true => Decision::Retry { same_server: false },
        false => Decision::Stop { unknown },
    }
}

#[cfg(test)]
mod tests {
    use super::Body::*;
    use super::Failure::*;
    use super::*;

    const R: Decision = Decision::Retry { same_server: false };
    const SAME: Decision = Decision::Retry { same_server: true };
    const STOP: Decision = Decision::Stop { unknown: false };
    const UNKNOWN: Decision = Decision::Stop { unknown: true };

    /// (failure, reused, body, method, on_timeout, decision) with the default
    /// idempotent set GET HEAD OPTIONS TRACE.
    #[rustfmt::skip]
    const TABLE: &[(Failure, bool, Body, &str, bool, Decision)] = &[
        // Nothing reached the server: every method goes again if its body can.
        (ConnectRefused,    false, Empty,    "POST",   false, R),
        (ConnectRefused,    false, Unsent,   "POST",   false, R),
        (ConnectRefused,    false, Streamed, "POST",   false, STOP),
        (ConnectTimeout,    false, Empty,    "DELETE", false, R),
        (ConnectTimeout,    false, Kept,     "GET",    false, R),
        (ClosedBeforeWrite, true,  Unsent,   "PATCH",  false, R),
        (ClosedBeforeWrite, true,  Empty,    "GET",    false, R),
        // The keep-alive race on a reused connection.
        (ClosedAfterWrite,  true,  Empty,    "GET",    false, SAME),
        (ClosedAfterWrite,  true,  Kept,     "HEAD",   false, SAME),
        (ClosedAfterWrite,  true,  Streamed, "GET",    false, STOP),
        (ClosedAfterWrite,  true,  Empty,    "POST",   false, UNKNOWN),
        (ClosedAfterWrite,  true,  Empty,    "DELETE", false, UNKNOWN),
        (ClosedAfterWrite,  true,  Kept,     "PUT",    false, UNKNOWN),
        // May have reached the server on a new connection.
        (ClosedAfterWrite,  false, Empty,    "GET",    false, R),
        (ClosedAfterWrite,  false, Empty,    "OPTIONS", false, R),
        (ClosedAfterWrite,  false, Streamed, "GET",    false, STOP),
        (ClosedAfterWrite,  false, Empty,    "POST",   false, UNKNOWN),
        (ClosedAfterWrite,  false, Empty,    "PUT",    false, UNKNOWN),
        (ClosedAfterWrite,  false, Empty,    "PATCH",  false, UNKNOWN),
        (ClosedAfterWrite,  false, Empty,    "DELETE", false, UNKNOWN),
        (BadResponse,       false, Empty,    "GET",    false, R),
        (BadResponse,       true,  Empty,    "POST",   false, UNKNOWN),
        // Read timeouts: never, unless the pool opts in (and then safe methods only).
        (ReadTimeout,       false, Empty,    "GET",    false, STOP),
        (ReadTimeout,       true,  Empty,    "GET",    false, STOP),
        (ReadTimeout,       false, Empty,    "GET",    true,  R),
        (ReadTimeout,       false, Empty,    "DELETE", false, UNKNOWN),
        (ReadTimeout,       false, Empty,    "POST",   true,  UNKNOWN),
    ];

    #[test]
    fn the_retry_table() {
        let idempotent = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
        for (i, &(failure, reused, body, m, on_timeout, want)) in TABLE.iter().enumerate() {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            let a = Attempt {
                failure,
                reused,
                body,
                method: &method,
            };
            let p = Policy {
                idempotent: &idempotent,
                on_timeout,
            };
            assert_eq!(
                decide(&a, &p),
                want,
                "row {i}: {a:?} on_timeout={on_timeout}"
            );
        }
    }

    #[test]
    fn a_pool_that_opts_put_and_delete_in_retries_them() {
        let idempotent = [Method::GET, Method::PUT, Method::DELETE];
        let p = Policy {
            idempotent: &idempotent,
            on_timeout: false,
        };
        let del = Method::DELETE;
        let a = Attempt {
            failure: ClosedAfterWrite,
            reused: false,
            body: Empty,
            method: &del,
        };
        assert_eq!(decide(&a, &p), R);
        let a = Attempt {
            failure: ReadTimeout,
            ..a
        };
        assert_eq!(
            decide(&a, &p),
            UNKNOWN,
            "no retry after a read timeout without on_timeout"
        );
    }
}
