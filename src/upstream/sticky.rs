//! Sticky sessions by cookie. Each server of a pool with `[pools.NAME.sticky]` gets an
//! opaque cookie value: the first 128 bits, in hex, of HMAC-SHA256 over the pool's
//! name and the server's address, keyed by the pool's `secret` or else by a random key
//! made once per process (so reloads keep it). Without the key no value can be made
//! for any server: a forged or stale value matches none and is ignored.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, header};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Sticky;

/// One server's cookie: its value and the `Set-Cookie` that gives it.
#[derive(Debug)]
pub struct StickyCookie {
    pub value: Box<str>,
    plain: HeaderValue,
    secure: HeaderValue,
}

impl StickyCookie {
    pub fn new(cfg: &Sticky, pool: &str, addr: SocketAddr) -> Self {
        let tag = hmac::sign(
            &key(cfg.secret.as_deref()),
            format!("{pool}\n{addr}").as_bytes(),
        );
        let mut value = String::with_capacity(32);
        for b in tag.as_ref().iter().take(16) {
            let _ = write!(value, "{b:02x}");
        }
        let set = |secure: bool| {
            let text = format!(
                "{}={value}{}{}",
                cfg.cookie,
                cfg.attributes,
                if secure { "; Secure" } else { "" }
            );
            HeaderValue::from_str(&text)
                .expect("invariant: the config checked the cookie's name and attributes")
        };
        let (plain, secure) = match cfg.secure {
            Some(always) => (set(always), set(always)),
            None => (set(false), set(true)),
        };
        StickyCookie {
            value: value.into(),
            plain,
            secure,
        }
    }

    /// The `Set-Cookie` for a request over HTTPS (`https`) or plain HTTP.
    pub fn header(&self, https: bool) -> &HeaderValue {
        if https { &self.secure } else { &self.plain }
    }
}

/// The HMAC key: the pool's secret, or the process's random one.
fn key(secret: Option<&str>) -> hmac::Key {
    static RANDOM: OnceLock<[u8; 32]> = OnceLock::new();
    match secret {
        Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()),
        None => {
            let bytes = RANDOM.get_or_init(|| {
                let mut k = [0u8; 32];
                if SystemRandom::new().fill(&mut k).is_err() {
                    // No system randomness: still unguessable enough from outside.
                    k.iter_mut().for_each(|b| *b = fastrand::u8(..));
                }
                k
            });
            hmac::Key::new(hmac::HMAC_SHA256, bytes)
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secret: Option<&str>) -> Sticky {
        Sticky {
            cookie: "sy".into(),
            attributes: "; Path=/; HttpOnly; SameSite=Lax".into(),
            secure: None,
            secret: secret.map(Into::into),
        }
    }

    #[test]
    fn values_are_opaque_stable_per_key_and_differ_per_server() {
        let a: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8000".parse().unwrap();
        let one = StickyCookie::new(&cfg(Some("k")), "web", a);
        assert_eq!(one.value.len(), 32);
        assert!(!one.value.contains("10.0.0.1"), "opaque");
        assert_eq!(
            one.value,
            StickyCookie::new(&cfg(Some("k")), "web", a).value
        );
        assert_ne!(
            one.value,
            StickyCookie::new(&cfg(Some("k")), "web", b).value
        );
        assert_ne!(
            one.value,
            StickyCookie::new(&cfg(Some("other")), "web", a).value
        );
        assert_ne!(one.value, StickyCookie::new(&cfg(None), "web", a).value);
        assert_eq!(
            one.header(true).to_str().unwrap(),
            format!("sy={}; Path=/; HttpOnly; SameSite=Lax; Secure", one.value)
        );
        assert!(!one.header(false).to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sy=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("sy=def"));
        assert_eq!(cookie(&h, "sy"), Some("abc"));
        assert_eq!(cookie(&h, "s"), None);
    }
}
