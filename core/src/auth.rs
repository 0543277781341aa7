//! Token checks, shared by every HTTP API that writes or administers (ingest, the evaluator).
//!
//! A token is accepted as `Authorization: Token <t>` (InfluxDB 2.x), `Authorization: Bearer <t>`
//! (Prometheus remote_write, Yaffle's own clients), as the password of Basic auth, or as a password
//! query parameter (InfluxDB 1.x's `p`); user names are not checked, the way InfluxDB 2.x's 1.x
//! compatibility API takes tokens. Tokens are compared in constant time, each of them every time, so
//! neither which token matched nor how much of one did shows in the answer's timing.

use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// `[auth]`: the tokens every role's API accepts. With no tokens, authentication is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens. Writes, queries, the evaluator's push and reload need one.
    pub tokens: Vec<String>,
    /// Also require a token on `/metrics` (scrapers send it as `Authorization: Bearer`).
    pub metrics: bool,
}

impl AuthConfig {
    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `/metrics` needs a token.
    pub fn metrics_protected(&self) -> bool {
        self.enabled() && self.metrics
    }
}

/// Whether a request carrying `authorization` (the header's value) and `password` (a query
/// parameter) presents one of `tokens`. Always true when `tokens` is empty (authentication off).
pub fn authorized(tokens: &[String], authorization: Option<&str>, password: Option<&str>) -> bool {
    if tokens.is_empty() {
        return true;
    }
    if password.is_some_and(|p| accepted(tokens, p.as_bytes())) {
        return true;
    }
    let Some(value) = authorization else { return false };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "token" | "bearer" => accepted(tokens, credentials.as_bytes()),
        "basic" => base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|pair| pair.iter().position(|&b| b == b':').map(|i| accepted(tokens, &pair[i + 1..])))
            .unwrap_or(false),
        _ => false,
    }
}

/// Compares `candidate` with every token, without stopping at a match.
fn accepted(tokens: &[String], candidate: &[u8]) -> bool {
    tokens.iter().fold(subtle::Choice::from(0), |found, t| found | t.as_bytes().ct_eq(candidate)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_form() {
        let tokens = vec!["other".to_string(), "s3cret".to_string()];
        let ok = |h: Option<&str>, p: Option<&str>| authorized(&tokens, h, p);
        assert!(ok(Some("Token s3cret"), None));
        assert!(ok(Some("Bearer s3cret"), None));
        assert!(ok(Some("bearer  s3cret "), None));
        assert!(ok(Some("Basic dXNlcjpzM2NyZXQ="), None)); // user:s3cret
        assert!(ok(None, Some("s3cret")));
        assert!(!ok(Some("Token wrong"), None));
        assert!(!ok(Some("Token s3cre"), None));
        assert!(!ok(Some("Token s3crett"), None));
        assert!(!ok(Some("Basic !!!"), None));
        assert!(!ok(Some("Digest s3cret"), None));
        assert!(!ok(None, None));
        assert!(authorized(&[], None, None));
    }
}
