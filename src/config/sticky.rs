//! `[pools.NAME.sticky]`: sticky sessions by cookie (HAProxy's `cookie … insert`,
//! nginx Plus's `sticky cookie`). The cookie's name and attributes are checked here;
//! its value, an opaque keyed digest of the server, is made by the pool.

use std::time::Duration;

use super::Sticky;
use super::check::Check;
use super::file::FileSticky;

/// The default cookie name.
const DEFAULT_COOKIE: &str = "switchyard_sticky";

pub(super) fn sticky(cx: &mut Check<'_>, f: &FileSticky) -> Sticky {
    let cookie = match &f.cookie {
        Some(c) if !is_token(c.get_ref()) => {
            cx.err(
                c.span(),
                format!(
                    "cookie name {:?} must be a token: letters, digits and !#$%&'*+-.^_`|~",
                    c.get_ref()
                ),
            );
            DEFAULT_COOKIE.to_owned()
        }
        Some(c) => c.get_ref().clone(),
        None => DEFAULT_COOKIE.to_owned(),
    };
    let path = match &f.path {
        Some(p) if !p.get_ref().starts_with('/') || !is_attr(p.get_ref()) => {
            cx.err(
                p.span(),
                format!(
                    "cookie path {:?} must start with `/` and hold no `;` or control characters",
                    p.get_ref()
                ),
            );
            "/".to_owned()
        }
        Some(p) => p.get_ref().clone(),
        None => "/".to_owned(),
    };
    let same_site = same_site(cx, f);
    if same_site == "None"
        && f.secure == Some(false)
        && let Some(s) = &f.same_site
    {
        cx.err(
            s.span(),
            "same_site = \"None\" needs a Secure cookie: browsers drop it otherwise",
        );
    }
    let mut attributes = format!("; Path={path}");
    if f.http_only.unwrap_or(true) {
        attributes += "; HttpOnly";
    }
    attributes += &format!("; SameSite={same_site}");
    if f.max_age.is_some() {
        let d = cx.duration(&f.max_age, "max_age", Duration::ZERO);
        attributes += &format!("; Max-Age={}", d.as_secs().max(1));
    }
    Sticky {
        cookie,
        attributes,
        secure: f.secure,
        secret: f.secret.clone(),
    }
}

fn same_site(cx: &mut Check<'_>, f: &FileSticky) -> &'static str {
    match f
        .same_site
        .as_ref()
        .map(|s| (s, s.get_ref().to_ascii_lowercase()))
    {
        None => "Lax",
        Some((_, v)) if v == "lax" => "Lax",
        Some((_, v)) if v == "strict" => "Strict",
        Some((_, v)) if v == "none" => "None",
        Some((s, _)) => {
            cx.err(
                s.span(),
                format!(
                    "same_site {:?}: expected \"Lax\", \"Strict\" or \"None\"",
                    s.get_ref()
                ),
            );
            "Lax"
        }
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie attribute value: printable, no `;`.
fn is_attr(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}
