//! Embedded pages, scripts and styles (no CDN, no build step), served with
//! a strict Content-Security-Policy. The only JavaScript of tapgate lives in
//! `assets/tapgate.js`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const LOGIN: &str = include_str!("assets/login.html");
pub const REGISTER: &str = include_str!("assets/register.html");
pub const ACCOUNT: &str = include_str!("assets/account.html");
pub const ADMIN: &str = include_str!("assets/admin.html");
const ERROR: &str = include_str!("assets/error.html");
const JS: &str = include_str!("assets/tapgate.js");
const CSS: &str = include_str!("assets/tapgate.css");

/// Security headers for every page and error tapgate itself serves.
pub fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut r);
    r
}

pub fn page(body: &'static str) -> Response {
    html(StatusCode::OK, body.to_owned())
}

pub fn asset(name: &str) -> Option<Response> {
    let (body, ctype) = match name {
        "tapgate.js" => (JS, "text/javascript; charset=utf-8"),
        "tapgate.css" => (CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    secure_headers(&mut r);
    // Short cache: the binary may be upgraded behind the same URL.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Some(r)
}

/// An error or denial page. Every value is HTML-escaped.
pub fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    request_id: &str,
    action: (&str, &str),
) -> Response {
    let body = ERROR
        .replace("{{title}}", &escape(title))
        .replace("{{message}}", &escape(message))
        .replace("{{request_id}}", &escape(request_id))
        .replace("{{action_href}}", &escape(action.0))
        .replace("{{action_label}}", &escape(action.1));
    html(status, body)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            super::escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
