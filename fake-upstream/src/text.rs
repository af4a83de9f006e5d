//! Small pure helpers: counting the words of a request, the deterministic answer text, the
//! deterministic embedding vectors, JSON string escaping and base64.

use std::fmt::Write as _;

use serde_json::Value;

/// Keys whose string values (directly, or in arrays under them) are request text.
const TEXT_KEYS: [&str; 5] = ["content", "text", "input", "prompt", "instructions"];

/// Whitespace-separated words in every string that sits under a text key (`content`, `text`,
/// `input`, `prompt`, `instructions`), at any depth; a number under a text key (a token array
/// in an OpenAI `input` or `prompt`) counts as one word.
pub fn count_words(v: &Value) -> u64 {
    walk(v, false)
}

fn walk(v: &Value, textual: bool) -> u64 {
    match v {
        Value::String(s) if textual => s.split_whitespace().count() as u64,
        Value::Number(_) if textual => 1,
        Value::Array(items) => items.iter().map(|x| walk(x, textual)).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, x)| walk(x, TEXT_KEYS.contains(&k.as_str())))
            .sum(),
        _ => 0,
    }
}

/// The answer's words, cycled: chunk `i` carries word `i % len` (with a leading space after the
/// first), so the whole answer of `n` chunks is the first `n` words joined by single spaces.
const WORDS: [&str; 12] = [
    "Hello",
    "from",
    "fake-upstream:",
    "this",
    "answer",
    "is",
    "deterministic,",
    "one",
    "word",
    "per",
    "chunk",
    "and",
];

/// The text of content chunk `i` (0-based).
pub fn chunk_text(i: u64) -> (&'static str, &'static str) {
    let word = WORDS[(i % WORDS.len() as u64) as usize];
    (if i == 0 { "" } else { " " }, word)
}

/// The whole answer of `n` chunks.
pub fn answer(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 8);
    for i in 0..n {
        let (sep, w) = chunk_text(i);
        s.push_str(sep);
        s.push_str(w);
    }
    s
}

/// Component `j` of the embedding of input `i`: exact in binary (a multiple of 1/16 in
/// [-0.5, 0.4375]), so JSON floats and base64 floats compare equal.
pub fn embedding_value(i: usize, j: usize) -> f32 {
    ((i + j) % 16) as f32 / 16.0 - 0.5
}

/// Append `s` as a JSON string literal (with quotes).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` as a JSON string literal (with quotes).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Standard base64 (with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `haystack` contains a JWT-looking string (`eyJ`, the base64 of `{"`).
pub fn has_jwt(haystack: &[u8]) -> bool {
    haystack.windows(3).any(|w| w == b"eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_under_text_keys_only() {
        let v: Value = serde_json::from_str(
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hello  there world"}]}],
                "temperature":0.5}"#,
        )
        .expect("json");
        assert_eq!(count_words(&v), 5);
        let v: Value =
            serde_json::from_str(r#"{"input":["a b","c"],"prompt":[1,2,3]}"#).expect("json");
        assert_eq!(count_words(&v), 6);
        let v: Value = serde_json::from_str(
            r#"{"contents":[{"role":"user","parts":[{"text":"one two"},{"inlineData":{"mimeType":"x","data":"abc"}}]}],
                "systemInstruction":{"parts":[{"text":"three"}]}}"#,
        )
        .expect("json");
        assert_eq!(count_words(&v), 3);
    }

    #[test]
    fn answer_is_the_chunks_joined() {
        let mut joined = String::new();
        for i in 0..30 {
            let (sep, w) = chunk_text(i);
            joined.push_str(sep);
            joined.push_str(w);
        }
        assert_eq!(joined, answer(30));
        assert_eq!(answer(30).split_whitespace().count(), 30);
        assert_eq!(answer(3), "Hello from fake-upstream:");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn escapes_json() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        let back: String = serde_json::from_str(&json_str("é \u{7f} x")).expect("json");
        assert_eq!(back, "é \u{7f} x");
    }

    #[test]
    fn finds_jwts() {
        assert!(has_jwt(b"Bearer eyJhbGciOi"));
        assert!(!has_jwt(b"Bearer sk-123"));
    }
}
