//! Where the end user's JWT is found in a request (`Authorization: Bearer`, `x-goog-api-key`,
//! the `key` query parameter) and every header and parameter that can carry a client credential,
//! so that none reaches a provider. [`credential`] and [`strip_key_param`] share one notion of
//! the `key` parameter: what the gateway reads is exactly what it removes.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// Google's API key header, which the google-genai SDK fills with the user's JWT.
pub const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// The client's credential, from the first place that has a non-empty one:
/// `Authorization: Bearer …` (scheme case-insensitive), then `x-goog-api-key`, then the query
/// parameter `key` (percent-decoded, `+` as space).
///
/// ```
/// use http::HeaderMap;
/// let mut headers = HeaderMap::new();
/// headers.insert("authorization", "bearer a.b.c".parse().unwrap());
/// assert_eq!(tollgate::auth::credential(&headers, None).as_deref(), Some("a.b.c"));
/// assert_eq!(tollgate::auth::credential(&HeaderMap::new(), Some("alt=sse&key=x.y.z")).as_deref(), Some("x.y.z"));
/// ```
pub fn credential<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
    if let Some(token) = headers.get_all(AUTHORIZATION).iter().find_map(bearer) {
        return Some(Cow::Borrowed(token));
    }
    if let Some(token) = headers
        .get_all(X_GOOG_API_KEY)
        .iter()
        .find_map(|v| non_empty(v.to_str().ok()?.trim()))
    {
        return Some(Cow::Borrowed(token));
    }
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !is_key_name(name) {
            return None;
        }
        let value = percent_decode(value)?;
        (!value.trim().is_empty()).then_some(value)
    })
}

/// `query` without any `key` parameter, or `None` when it has none. The other parameters are kept
/// byte for byte and in order (Gemini's `$alt=json;enum-encoding=int` included). `Some("")` means
/// nothing is left: drop the `?`.
///
/// ```
/// use tollgate::auth::strip_key_param;
/// assert_eq!(strip_key_param("key=a.b.c&alt=sse").as_deref(), Some("alt=sse"));
/// assert_eq!(strip_key_param("$alt=json;enum-encoding=int"), None);
/// ```
pub fn strip_key_param(query: &str) -> Option<String> {
    let mut kept: Vec<&str> = Vec::new();
    let mut removed = false;
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if is_key_name(name) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    removed.then(|| kept.join("&"))
}

/// Headers that can carry a client credential: the two Tollgate reads JWTs from, plus the other
/// API-key and session headers clients send. None of them is ever forwarded upstream.
pub const CREDENTIAL_HEADERS: [HeaderName; 6] = [
    AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    X_GOOG_API_KEY,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    http::header::COOKIE,
];

/// Remove every header that can carry a client credential ([`CREDENTIAL_HEADERS`]).
pub fn strip_credential_headers(headers: &mut HeaderMap) {
    for name in &CREDENTIAL_HEADERS {
        headers.remove(name);
    }
}

fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    non_empty(rest.trim_start())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Whether a query parameter name is `key`, also when (needlessly) percent-encoded: the names
/// [`credential`] reads and [`strip_key_param`] removes must be the same set, or a JWT could
/// reach the provider.
fn is_key_name(name: &str) -> bool {
    if name == "key" {
        return true;
    }
    name.len() > 3 && name.contains('%') && percent_decode(name).is_some_and(|n| n == "key")
}

/// `application/x-www-form-urlencoded` decoding: `%XX` → byte, `+` → space; a `%` not followed by
/// two hex digits stays as it is. `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok()
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_credential_comes_from_a_bearer_authorization_header() {
        for value in [
            "Bearer t.o.k",
            "bearer t.o.k",
            "BEARER   t.o.k ",
            "Bearer\tt.o.k",
        ] {
            assert_eq!(
                credential(&headers(&[("authorization", value)]), None).as_deref(),
                Some("t.o.k"),
                "{value:?}"
            );
        }
        assert_eq!(
            credential(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]), None),
            None
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer ")]), None),
            None
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearertok")]), None),
            None
        );
    }

    #[test]
    fn the_credential_comes_from_x_goog_api_key() {
        assert_eq!(
            credential(&headers(&[("x-goog-api-key", "g.o.o")]), None).as_deref(),
            Some("g.o.o")
        );
        assert_eq!(credential(&headers(&[("x-goog-api-key", "")]), None), None);
    }

    #[test]
    fn the_credential_comes_from_the_key_query_parameter() {
        let h = HeaderMap::new();
        assert_eq!(credential(&h, Some("key=q.u.e")).as_deref(), Some("q.u.e"));
        assert_eq!(
            credential(&h, Some("alt=sse&key=q.u.e")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("key=q%2Eu%2ee")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("%6Bey=q.u.e")).as_deref(),
            Some("q.u.e")
        );
        assert_eq!(
            credential(&h, Some("key=&key=second")).as_deref(),
            Some("second")
        );
        assert_eq!(credential(&h, Some("keys=x&akey=y&key")), None);
        assert_eq!(credential(&h, Some("key=%FF")), None);
        assert_eq!(credential(&h, None), None);
        assert!(matches!(
            credential(&h, Some("key=plain")),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn the_authorization_header_wins_over_the_others() {
        let h = headers(&[("x-goog-api-key", "goog"), ("authorization", "Bearer bear")]);
        assert_eq!(credential(&h, Some("key=query")).as_deref(), Some("bear"));
        let h = headers(&[("x-goog-api-key", "goog"), ("authorization", "Basic abc")]);
        assert_eq!(credential(&h, Some("key=query")).as_deref(), Some("goog"));
    }

    #[test]
    fn strip_key_param_removes_every_key_and_keeps_the_rest_byte_for_byte() {
        let cases: &[(&str, Option<&str>)] = &[
            ("key=abc", Some("")),
            ("key=abc&alt=sse", Some("alt=sse")),
            ("alt=sse&key=abc", Some("alt=sse")),
            ("a=1&key=x&b=%20+2&key=y", Some("a=1&b=%20+2")),
            (
                "$alt=json;enum-encoding=int&key=t",
                Some("$alt=json;enum-encoding=int"),
            ),
            ("%6Bey=t&alt=sse", Some("alt=sse")),
            ("key&alt=sse", Some("alt=sse")),
            ("$alt=json;enum-encoding=int", None),
            ("keys=1&monkey=2&KEY=3", None),
            ("", None),
        ];
        for (query, expected) in cases {
            assert_eq!(strip_key_param(query).as_deref(), *expected, "{query:?}");
        }
    }

    #[test]
    fn strip_credential_headers_removes_every_credential_header() {
        let mut h = headers(&[
            ("authorization", "Bearer a"),
            ("x-goog-api-key", "b"),
            ("proxy-authorization", "Basic c"),
            ("x-api-key", "d"),
            ("api-key", "e"),
            ("cookie", "session=f"),
            ("accept", "*/*"),
        ]);
        strip_credential_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
