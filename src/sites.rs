//! Sites: which site (a Frappe site folder, or any tenant name) a request belongs to.
//!
//! A listener may pin one site (bench's per-port sites). Otherwise the site is the
//! request's host, lower-case and without its port (nginx's `$host`), looked up in the
//! optional domain → site map first (bench's `domains` aliases). The lookup is one hash
//! probe whatever the number of sites. The name is used in file roots (`{site}`), in
//! header templates, and in the site header the proxy always sets upstream.
//!
//! A host that cannot be a folder name (`..`, a `/`, a leading dot) gives no site: file
//! routes that need one answer 404, and the site header is removed, never passed on.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;

/// `[sites]`, compiled.
#[derive(Debug, Clone)]
pub struct Sites {
    /// Set on every upstream request to the site's name, replacing a client's value
    /// (default `X-Frappe-Site-Name`).
    pub header: HeaderName,
    /// Domain (lower-case) → site.
    pub domains: HashMap<Box<str>, Arc<str>>,
}

impl Sites {
    /// The site of a request: the listener's pinned one, else the mapped or plain host.
    pub fn resolve(&self, pinned: Option<&Arc<str>>, host: Option<&str>) -> Option<Arc<str>> {
        if let Some(p) = pinned {
            return Some(p.clone());
        }
        let host = host?;
        let lower: Arc<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        if let Some(site) = self.domains.get(&*lower) {
            return Some(site.clone());
        }
        valid_name(&lower).then_some(lower)
    }
}

/// Whether `s` can name a site folder: DNS-name characters (and `_`), not starting with
/// a dot, so it can never step out of the directory it is joined to.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !s.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Sites {
        Sites {
            header: HeaderName::from_static("x-frappe-site-name"),
            domains: [("erp-alias.test".into(), Arc::from("erp.test"))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn host_alias_and_pinned() {
        let s = sites();
        assert_eq!(
            s.resolve(None, Some("ERP.test")).as_deref(),
            Some("erp.test")
        );
        assert_eq!(
            s.resolve(None, Some("erp-alias.test")).as_deref(),
            Some("erp.test")
        );
        assert_eq!(s.resolve(None, Some("hr.test")).as_deref(), Some("hr.test"));
        let pinned = Arc::from("one.test");
        assert_eq!(
            s.resolve(Some(&pinned), Some("hr.test")).as_deref(),
            Some("one.test")
        );
        assert_eq!(s.resolve(None, None), None);
    }

    #[test]
    fn hosts_that_are_not_folder_names_give_no_site() {
        let s = sites();
        for bad in ["..", ".", ".hidden", "a/b", "a..b", "a\\b", ""] {
            assert_eq!(s.resolve(None, Some(bad)), None, "{bad}");
        }
    }
}
