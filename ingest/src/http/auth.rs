//! Request authentication against the configured tokens.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

use crate::config::AuthConfig;

/// Whether the request carries an accepted token (always true when auth is off).
pub(super) fn authorized(auth: &AuthConfig, headers: &HeaderMap, password_param: Option<&str>) -> bool {
    if !auth.enabled() {
        return true;
    }
    let accepted = |t: &str| auth.tokens.iter().any(|k| k == t);
    if password_param.is_some_and(accepted) {
        return true;
    }
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "token" | "bearer" => accepted(credentials),
        "basic" => base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, p)| accepted(p)))
            .unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn every_credential_form() {
        let auth = AuthConfig { tokens: vec!["s3cret".into()] };
        assert!(authorized(&auth, &headers("Token s3cret"), None));
        assert!(authorized(&auth, &headers("Bearer s3cret"), None));
        assert!(authorized(&auth, &headers("Basic dXNlcjpzM2NyZXQ="), None)); // user:s3cret
        assert!(authorized(&auth, &HeaderMap::new(), Some("s3cret")));
        assert!(!authorized(&auth, &headers("Token wrong"), None));
        assert!(!authorized(&auth, &headers("Basic !!!"), None));
        assert!(!authorized(&auth, &HeaderMap::new(), None));
        assert!(authorized(&AuthConfig::default(), &HeaderMap::new(), None));
    }
}
