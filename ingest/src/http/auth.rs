//! Request authentication against the configured tokens ([`yaffle_core::auth`]).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::config::AuthConfig;

/// Whether the request carries an accepted token (always true when auth is off).
pub(super) fn authorized(auth: &AuthConfig, headers: &HeaderMap, password_param: Option<&str>) -> bool {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    yaffle_core::auth::authorized(&auth.tokens, header, password_param)
}
