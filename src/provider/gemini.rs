//! gemini: request inspection and rewrite, usage in answers. (to be implemented)

use bytes::Bytes;

use super::{Endpoint, RequestInfo};

pub fn inspect(
    method: &http::Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> (RequestInfo, Option<Bytes>) {
    let _ = (method, rest, query, body);
    (
        RequestInfo {
            endpoint: Endpoint::Other,
            model: None,
            stream: false,
            max_output_tokens: None,
            prompt_tokens_estimate: 0,
            usage_injected: false,
            sse: false,
        },
        None,
    )
}
