//! Bearer-key and account checks; errors in the documented nested envelope.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A response in the errors page's envelope: `{"error":{"code":..,"message":..}}`.
pub fn nested_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Checks the `Authorization` header and the account in the path.
#[allow(clippy::result_large_err)]
pub fn check(
    headers: &HeaderMap,
    api_key: &str,
    second_key: Option<&str>,
    account: &str,
    path_account: &str,
) -> Result<(), Response> {
    match bearer(headers) {
        None => Err(nested_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Missing API key",
        )),
        Some(k) if k != api_key && Some(k) != second_key => Err(nested_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid or expired API key",
        )),
        Some(_) if path_account != account => Err(nested_error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "This API key does not belong to that account",
        )),
        Some(_) => Ok(()),
    }
}

/// The Bearer key of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The tenant a request is scoped to (`X-Tenant-ID`), if any.
pub fn tenant(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
