//! The request path as Tollgate reads it, and as it forwards it: one spelling per endpoint.
//!
//! Tollgate decides how to meter a call from its path (which endpoint, Gemini's model and
//! method), and the upstream decides what to do from the same path. Whether a provider's front
//! end folds `//`, resolves `..`, decodes `%2F` or ignores case is not something Tollgate can
//! know, so it never relies on it: a path that could be read two ways is refused before it is
//! routed or classified, and the path that is classified is the very path that is forwarded.
//! [`normalize_path`] is that rule, a pure function of the path.

use std::borrow::Cow;

/// The words of the endpoint table: the path segments and methods the classifiers
/// (`openai::endpoint`, `gemini::endpoint`) match exactly. A path that spells one of them in
/// another case is refused rather than classified as an unknown endpoint: a case-insensitive
/// upstream would serve it unmetered.
const TABLE_WORDS: [&str; 14] = [
    "v1",
    "v1beta",
    "v1alpha",
    "chat",
    "completions",
    "responses",
    "embeddings",
    "models",
    "tunedModels",
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];

/// Why a request path is refused (400, in the provider's error shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (`*`, or an empty path).
    #[error("the path must start with `/`")]
    NotAbsolute,
    /// `//` somewhere in the path (an empty segment).
    #[error("the path has an empty segment (`//`)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    /// A percent-encoded byte other than `%3A` (`:`): `%2F`, `%5C`, `%2E`, encoded letters…
    #[error("the path has a percent-encoded character other than `%3A`")]
    PercentEncoded,
    /// A `;` (path parameters, which some servers strip and others keep).
    #[error("the path has a `;` parameter")]
    Parameter,
    /// A backslash, which some servers read as `/`.
    #[error("the path has a backslash")]
    Backslash,
    /// A character outside `A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , = : @ /` (spaces, quotes,
    /// non-ASCII, control characters…).
    #[error("the path has a character that the providers' API paths never use")]
    Character,
    /// A segment (or Gemini method) that spells a word of the endpoint table in another case.
    #[error("the path spells `{0}` in another case")]
    CaseVariant(&'static str),
}

