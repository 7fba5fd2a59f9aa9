//! The one way the tests write a config: readable TOML, section by section, in the
//! order the file has them. `{listen}` (`{listen0}`, `{listen1}`, …) and `{admin}` are
//! filled in by [`Proxy::start`](super::Proxy::start); everything else is written out.
//!
//! ```ignore
//! let cfg = Config::new()
//!     .pool("p", [backend.addr], r#"read_timeout = "2s""#)
//!     .route("all", "p", "");
//! let proxy = Proxy::start(&cfg).await;
//! ```

use std::fmt::{self, Display, Write};
use std::ops::Deref;

/// The admin API on a port of its own (`{admin}`), for tests that read it.
pub const ADMIN: &str = r#"
[admin]
addr = "{admin}"
"#;

/// A config under construction; it reads as the TOML file it renders (`Deref<str>`).
#[derive(Debug, Clone, Default)]
pub struct Config(String);

impl Config {
    /// One listener on `{listen}`.
    pub fn new() -> Config {
        Config::bare().listener("{listen}", "")
    }

    /// Nothing yet: for configs whose listeners are written out.
    pub fn bare() -> Config {
        Config(String::new())
    }

    /// The usual test proxy: one listener, pool `p` of `servers` (with `keys`), and
    /// route `all` sending everything to it.
    pub fn one_pool<S: Display>(servers: impl IntoIterator<Item = S>, keys: &str) -> Config {
        Config::new().pool("p", servers, keys).route("all", "p", "")
    }

    /// A `[[listeners]]` entry on `addr`, with more `keys` for it.
    pub fn listener(self, addr: impl Display, keys: &str) -> Config {
        self.toml(&format!("[[listeners]]\naddr = \"{addr}\"\n{keys}"))
    }

    /// `[pools.NAME]` with `servers` and more `keys`.
    pub fn pool<S: Display>(
        self,
        name: &str,
        servers: impl IntoIterator<Item = S>,
        keys: &str,
    ) -> Config {
        let list: Vec<String> = servers.into_iter().map(|s| format!("\"{s}\"")).collect();
        self.toml(&format!(
            "[pools.{name}]\nservers = [{}]\n{keys}",
            list.join(", ")
        ))
    }

    /// A `[[routes]]` entry named `name` to `pool`, with more `keys` (conditions, headers).
    pub fn route(self, name: &str, pool: &str, keys: &str) -> Config {
        self.toml(&format!(
            "[[routes]]\nname = \"{name}\"\npool = \"{pool}\"\n{keys}"
        ))
    }

    /// A `[[routes]]` entry without a pool (files, redirects), with its `keys`.
    pub fn action_route(self, name: &str, keys: &str) -> Config {
        self.toml(&format!("[[routes]]\nname = \"{name}\"\n{keys}"))
    }

    /// Any other TOML, as written: sections, or keys of the section written last.
    /// Indentation is taken off, so a raw string can sit at the code's indent.
    pub fn toml(mut self, text: &str) -> Config {
        for line in dedent(text).lines() {
            let _ = writeln!(self.0, "{line}");
        }
        self
    }
}

impl Deref for Config {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// The file's bytes, for `std::fs::write`.
impl AsRef<[u8]> for Config {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` without its common leading whitespace, and without a first empty line.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or_else(|| l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}
