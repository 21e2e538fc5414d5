//! The one HTTP error type. Handlers return `HttpError`; the request
//! context layer (server.rs) renders it as JSON `{"error", "message",
//! "request_id"}` or as an HTML page, and logs it. Internal details never
//! reach the client: `Internal` carries them to the log only.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Whose fault a failure is (logged; decides the log severity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong; the message says how to fix it.
    Client,
    /// The upstream service failed or timed out.
    Upstream,
    /// tapgate itself (or its store) failed.
    Proxy,
}

#[derive(Clone, Debug)]
pub struct HttpError {
    pub status: StatusCode,
    /// Stable kebab-case reason code (documented in docs/api.md).
    pub code: &'static str,
    /// For people: what happened and what to do.
    pub message: String,
    pub fault: Fault,
    /// Detail for the log only (never sent to the client).
    pub internal: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        let fault = if status.is_server_error() {
            Fault::Proxy
        } else {
            Fault::Client
        };
        HttpError {
            status,
            code,
            message: message.into(),
            fault,
            internal: None,
            headers: Vec::new(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, code, message).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tapgate\""),
        )
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found() -> HttpError {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "There is nothing at this address.",
        )
    }
    /// A failure of ours: the client gets a generic message, the log the detail.
    pub fn internal(detail: impl Into<String>) -> HttpError {
        let mut e = HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Something went wrong on our side. Try again; if it keeps failing, give the request id to your administrator.",
        );
        e.internal = Some(detail.into());
        e
    }
    pub fn store_unavailable(detail: impl Into<String>) -> HttpError {
        let mut e = HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Sign-in is briefly unavailable because tapgate cannot reach its database. Already signed-in users are not affected. Try again in a minute.",
        );
        e.internal = Some(detail.into());
        e.headers.push((
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("10"),
        ));
        e
    }
    pub fn upstream(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> HttpError {
        let mut e = HttpError::new(status, code, message);
        e.fault = Fault::Upstream;
        e.internal = Some(detail.into());
        e
    }
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> HttpError {
        self.headers.push((name, value));
        self
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(d) => HttpError::store_unavailable(d),
            other => HttpError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        // The body is rendered by the request-context layer, which knows
        // the request id and whether the client wants HTML or JSON.
        let mut r = self.status.into_response();
        for (k, v) in &self.headers {
            r.headers_mut().append(k.clone(), v.clone());
        }
        r.extensions_mut().insert(self);
        r
    }
}

/// The JSON error body every endpoint uses.
pub fn json_body(code: &str, message: &str, request_id: &str) -> String {
    serde_json::json!({ "error": code, "message": message, "request_id": request_id }).to_string()
}
