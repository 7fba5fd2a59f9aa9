//! TOML values as the generated config writes them.

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}
