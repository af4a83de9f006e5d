//! Every response Tollgate writes itself: the one place that maps a refusal or failure to an
//! HTTP status and a body in the provider's own error shape, so that each SDK raises its usual
//! exception. Messages are written for the client and never carry a token, a key, or an
//! upstream body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::plan::PlanRefusal;
use crate::provider::{BodyError, PathError, ProviderKind};
use crate::quota::Denied;
use crate::usage::Outcome;

/// Why Tollgate answered a call itself instead of relaying the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No provider is mounted at the request's path.
    #[error(
        "no provider is mounted at this path; use one of the configured prefixes (e.g. /openai/v1, /gemini/v1beta)"
    )]
    UnknownPrefix,
    /// The credential is missing or did not verify.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// The request path could be read two ways (`//`, `.` or `..`, `%2F`, `;`, a case variant of
    /// an endpoint…): refused rather than classified one way and served another.
    #[error(
        "the request path is refused by the gateway: {0}; send the path exactly as the provider's API reference spells it"
    )]
    InvalidPath(PathError),
    /// The body of an endpoint Tollgate meters could be read otherwise than Tollgate reads it.
    #[error("{0}")]
    InvalidBody(BodyError),
    /// The endpoint is not in Tollgate's table and the provider's `unknown_endpoints` is
    /// `"refuse"`.
    #[error(
        "this endpoint is not available through the gateway (the operator allows only the endpoints it meters)"
    )]
    UnknownEndpoint,
    /// The request body is larger than `server.max_request_bytes`.
    #[error("request body is larger than the gateway's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request body could not be read from the client.
    #[error("the request body could not be read")]
    BodyRead,
    /// The whole request body did not arrive within `server.request_body_timeout_ms`.
    #[error("the request body did not arrive within {ms} ms")]
    BodyTimeout { ms: u64 },
    /// More calls are in flight than `server.max_in_flight`: refused at once, retry shortly.
    #[error("the gateway is handling too many calls right now; retry shortly")]
    Overloaded,
    /// The usage store is too far behind to take this call's row: refused before forwarding,
    /// so no call goes unrecorded.
    #[error("the gateway cannot record usage right now; retry shortly")]
    StoreFull,
    /// Refused before forwarding: blocked user, used-up quota, request rate or concurrency.
    #[error("{}", denied_message(.0))]
    Denied(Denied),
    /// Refused before forwarding: the caller's plan does not allow the model, or as much output.
    #[error("{0}")]
    Plan(PlanRefusal),
    /// The upstream could not be reached (connect failure, connect timeout, TLS).
    #[error("the upstream provider could not be reached")]
    UpstreamUnreachable,
    /// The upstream did not answer within `server.response_header_timeout_ms`.
    #[error("the upstream provider did not answer in time")]
    UpstreamTimeout,
    /// A state the request path never reaches (a bug of Tollgate's, logged).
    #[error("internal error in the gateway")]
    Internal,
    /// The upstream refused the gateway's own provider key (401/403 about Tollgate's key).
    #[error(
        "the gateway's provider credentials were refused by the upstream; the operator has been told"
    )]
    UpstreamRejectedKey,
}

