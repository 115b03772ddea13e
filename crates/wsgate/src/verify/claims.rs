//! Where in a token's claims wsgate reads who and what.
//!
//! Identity providers do not use wsgate's claim names: the subject may be `oid`, permissions
//! live in `roles`, `groups`, `scp` or Keycloak's `realm_access.roles`. A [`ClaimMap`] names,
//! per provider, the claim for the subject and for the channel patterns a token may subscribe
//! to and publish to; a [`ClaimPath`] is a dotted name that walks into objects. Values are a
//! list of strings or one space-separated string (as OAuth's `scope`).

use serde_json::Value;

/// A claim's place: a dotted name (`realm_access.roles`) walking into objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    /// The whole name, as configured.
    name: String,
}

/// A claim name that cannot be a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a claim name (dot-separated, non-empty parts)")]
pub struct BadClaimPath(pub String);

impl ClaimPath {
    /// Longest path accepted (a config value, but read for every token).
    pub const MAX_LEN: usize = 256;

    /// `name`, checked: non-empty parts between dots, at most [`ClaimPath::MAX_LEN`] bytes.
    pub fn new(name: &str) -> Result<Self, BadClaimPath> {
        let bad = name.is_empty()
            || name.len() > Self::MAX_LEN
            || name.split('.').any(str::is_empty)
            || name.chars().any(char::is_control);
        if bad {
            return Err(BadClaimPath(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether the path is one plain claim name (no dots).
    pub fn is_plain(&self, name: &str) -> bool {
        self.name == name
    }

    /// The value at this path in `claims`, if every step is an object holding the next part.
    /// A claim whose own name contains dots is found too (the whole name is tried first).
    pub fn read<'v>(&self, claims: &'v Value) -> Option<&'v Value> {
        if let Some(v) = claims.get(&self.name) {
            return Some(v);
        }
        self.name
            .split('.')
            .try_fold(claims, |v, part| v.as_object()?.get(part))
    }
}

/// The claims a provider's tokens carry wsgate's facts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    /// The subject (default `sub`): a non-empty string, else the token is refused.
    pub subject: ClaimPath,
    /// Channel patterns the token may subscribe to (default `channels`).
    pub channels: ClaimPath,
    /// Channel patterns the token may publish to (default `publish`).
    pub publish: ClaimPath,
}

impl Default for ClaimMap {
    fn default() -> Self {
        let path = |n: &str| ClaimPath { name: n.to_owned() };
        Self {
            subject: path("sub"),
            channels: path("channels"),
            publish: path("publish"),
        }
    }
}

impl ClaimMap {
    /// Whether this is the default mapping (the fast path reads it without a parsed tree).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// An endpoint's policy (`require`): claims a credential must hold to be taken there, such
/// as `{ scope = "chat", roles = ["member"], "realm_access.roles" = ["ops"], tenant = "acme" }`.
/// Every entry must hold: each required value is in the token's claim (a list, or the words
/// of a space-separated string), or, for a single string claim, equal to it. Credentials
/// without claims (static tokens, API keys) hold none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    entries: Vec<(ClaimPath, Vec<String>)>,
}

impl Requirements {
    /// No requirement.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also requires every one of `values` in the claim at `path`.
    pub fn with(mut self, path: ClaimPath, values: impl IntoIterator<Item = String>) -> Self {
        self.entries.push((path, values.into_iter().collect()));
        self
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `claims` hold every entry.
    pub fn allow(&self, claims: &Value) -> bool {
        self.entries.iter().all(|(path, values)| {
            let have = path.read(claims);
            values.iter().all(|v| holds(have, v))
        })
    }
}

/// A list of strings, or one string split at whitespace (as `scope`); anything else: none.
pub fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Whether `required` is held by the claim value `have`: contained in a list, one of the
/// words of a space-separated string, or equal to a single string.
pub fn holds(have: Option<&Value>, required: &str) -> bool {
    match have {
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(required)),
        Some(Value::String(s)) => s == required || s.split_whitespace().any(|w| w == required),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_walk_into_objects() {
        let claims = json!({"realm_access":{"roles":["ops","dev"]},"oid":"u1","a.b":"flat"});
        let p = |n| ClaimPath::new(n).unwrap();
        assert_eq!(
            p("realm_access.roles").read(&claims),
            Some(&json!(["ops", "dev"]))
        );
        assert_eq!(p("oid").read(&claims), Some(&json!("u1")));
        assert_eq!(
            p("a.b").read(&claims),
            Some(&json!("flat")),
            "a dotted claim name"
        );
        assert_eq!(p("realm_access.roles.x").read(&claims), None);
        assert_eq!(p("missing.x").read(&claims), None);
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert!(ClaimPath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requirements_hold_only_when_every_entry_does() {
        let p = |n| ClaimPath::new(n).unwrap();
        let req = Requirements::new()
            .with(p("scope"), ["chat".to_owned()])
            .with(
                p("realm_access.roles"),
                ["ops".to_owned(), "dev".to_owned()],
            )
            .with(p("tenant"), ["acme".to_owned()]);
        let ok =
            json!({"scope":"read chat","realm_access":{"roles":["dev","ops"]},"tenant":"acme"});
        assert!(req.allow(&ok));
        let mut missing_role = ok.clone();
        missing_role["realm_access"]["roles"] = json!(["ops"]);
        assert!(!req.allow(&missing_role));
        let mut other_tenant = ok.clone();
        other_tenant["tenant"] = json!("acme-evil");
        assert!(!req.allow(&other_tenant));
        assert!(!req.allow(&Value::Null), "no claims hold nothing");
        assert!(Requirements::new().allow(&Value::Null));
    }

    #[test]
    fn lists_and_space_separated_strings() {
        assert_eq!(words(Some(&json!("read write"))), ["read", "write"]);
        assert_eq!(words(Some(&json!(["a", 1, "b"]))), ["a", "b"]);
        assert!(words(Some(&json!({"a": 1}))).is_empty());
        assert!(holds(Some(&json!("chat admin")), "chat"));
        assert!(holds(Some(&json!(["member"])), "member"));
        assert!(holds(Some(&json!("acme")), "acme"));
        assert!(!holds(Some(&json!("acme-corp")), "acme"));
        assert!(!holds(None, "x"));
    }
}
