//! The audit console's page and its static files (docs/console.md), compiled into the
//! binary: plain HTML, CSS and JavaScript modules from `crates/annal-server/console/`,
//! with no build step and nothing fetched from elsewhere.
//!
//! Invariants: these routes are open (the page holds no data; the browser reads the
//! log through the `/v1` API with the token the user signs in with, so roles and type
//! limits apply to everything the console shows); every answer carries a content
//! security policy that allows only this origin; a name that is not one of the files
//! is a `404 not_found` problem, never a read from disk.

use crate::problem::Problem;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

/// The console's files: name under `/console/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
    ("app.js", JS, include_str!("../console/app.js")),
    ("api.js", JS, include_str!("../console/api.js")),
    ("ui.js", JS, include_str!("../console/ui.js")),
    ("overview.js", JS, include_str!("../console/overview.js")),
    ("browse.js", JS, include_str!("../console/browse.js")),
    ("event.js", JS, include_str!("../console/event.js")),
    ("aggregate.js", JS, include_str!("../console/aggregate.js")),
    ("graph.js", JS, include_str!("../console/graph.js")),
    ("audit.js", JS, include_str!("../console/audit.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../console/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Only this origin's scripts, styles and API; no inline script, no frames.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Whether `path` is one of the console's open routes.
pub fn is_console(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// `GET /`: the console.
pub async fn root() -> Redirect {
    Redirect::to("/console/")
}

/// `GET /console`: the page.
pub async fn index() -> Response {
    file("index.html").map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// `GET /console/{file}`: one of the files.
pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name).map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

fn file(name: &str) -> Result<Response, Problem> {
    let (_, kind, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| Problem::not_found(format!("console file '{name}'")))?;
    let mut res = (*body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        for (name, _, body) in FILES {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split('\'').nth(1) else {
                    continue;
                };
                let target = from.trim_start_matches("./");
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {from}, which is not served"
                );
            }
        }
    }

    #[test]
    fn the_first_load_stays_under_300_kb() {
        let total: usize = FILES.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total < 300 * 1024, "{total} bytes uncompressed");
    }

    #[test]
    fn names_outside_the_list_are_not_found() {
        for name in ["../lib.rs", "", "app.js/", "APP.JS", "%2e%2e/Cargo.toml"] {
            assert!(file(name).is_err(), "{name}");
        }
    }
}