impl GatewayError {
    /// The status code. Exhaustive on purpose: a new variant must decide who is at fault.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownPrefix => StatusCode::NOT_FOUND,
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidPath(_) | GatewayError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownEndpoint => StatusCode::NOT_FOUND,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyRead => StatusCode::BAD_REQUEST,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Overloaded | GatewayError::StoreFull => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Denied(Denied::Blocked { .. }) => StatusCode::FORBIDDEN,
            GatewayError::Denied(
                Denied::Quota { .. } | Denied::Rate { .. } | Denied::Concurrency { .. },
            ) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Plan(_) => StatusCode::FORBIDDEN,
            GatewayError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamRejectedKey => StatusCode::BAD_GATEWAY,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` and `error.code` for this refusal.
    fn openai_type_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::UnknownPrefix => ("invalid_request_error", "unknown_url"),
            GatewayError::Unauthenticated(_) => ("invalid_request_error", "invalid_api_key"),
            GatewayError::InvalidPath(_) => ("invalid_request_error", "invalid_path"),
            GatewayError::InvalidBody(BodyError::NotJson) => {
                ("invalid_request_error", "invalid_json")
            }
            GatewayError::InvalidBody(BodyError::DuplicateKey(_)) => {
                ("invalid_request_error", "duplicate_key")
            }
            GatewayError::InvalidBody(BodyError::StreamNotBoolean) => {
                ("invalid_request_error", "invalid_type")
            }
            GatewayError::UnknownEndpoint => ("invalid_request_error", "unknown_endpoint"),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            GatewayError::BodyRead => ("invalid_request_error", "invalid_body"),
            GatewayError::BodyTimeout { .. } => ("invalid_request_error", "request_timeout"),
            GatewayError::Overloaded => ("api_error", "gateway_overloaded"),
            GatewayError::StoreFull => ("api_error", "usage_store_busy"),
            GatewayError::Denied(d @ Denied::Blocked { .. }) => ("permission_error", d.code()),
            // The SDKs read `insufficient_quota` as "don't retry"; `x-should-retry` says so too.
            GatewayError::Denied(d @ Denied::Quota { .. }) => ("insufficient_quota", d.code()),
            GatewayError::Denied(d @ (Denied::Rate { .. } | Denied::Concurrency { .. })) => {
                ("requests", d.code())
            }
            GatewayError::Plan(p) => ("permission_error", p.code()),
            GatewayError::UpstreamUnreachable => ("api_error", "upstream_unreachable"),
            GatewayError::UpstreamTimeout => ("api_error", "upstream_timeout"),
            GatewayError::UpstreamRejectedKey => ("api_error", "upstream_credentials_refused"),
            GatewayError::Internal => ("api_error", "internal_error"),
        }
    }

    /// The response for this error in `kind`'s error shape (OpenAI's when no provider matched).
    pub fn response<B: From<Bytes>>(&self, kind: Option<ProviderKind>) -> Response<B> {
        let status = self.status();
        let message = self.to_string();
        let body = match kind {
            Some(ProviderKind::Gemini) => gemini_error_body(status, &message),
            Some(ProviderKind::Openai) | None => {
                let (ty, code) = self.openai_type_code();
                openai_error_body(&message, ty, code)
            }
        };
        let mut resp = json_response(status, body);
        if let GatewayError::Denied(d) = self {
            let headers = resp.headers_mut();
            if let Some(secs) = d.retry_after_secs() {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            let retry = if d.should_retry() { "true" } else { "false" };
            headers.insert("x-should-retry", HeaderValue::from_static(retry));
        }
        if matches!(self, GatewayError::Plan(_)) {
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if matches!(self, GatewayError::Overloaded | GatewayError::StoreFull) {
            let headers = resp.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        resp
    }

    /// The row's `outcome`; `None` for a refusal before the caller is known (it has no row).
    pub fn outcome(&self) -> Option<Outcome> {
        Some(match self {
            // Refused before the caller is known: no row.
            GatewayError::UnknownPrefix | GatewayError::Unauthenticated(_) => return None,
            GatewayError::InvalidPath(_) | GatewayError::InvalidBody(_) => {
                Outcome::RefusedInvalidRequest
            }
            GatewayError::UnknownEndpoint => Outcome::RefusedUnknownEndpoint,
            GatewayError::BodyTooLarge { .. } => Outcome::RefusedBodyTooLarge,
            GatewayError::BodyRead => Outcome::RefusedBodyUnreadable,
            GatewayError::BodyTimeout { .. } => Outcome::RefusedBodyTimeout,
            GatewayError::Overloaded => Outcome::RefusedOverloaded,
            GatewayError::StoreFull => Outcome::RefusedStoreFull,
            GatewayError::Denied(Denied::Blocked { .. }) => Outcome::RefusedBlocked,
            GatewayError::Denied(Denied::Quota { .. }) => Outcome::RefusedQuota,
            GatewayError::Denied(Denied::Rate { .. }) => Outcome::RefusedRate,
            GatewayError::Denied(Denied::Concurrency { .. }) => Outcome::RefusedConcurrency,
            GatewayError::Plan(_) => Outcome::RefusedPlan,
            GatewayError::UpstreamUnreachable => Outcome::UpstreamUnreachable,
            GatewayError::UpstreamTimeout => Outcome::UpstreamTimeout,
            GatewayError::UpstreamRejectedKey => Outcome::UpstreamRejectedKey,
            GatewayError::Internal => Outcome::InternalError,
        })
    }
}

/// The client's message for a refusal; a blocked user also learns the operator's reason.
fn denied_message(d: &Denied) -> String {
    match d {
        Denied::Blocked {
            reason: Some(reason),
        } if !reason.trim().is_empty() => {
            format!("{d}: {}", reason.trim())
        }
        _ => d.to_string(),
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub fn openai_error_body(message: &str, ty: &str, code: &str) -> Bytes {
    let v =
        serde_json::json!({"error": {"message": message, "type": ty, "param": null, "code": code}});
    Bytes::from(v.to_string())
}

/// `{"error":{"code","message","status"}}` with Google's canonical status name.
pub fn gemini_error_body(status: StatusCode, message: &str) -> Bytes {
    let v = serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": google_status(status)}});
    Bytes::from(v.to_string())
}

/// Google's canonical error status for an HTTP status.
fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        408 => "DEADLINE_EXCEEDED",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A JSON response with the given body.
pub fn json_response<B: From<Bytes>>(status: StatusCode, body: Bytes) -> Response<B> {
    let mut resp = Response::new(B::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