/// The one spelling of a request path that Tollgate routes, classifies and forwards, or why the
/// path is refused. Pure and panic-free on any input.
///
/// Accepted: a path that starts with `/` and whose bytes are unreserved characters or
/// `! $ & ' ( ) * + , = : @ /`, in which every segment is non-empty and none is `.` or `..`,
/// and no segment — nor the method after the last `:` of the last segment — spells a word of
/// the endpoint table (`chat`, `completions`, `v1beta`, `models`, `generateContent`, …) in
/// another case. `/` alone is accepted.
///
/// Normalised, each in the one way that cannot change what the path means to a provider:
/// - `%3A` / `%3a` is decoded to `:` (the Node SDKs encode the colon of fine-tuned model ids
///   and of Gemini's `{model}:{method}`; `:` is what the providers document);
/// - one trailing `/` is removed (`/v1/chat/completions/` is `/v1/chat/completions`).
///
/// Refused ([`PathError`]): `//`, `.` and `..` segments, every other `%` (so `%2F`, `%5C`,
/// `%2E` and encoded letters never reach a classifier), `;`, `\`, any other character, and
/// case variants such as `/v1/Chat/Completions` or `:GenerateContent`.
///
/// The query is not part of the path: it is forwarded as it came (without `key`).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut encoded_colons = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !matches!(hex, Some(b"3A" | b"3a")) {
                    return Err(PathError::PercentEncoded);
                }
                encoded_colons = true;
                i += 3;
                continue;
            }
            b';' => return Err(PathError::Parameter),
            b'\\' => return Err(PathError::Backslash),
            b if is_path_byte(b) => {}
            _ => return Err(PathError::Character),
        }
        i += 1;
    }
    let mut out: Cow<'_, str> = if encoded_colons {
        Cow::Owned(path.replace("%3A", ":").replace("%3a", ":"))
    } else {
        Cow::Borrowed(path)
    };
    // `//` alone would lose its empty segment to the trailing-slash rule below.
    if out.ends_with("//") {
        return Err(PathError::EmptySegment);
    }
    if out.len() > 1 && out.ends_with('/') {
        match &mut out {
            Cow::Borrowed(p) => *p = &p[..p.len() - 1],
            Cow::Owned(p) => {
                p.pop();
            }
        }
    }
    if out.len() > 1 {
        let segments: Vec<&str> = out[1..].split('/').collect();
        for (n, segment) in segments.iter().enumerate() {
            match *segment {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                _ => {}
            }
            case_variant(segment)?;
            if n + 1 == segments.len()
                && let Some((_, method)) = segment.rsplit_once(':')
            {
                case_variant(method)?;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 unreserved characters, the sub-delimiters other than `;`, `:`, `@` and `/`.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Refuse `part` when it is a word of the endpoint table in another case.
fn case_variant(part: &str) -> Result<(), PathError> {
    match TABLE_WORDS
        .iter()
        .find(|w| w.eq_ignore_ascii_case(part) && **w != part)
    {
        Some(word) => Err(PathError::CaseVariant(word)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{PathError, normalize_path};

    #[test]
    fn real_paths_pass_unchanged() {
        for path in [
            "/",
            "/openai",
            "/openai/v1/chat/completions",
            "/openai/v1/responses",
            "/openai/v1/responses/resp_abc123/input_items",
            "/openai/v1/embeddings",
            "/openai/v1/completions",
            "/openai/v1/models",
            "/openai/v1/models/ft:gpt-4o-mini-2024-07-18:my-org:custom:abc123",
            "/openai/v1/files/file-abc",
            "/openai/v1/files/file-abc/content",
            "/openai/v1/audio/transcriptions",
            "/openai/v1/chat/completions/chatcmpl-123",
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "/gemini/v1/models/gemini-2.5-flash:generateContent",
            "/gemini/v1beta/models/gemini-1.5-pro-002:countTokens",
            "/gemini/v1beta/models/text-embedding-004:embedContent",
            "/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents",
            "/gemini/v1beta/tunedModels/my-model-7x2k:generateContent",
            "/gemini/v1beta/tunedModels/my-model-7x2k",
            "/gemini/v1beta/models",
            "/gemini/v1beta/cachedContents/abc-123",
            "/gemini/upload/v1beta/files",
            "/gemini/v1beta/files/abc-123:download",
            "/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent",
            "/gemini/v1alpha/models/gemini-2.0-flash:generateContent",
        ] {
            assert_eq!(normalize_path(path).as_deref(), Ok(path), "{path}");
            assert!(
                matches!(normalize_path(path), Ok(std::borrow::Cow::Borrowed(_))),
                "{path}: no copy"
            );
        }
    }

    #[test]
    fn an_encoded_colon_and_a_trailing_slash_are_normalised() {
        let cases = [
            (
                "/gemini/v1beta/models/gemini-2.0-flash%3AgenerateContent",
                "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            ),
            (
                "/gemini/v1beta/models/gemini-2.0-flash%3astreamGenerateContent",
                "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            ),
            (
                "/openai/v1/models/ft%3Agpt-4o-mini%3Amy-org%3A%3Aabc",
                "/openai/v1/models/ft:gpt-4o-mini:my-org::abc",
            ),
            (
                "/openai/v1/chat/completions/",
                "/openai/v1/chat/completions",
            ),
            ("/openai/", "/openai"),
            (
                "/gemini/v1beta/models/x%3AcountTokens/",
                "/gemini/v1beta/models/x:countTokens",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(normalize_path(path).as_deref(), Ok(want), "{path}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("openai/v1/chat/completions", NotAbsolute),
            ("/openai/v1//chat/completions", EmptySegment),
            ("//openai/v1/chat/completions", EmptySegment),
            ("/openai//v1/chat/completions", EmptySegment),
            ("/openai/v1/chat/completions//", EmptySegment),
            // Found by fuzzing: `//` alone lost its empty segment to the trailing `/` rule.
            ("//", EmptySegment),
            ("//%3A", EmptySegment),
            ("/openai/v1/chat/./completions", DotSegment),
            ("/openai/./v1/chat/completions", DotSegment),
            ("/openai/v1/chat/completions/.", DotSegment),
            (
                "/openai/../gemini/v1beta/models/x:generateContent",
                DotSegment,
            ),
            ("/openai/v1/x/../chat/completions", DotSegment),
            ("/openai/v1/chat/completions/..", DotSegment),
            ("/openai/v1/chat%2Fcompletions", PercentEncoded),
            ("/openai/v1/chat%2fcompletions", PercentEncoded),
            ("/openai/v1/chat%5Ccompletions", PercentEncoded),
            ("/openai/v1/chat%5ccompletions", PercentEncoded),
            ("/openai/v1/chat/%2E/completions", PercentEncoded),
            ("/openai/v1/chat/%2e%2e/completions", PercentEncoded),
            ("/openai/v1/%63hat/completions", PercentEncoded),
            ("/openai/v1/chat/completions%20", PercentEncoded),
            ("/openai/v1/chat/completions%", PercentEncoded),
            ("/openai/v1/chat/completions%3", PercentEncoded),
            ("/openai/v1/chat/completions%3B", PercentEncoded),
            ("/openai/v1/chat/completions%00", PercentEncoded),
            (
                "/gemini/v1beta/models/x%253AgenerateContent",
                PercentEncoded,
            ),
            ("/openai/v1/chat/completions;x", Parameter),
            ("/openai/v1/chat;x/completions", Parameter),
            ("/openai/v1/chat\\completions", Backslash),
            ("/openai/v1/chat/completions ", Character),
            ("/openai/v1/chat/compl\u{e9}tions", Character),
            ("/openai/v1/chat/completions\u{0}", Character),
            ("/openai/v1/chat/completions\t", Character),
            ("/openai/v1/chat/\"completions\"", Character),
            ("/openai/v1/chat/completions|x", Character),
            ("/openai/v1/chat/{completions}", Character),
            ("/openai/v1/Chat/Completions", CaseVariant("chat")),
            ("/openai/v1/chat/Completions", CaseVariant("completions")),
            ("/openai/V1/chat/completions", CaseVariant("v1")),
            ("/openai/v1/RESPONSES", CaseVariant("responses")),
            ("/openai/v1/Embeddings", CaseVariant("embeddings")),
            (
                "/gemini/v1beta/models/gemini-2.0-flash:GenerateContent",
                CaseVariant("generateContent"),
            ),
            (
                "/gemini/v1beta/models/gemini-2.0-flash%3AStreamGenerateContent",
                CaseVariant("streamGenerateContent"),
            ),
            (
                "/gemini/v1beta/models/x:counttokens",
                CaseVariant("countTokens"),
            ),
            (
                "/gemini/v1beta/Models/gemini-2.0-flash:generateContent",
                CaseVariant("models"),
            ),
            (
                "/gemini/v1beta/tunedmodels/m:generateContent",
                CaseVariant("tunedModels"),
            ),
            (
                "/gemini/V1BETA/models/x:generateContent",
                CaseVariant("v1beta"),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(normalize_path(path), Err(want), "{path:?}");
        }
    }

    #[test]
    fn never_panics() {
        let mut inputs: Vec<String> = vec![
            "%".into(),
            "/%".into(),
            "/%3".into(),
            "/%3A".into(),
            "/%3a/".into(),
            "/:".into(),
            "/a:".into(),
            "//".into(),
            "/./".into(),
            "/\u{1F600}".into(),
        ];
        for b in 0u8..=127 {
            inputs.push(format!("/{}", b as char));
            inputs.push(format!("/x{}/", b as char));
        }
        for input in inputs {
            let _ = normalize_path(&input);
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in [
            "/gemini/v1beta/models/x%3AgenerateContent/",
            "/openai/v1/chat/completions/",
            "/openai/v1/models",
        ] {
            let once = normalize_path(path).expect("accepted").into_owned();
            assert_eq!(normalize_path(&once).as_deref(), Ok(once.as_str()));
        }
    }
}
