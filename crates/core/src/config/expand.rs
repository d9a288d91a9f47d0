//! `${VAR}` in configuration values: every string may name environment variables, expanded
//! as the file is read, so that an unset one is an error naming the variable and the line.
//! While a whole file is read ([`collecting`]), unset variables and unreadable secret files
//! are gathered instead, so that one run reports every one of them.

use std::cell::RefCell;

use serde::{Deserialize, Deserializer};

thread_local! {
    /// The problems gathered by [`collecting`], when it runs on this thread.
    static GATHERED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `read` gathering missing variables and files instead of failing at the first; returns
/// what it returned and what was gathered.
pub fn collecting<T>(read: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = GATHERED.with(|g| g.borrow_mut().replace(Vec::new()));
    let result = read();
    let gathered = GATHERED.with(|g| std::mem::replace(&mut *g.borrow_mut(), outer));
    (result, gathered.unwrap_or_default())
}

/// A value that cannot be had: gathered when [`collecting`] (the value is then left empty),
/// else the error.
pub fn missing(problem: String) -> Result<(), String> {
    GATHERED.with(|g| match g.borrow_mut().as_mut() {
        Some(gathered) => {
            if !gathered.contains(&problem) {
                gathered.push(problem);
            }
            Ok(())
        }
        None => Err(problem),
    })
}

/// Expands `${VAR}` from `lookup`; `$$` stands for a literal `$`.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{text}`"))?;
            let name = &tail[..end];
            if name.is_empty() {
                return Err("empty variable name `${}`".into());
            }
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => missing(format!(
                    "environment variable `{name}` is not set: export it or change the value"
                ))?,
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn from_environment(text: &str) -> Result<String, String> {
    expand_env(text, |name| std::env::var(name).ok())
}

/// A string, expanded.
pub fn expand<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    from_environment(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// An optional string, expanded (for fields that default to `None`).
pub fn expand_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expand(d).map(Some)
}

/// A list of strings, each expanded.
pub fn expand_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|item| from_environment(item).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_dollars() {
        let look = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b$$c$d", look).unwrap(), "axb$c$d");
        let err = expand_env("${NOPE}", look).unwrap_err();
        assert!(err.contains("`NOPE`"), "{err}");
        assert!(expand_env("${A", look).is_err());
    }

    #[test]
    fn collecting_gathers_every_missing_variable_once() {
        let look = |_: &str| None;
        let (results, gathered) = collecting(|| {
            [
                expand_env("${ONE}/${TWO}", look),
                expand_env("${ONE}", look),
            ]
        });
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(gathered.len(), 2, "{gathered:?}");
        assert!(gathered[0].contains("`ONE`") && gathered[1].contains("`TWO`"));
        // Outside, the first is an error again.
        assert!(expand_env("${ONE}", look).is_err());
    }
}
