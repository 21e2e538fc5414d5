//! The demo's built-in upstream: answers with exactly what it received, so
//! anyone can see what tapgate forwards. JSON for `Accept: application/json`,
//! a page otherwise (with the assertion's claims, verified with the same
//! keys that `/.tapgate/jwks.json` publishes).

use crate::pages;
use crate::server::App;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(echo).with_state(app)
}

async fn echo(State(app): State<Arc<App>>, req: Request) -> Response {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), v.into());
            }
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body =
        serde_json::json!({ "method": req.method().as_str(), "path": path, "headers": headers });
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return axum::Json(body).into_response();
    }
    let claims = req
        .headers()
        .get("x-tapgate-assertion")
        .and_then(|v| v.to_str().ok())
        .map(|jwt| {
            app.keys.verify_assertion(
                jwt,
                &app.config.assertion_audience,
                crate::server::now_unix(),
            )
        });
    let (verdict, claims_json) = match claims {
        Some(Ok(c)) => (
            "verified with the key in /.tapgate/jwks.json",
            serde_json::to_string_pretty(&c).unwrap_or_default(),
        ),
        Some(Err(e)) => ("NOT valid", e.to_string()),
        None => ("absent", String::new()),
    };
    let header_rows: String = headers
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let shown = if k == "x-tapgate-assertion" && v.len() > 48 {
                format!("{}…", &v[..48])
            } else {
                v.to_owned()
            };
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                pages::escape(k),
                pages::escape(&shown)
            )
        })
        .collect();
    let who = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.as_str())
            .map(pages::escape)
            .unwrap_or_else(|| "—".into())
    };
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Echo — what tapgate forwarded</title><link rel="stylesheet" href="/.tapgate/static/tapgate.css"></head>
<body data-page="echo"><main class="card wide">
<h1>You are signed in</h1>
<p>This is tapgate's built-in echo app. It shows exactly what reached it through tapgate.</p>
<dl class="identity">
<dt>Email</dt><dd id="echo-email">{email}</dd>
<dt>User</dt><dd id="echo-user">{user}</dd>
<dt>Roles</dt><dd id="echo-roles">{roles}</dd>
</dl>
<h2>Identity assertion</h2>
<p>The <code>X-Tapgate-Assertion</code> header is <strong id="echo-verdict">{verdict}</strong>.</p>
<pre id="echo-claims">{claims}</pre>
<h2>Request</h2>
<p><code>{method} {path}</code></p>
<table class="headers"><caption>Headers received</caption><tbody>{rows}</tbody></table>
<p><a href="/.tapgate/account">Your account and keys</a></p>
</main></body></html>"#,
        email = who("x-tapgate-email"),
        user = who("x-tapgate-user"),
        roles = who("x-tapgate-roles"),
        verdict = pages::escape(verdict),
        claims = pages::escape(&claims_json),
        method = pages::escape(req.method().as_str()),
        path = pages::escape(&path),
        rows = header_rows,
    );
    let mut r = pages::html(StatusCode::OK, page);
    r.headers_mut().remove(header::CACHE_CONTROL);
    r
}
