//! The admin API's OpenAPI 3.1 document, generated from the handlers' and types' annotations
//! (utoipa), so that it cannot drift from the code. Served at `GET /api/admin/openapi.json`.

use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, session};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Users, usage, costs and controls of a Tollgate gateway. Sign in with \
            POST /api/admin/login (session cookie) or send `Authorization: Bearer <admin JWT>`. \
            Money is in nano-USD (1e-9 USD) unless a field says USD; times are unix milliseconds \
            UTC; days are YYYY-MM-DD in the gateway's limits.timezone."
    ),
    paths(
        session::login,
        session::logout,
        session::me,
        api::ops::healthz,
        api::ops::readyz,
        api::ops::metrics,
        api::users::users,
        api::users::user_usage,
        api::users::plans,
        api::actions::block,
        api::actions::unblock,
        api::actions::set_limits,
        api::usage::stats,
        api::usage::series,
        api::usage::usage_csv,
        api::audit::audit,
        api::alerts::alerts,
        api::config::config,
        api::config::reload,
        api::ops::openapi,
    ),
    modifiers(&Security),
    tags(
        (name = "session", description = "Signing in and out"),
        (name = "users", description = "Users and their usage"),
        (name = "actions", description = "Blocking, unblocking and limits (audited)"),
        (name = "usage", description = "System-wide usage and exports"),
        (name = "audit", description = "The audit trail"),
        (name = "alerts", description = "Alerts the [[alerts]] rules fired"),
        (name = "configuration", description = "The configuration in force and reloads"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct AdminApi;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(session::COOKIE))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    AdminApi::openapi()
}

/// The document as JSON, built once.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use crate::usage::UsageSource;

    #[test]
    fn the_document_lists_every_usage_source() {
        let doc: serde_json::Value = serde_json::from_str(&super::document_json()).unwrap();
        let listed: Vec<&str> = doc["components"]["schemas"]["UsageSource"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("no UsageSource enum in {}", doc["components"]))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let all: Vec<&str> = UsageSource::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(listed, all);
        assert_eq!(
            doc["components"]["schemas"]["CallRow"]["properties"]["usage_source"]["$ref"],
            "#/components/schemas/UsageSource"
        );
    }
}
