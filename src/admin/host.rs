//! DNS rebinding protection: the admin listener answers only requests addressed to it by a name
//! the operator expects.
//!
//! A web page on `evil.example` can make a browser resolve that name to 127.0.0.1 and then read
//! the admin API "same-origin" — the browser still sends `Host: evil.example`. So a request is
//! served only when its `Host` (or HTTP/2 `:authority`) is an IP literal, `localhost` or a
//! `*.localhost` name, or a name listed in `admin.allowed_hosts` (exact, or `*.` + a suffix);
//! anything else gets 421 Misdirected Request. A request without any host (HTTP/1.0) is not a
//! browser's and passes.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AdminState, ApiError};

/// Refuse a request whose host is not one this listener answers to.
pub(crate) async fn allowed_host(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    if let Some(host) = host {
        let config = state.reloader.config();
        if !is_allowed(&host, &config.raw.admin.allowed_hosts) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "this admin listener does not answer to that host name; add it to admin.allowed_hosts",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether `host` (a `Host` header value, with or without a port) may reach the admin side.
pub fn is_allowed(host: &str, allowed: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(suffix) => name
                .strip_suffix(suffix)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => name == a,
        }
    })
}

/// The name part of a `Host` value: `[::1]:3001` → `::1`, `example.com:80` → `example.com`;
/// `None` when it is malformed (empty, an unclosed bracket, a bad port).
fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return (after.is_empty() || valid_port(after.strip_prefix(':')?)).then_some(ip);
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if name.is_empty() || name.contains(':') || port.is_some_and(|p| !valid_port(p)) {
        return None;
    }
    Some(name)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_ip_literals_pass_other_names_need_the_allowlist() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "127.0.0.1:3001",
            "127.0.0.1",
            "[::1]:3001",
            "[::1]",
            "localhost:3001",
            "LOCALHOST",
            "admin.localhost:3001",
            "10.1.2.3:3001",
        ] {
            assert!(is_allowed(ok, &none), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:3001",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            "[::1",
            "host:port",
            "a:b:c",
        ] {
            assert!(!is_allowed(refused, &none), "{refused}");
        }
        let list = vec![
            "admin.corp.example".to_string(),
            "*.ops.example".to_string(),
        ];
        assert!(is_allowed("admin.corp.example:443", &list));
        assert!(is_allowed("Admin.Corp.Example.", &list));
        assert!(is_allowed("eu.ops.example", &list));
        assert!(
            !is_allowed("ops.example", &list),
            "a wildcard needs a label"
        );
        assert!(!is_allowed("evilops.example", &list));
        assert!(!is_allowed("corp.example", &list));
    }
}
