//! Byte-level JSON helpers shared by the providers: targeted scans that find a key, measure a
//! string or frame one value without parsing the document around it. Bodies can be many
//! megabytes (screenshots, embeddings), so nothing here builds a tree; strings are skipped with
//! `memchr`. The helpers expect well-formed JSON and fail soft (`None`, `false`) on anything
//! else — they never panic on hostile input.

use std::borrow::Cow;
use std::ops::ControlFlow;

use memchr::memmem::{Finder, FinderRev};
use memchr::{memchr, memchr2, memchr3};

use super::MEDIA_PART_TOKENS;

/// Containers nested deeper than this make a request body count as unreadable.
const MAX_DEPTH: usize = 512;

/// Whether the quote at `at` is escaped (preceded by an odd run of backslashes). Outside
/// strings there are no backslashes, so this also tells a key from text inside a string.
pub(crate) fn is_escaped(hay: &[u8], at: usize) -> bool {
    let run = hay[..at].iter().rev().take_while(|&&b| b == b'\\').count();
    run % 2 == 1
}

/// The first offset at or after `i` that is not JSON whitespace.
pub(crate) fn skip_ws(hay: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = hay.get(i) {
        i += 1;
    }
    i
}

/// Whether the body looks like a JSON object (BOM and whitespace allowed before the `{`).
pub(crate) fn is_object(body: &[u8]) -> bool {
    let body = body.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(body);
    body.get(skip_ws(body, 0)) == Some(&b'{')
}

/// `at` is just past a quoted string: if a colon follows, the string was a key and this is
/// the offset of its value.
fn value_after_key(hay: &[u8], at: usize) -> Option<usize> {
    let i = skip_ws(hay, at);
    if hay.get(i) != Some(&b':') {
        return None;
    }
    let v = skip_ws(hay, i + 1);
    (v < hay.len()).then_some(v)
}

/// The first use of `key` (the finder's needle is the key with its quotes, e.g. `"usage"`)
/// as an object key at or after `from`: `(key offset, value offset)`.
pub(crate) fn find_key(hay: &[u8], key: &Finder<'_>, from: usize) -> Option<(usize, usize)> {
    let mut pos = from;
    while let Some(j) = key.find(hay.get(pos..)?) {
        let k = pos + j;
        pos = k + 1;
        if is_escaped(hay, k) {
            continue;
        }
        if let Some(v) = value_after_key(hay, k + key.needle().len()) {
            return Some((k, v));
        }
    }
    None
}

/// The last use of `key` as an object key that starts before `until`.
pub(crate) fn rfind_key(hay: &[u8], key: &FinderRev<'_>, until: usize) -> Option<(usize, usize)> {
    let mut end = until.min(hay.len());
    while let Some(k) = key.rfind(&hay[..end]) {
        end = k;
        if is_escaped(hay, k) {
            continue;
        }
        if let Some(v) = value_after_key(hay, k + key.needle().len()) {
            return Some((k, v));
        }
    }
    None
}

/// The last `"usage"` key in `hay` (`key` / `key_rev` search for it) whose value reads as
/// a usage report, with the key's offset. The last one is the top-level one: it comes after
/// every nested object that might use the same key (a tool schema's `properties`), and only
/// scalars or `metadata` strings may follow it. The search runs forwards because memchr's
/// forward search is vectorised and its reverse search is not; it only walks backwards in
/// the rare case where the last object is not a report.
pub(crate) fn last_usage(
    hay: &[u8],
    key: &Finder<'_>,
    key_rev: &FinderRev<'_>,
    parse: fn(&[u8]) -> Option<super::Usage>,
) -> Option<(usize, super::Usage)> {
    let mut last = None;
    let mut pos = 0;
    while let Some((k, v)) = find_key(hay, key, pos) {
        if hay[v] == b'{' {
            last = Some((k, v));
        }
        pos = v;
    }
    let (mut until, v) = last?;
    if let Some(usage) = parse(&hay[v..]) {
        return Some((until, usage));
    }
    while let Some((k, v)) = rfind_key(hay, key_rev, until) {
        if hay[v] == b'{'
            && let Some(usage) = parse(&hay[v..])
        {
            return Some((k, usage));
        }
        until = k;
    }
    None
}

/// Offset just past the closing quote of the string opening at `open`.
pub(crate) fn string_end(hay: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    // Keys and most values are short: a plain loop beats setting up a vector search.
    let short_end = hay.len().min(i + 24);
    while i < short_end {
        match hay[i] {
            b'"' => return Some(i + 1),
            b'\\' => break,
            _ => i += 1,
        }
    }
    loop {
        let j = memchr2(b'"', b'\\', hay.get(i..)?)?;
        if hay[i + j] == b'\\' {
            i += j + 2;
        } else {
            return Some(i + j + 1);
        }
    }
}

/// The raw (still escaped) content of the string at `v`, if a string is there.
pub(crate) fn string_at(hay: &[u8], v: usize) -> Option<&[u8]> {
    if hay.get(v) != Some(&b'"') {
        return None;
    }
    let end = string_end(hay, v)?;
    Some(&hay[v + 1..end - 1])
}

/// The decoded string at `v`.
pub(crate) fn decode_string(hay: &[u8], v: usize) -> Option<String> {
    let raw = string_at(hay, v)?;
    if memchr(b'\\', raw).is_none() {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    serde_json::from_slice::<String>(&hay[v..v + raw.len() + 2]).ok()
}

/// A key as a JSON parser reads it: `quoted` is the key with its quotes. Without a backslash
/// the raw bytes are the key (no copy); with one it is decoded (`"\u0073tream"` is `stream`),
/// and `None` means the escape is malformed, which no parser accepts.
pub(crate) fn decode_key(quoted: &[u8]) -> Option<Cow<'_, [u8]>> {
    let raw = quoted.get(1..quoted.len().checked_sub(1)?)?;
    if memchr(b'\\', raw).is_none() {
        return Some(Cow::Borrowed(raw));
    }
    serde_json::from_slice::<String>(quoted)
        .ok()
        .map(|k| Cow::Owned(k.into_bytes()))
}

/// Walk the members of the object at `hay[0]`, calling `visit(key, value_start, value_end)`
/// with each key decoded as a parser reads it, until `visit` breaks (its value is returned) or
/// the object ends (`Ok(None)`). `Err(())` when the object is malformed (up to where the walk
/// stopped).
fn each_member<B>(
    hay: &[u8],
    mut visit: impl FnMut(&[u8], usize, usize) -> ControlFlow<B>,
) -> Result<Option<B>, ()> {
    if hay.first() != Some(&b'{') {
        return Err(());
    }
    let mut i = skip_ws(hay, 1);
    if hay.get(i) == Some(&b'}') {
        return Ok(None);
    }
    loop {
        if hay.get(i) != Some(&b'"') {
            return Err(());
        }
        let key_end = string_end(hay, i).ok_or(())?;
        let key = decode_key(&hay[i..key_end]).ok_or(())?;
        i = skip_ws(hay, key_end);
        if hay.get(i) != Some(&b':') {
            return Err(());
        }
        let start = skip_ws(hay, i + 1);
        let end = value_end(hay, start).ok_or(())?;
        if let ControlFlow::Break(b) = visit(&key, start, end) {
            return Ok(Some(b));
        }
        i = skip_ws(hay, end);
        match hay.get(i) {
            Some(b',') => i = skip_ws(hay, i + 1),
            Some(b'}') => return Ok(None),
            _ => return Err(()),
        }
    }
}

/// The first member of the object at `hay[0]` whose key, decoded and named by `field` (which
/// maps each spelling of a field that matters to its one name, and returns `None` for the
/// others), is set more than once. `Err(())` when the object is malformed.
pub(crate) fn repeated_field(
    hay: &[u8],
    field: impl Fn(&[u8]) -> Option<&'static str>,
) -> Result<Option<&'static str>, ()> {
    let mut seen: Vec<&'static str> = Vec::new();
    each_member(hay, |key, _, _| match field(key) {
        Some(name) if seen.contains(&name) => ControlFlow::Break(name),
        Some(name) => {
            seen.push(name);
            ControlFlow::Continue(())
        }
        None => ControlFlow::Continue(()),
    })
}

/// The value span of the last member of the object at `hay[0]` whose key, decoded, `wanted`
/// accepts (`None` when there is none). `Err(())` when the object is malformed.
pub(crate) fn field_span(
    hay: &[u8],
    wanted: impl Fn(&[u8]) -> bool,
) -> Result<Option<(usize, usize)>, ()> {
    let mut found = None;
    each_member(hay, |key, start, end| {
        if wanted(key) {
            found = Some((start, end));
        }
        ControlFlow::<()>::Continue(())
    })?;
    Ok(found)
}

/// Whether the object whose `{` is at `hay[open]` has no member.
pub(crate) fn object_is_empty(hay: &[u8], open: usize) -> bool {
    hay.get(skip_ws(hay, open + 1)) == Some(&b'}')
}

/// `body` with each span of `spans` (non-overlapping) replaced by `value`, and `insert` put
/// just after the byte at `after` when given.
pub(crate) fn splice(
    body: &[u8],
    spans: &[(usize, usize)],
    value: &[u8],
    insert: Option<(usize, &[u8])>,
) -> Vec<u8> {
    let mut cuts: Vec<(usize, usize, &[u8])> = spans.iter().map(|&(s, e)| (s, e, value)).collect();
    if let Some((after, text)) = insert {
        cuts.push((after + 1, after + 1, text));
    }
    cuts.sort_unstable_by_key(|c| c.0);
    let grow: usize = cuts.iter().map(|c| c.2.len()).sum();
    let mut out = Vec::with_capacity(body.len() + grow);
    let mut at = 0;
    for (start, end, text) in cuts {
        out.extend_from_slice(&body[at..start]);
        out.extend_from_slice(text);
        at = end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// Characters in raw string content: UTF-8 scalar values, an escape sequence counting as
/// one. Cheap enough to run on every streamed delta.
pub(crate) fn chars_in(raw: &[u8]) -> u64 {
    // Continuation bytes are 0x80..=0xBF, i.e. below -0x40 as i8.
    let mut n = raw.iter().filter(|&&b| (b as i8) >= -0x40).count();
    let mut i = 0;
    while let Some(j) = raw.get(i..).and_then(|r| memchr(b'\\', r)) {
        let k = i + j;
        match raw.get(k + 1) {
            Some(b'u') => {
                n = n.saturating_sub(5);
                i = k + 6;
            }
            Some(_) => {
                n = n.saturating_sub(1);
                i = k + 2;
            }
            None => break,
        }
    }
    n as u64
}

/// Characters of every string value of `key` in `hay` (several choices or parts may each
/// carry one).
pub(crate) fn string_chars(hay: &[u8], key: &Finder<'_>) -> Option<u64> {
    let mut found = None;
    let mut pos = 0;
    while let Some((_, v)) = find_key(hay, key, pos) {
        pos = v;
        if let Some(raw) = string_at(hay, v) {
            *found.get_or_insert(0) += chars_in(raw);
            pos = v + raw.len() + 2;
        }
    }
    found
}

/// Offset just past the JSON value starting at `v`.
pub(crate) fn value_end(hay: &[u8], v: usize) -> Option<usize> {
    match *hay.get(v)? {
        b'"' => string_end(hay, v),
        open @ (b'{' | b'[') => {
            let close = if open == b'{' { b'}' } else { b']' };
            let mut depth = 0u32;
            let mut i = v;
            loop {
                let k = i + memchr3(b'"', open, close, hay.get(i..)?)?;
                if hay[k] == b'"' {
                    i = string_end(hay, k)?;
                } else if hay[k] == open {
                    depth += 1;
                    i = k + 1;
                } else {
                    depth = depth.saturating_sub(1);
                    i = k + 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
            }
        }
        _ => Some(scalar_end(hay, v)),
    }
}

fn scalar_end(hay: &[u8], v: usize) -> usize {
    hay[v..]
        .iter()
        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(hay.len(), |n| v + n)
}

/// Walk the object that starts at `hay[0]` and call `visit(parent, key, n)` for every
/// non-negative integer member, at the top level (`parent` empty) and one object deep
/// (`parent` the enclosing key); everything else is skipped. Returns `None` when the object
/// is malformed or cut short. A usage report is a few flat numbers and `…_details` objects,
/// which this reads several times faster than a serde derive (no key allocation, no UTF-8
/// validation, no field-name tables) — it runs on every Gemini chunk.
pub(crate) fn object_numbers(
    hay: &[u8],
    mut visit: impl FnMut(&[u8], &[u8], u64),
) -> Option<usize> {
    walk_object(hay, 0, b"", &mut visit)
}

fn walk_object(
    hay: &[u8],
    open: usize,
    parent: &[u8],
    visit: &mut impl FnMut(&[u8], &[u8], u64),
) -> Option<usize> {
    if hay.get(open) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(hay, open + 1);
    if hay.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if hay.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(hay, i)?;
        let key = &hay[i + 1..key_end - 1];
        i = skip_ws(hay, key_end);
        if hay.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(hay, i + 1);
        i = match *hay.get(i)? {
            b'0'..=b'9' => {
                let end = scalar_end(hay, i);
                if let Some(n) = parse_u64(&hay[i..end]) {
                    visit(parent, key, n);
                }
                end
            }
            // One level deep only, and never under the empty key: its members would read as
            // top-level ones (their parent is empty too), and each `"":{` would recurse again.
            b'{' if parent.is_empty() && !key.is_empty() => walk_object(hay, i, key, visit)?,
            _ => value_end(hay, i)?,
        };
        i = skip_ws(hay, i);
        match *hay.get(i)? {
            b',' => i = skip_ws(hay, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A plain decimal integer (no sign, fraction or exponent). Digits past `u64::MAX` read as
/// `u64::MAX`: an absurd count must be seen as absurd (and refused by `Usage::is_plausible`),
/// not as a missing one.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            Some(n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
        } else {
            None
        }
    })
}

/// Whether the document is an object whose first key is `key` (without quotes) with a
/// value other than `null` — how both providers send an error in place of an answer.
pub(crate) fn first_key_is(hay: &[u8], key: &[u8]) -> bool {
    let i = skip_ws(hay, 0);
    if hay.get(i) != Some(&b'{') {
        return false;
    }
    let k = skip_ws(hay, i + 1);
    let Some(rest) = hay.get(k..) else {
        return false;
    };
    if rest.first() != Some(&b'"')
        || rest.get(1..=key.len()) != Some(key)
        || rest.get(key.len() + 1) != Some(&b'"')
    {
        return false;
    }
    value_after_key(hay, k + key.len() + 2).is_some_and(|v| !hay[v..].starts_with(b"null"))
}

/// What one pass over a request body found.
#[derive(Debug)]
pub(crate) struct BodyScan<const N: usize> {
    /// The body is one well-formed JSON value.
    pub valid: bool,
    /// Offset of the top-level `{`, when the body is an object.
    pub open: Option<usize>,
    /// Value spans of the requested top-level keys (the last occurrence of each). Keys are
    /// compared as a parser reads them: `"\u0073tream"` is `stream`.
    pub spans: [Option<(usize, usize)>; N],
    /// The first requested key set more than once at the top level: the providers' parsers take
    /// the last, others the first, so such a body is refused rather than read either way.
    pub duplicate: Option<usize>,
    /// Characters of prompt text (string values that are not media or labels).
    pub text_chars: u64,
    /// Inline or referenced media parts.
    pub media_parts: u64,
    /// Numbers inside token arrays (`"prompt": [1, 2, 3]`): one token each.
    pub token_numbers: u64,
}

impl<const N: usize> BodyScan<N> {
    /// About four characters per token, media parts at a constant each.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.text_chars
            .div_ceil(4)
            .saturating_add(self.media_parts.saturating_mul(MEDIA_PART_TOKENS))
            .saturating_add(self.token_numbers)
    }

    /// The raw value of the `i`-th requested key.
    pub(crate) fn value<'b>(&self, body: &'b [u8], i: usize) -> Option<&'b [u8]> {
        self.spans
            .get(i)
            .copied()
            .flatten()
            .and_then(|(s, e)| body.get(s..e))
    }
}

/// String values under these keys are media (inline data or a reference), not text.
const MEDIA_KEYS: &[&[u8]] = &[
    b"data",
    b"file_data",
    b"url",
    b"image_url",
    b"file_url",
    b"file_id",
    b"fileUri",
    b"file_uri",
];

/// String values under these keys are labels, not prompt text.
const LABEL_KEYS: &[&[u8]] = &[
    b"type",
    b"role",
    b"model",
    b"mimeType",
    b"mime_type",
    b"detail",
    b"format",
    b"status",
];

/// A `data:…;base64,` URL: media whatever key it sits under.
fn is_data_url(raw: &[u8]) -> bool {
    raw.starts_with(b"data:")
        && memchr::memmem::find(&raw[..raw.len().min(256)], b";base64,").is_some()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrClose,
    Key,
    KeyOrClose,
    Colon,
    CommaOrClose,
    End,
}

struct Frame<'a> {
    object: bool,
    /// In an object, the key being read (decoded); in an array, the key the array is the value
    /// of.
    key: Cow<'a, [u8]>,
}

/// One pass over a request body, without building a tree: records the value spans of the
/// top-level `keys` (and whether one is repeated), counts prompt text and media parts, and
/// counts numbers under the top-level `token_keys` as tokens. Keys are decoded when they hold
/// an escape, so they read as the provider's parser reads them. Strings (base64 included) are
/// skipped with `memchr`, so a multi-megabyte screenshot costs a fraction of a millisecond.
pub(crate) fn scan_body<const N: usize>(
    body: &[u8],
    keys: [&[u8]; N],
    token_keys: &[&[u8]],
) -> BodyScan<N> {
    let mut out = BodyScan {
        valid: false,
        open: None,
        spans: [None; N],
        duplicate: None,
        text_chars: 0,
        media_parts: 0,
        token_numbers: 0,
    };
    let mut stack: Vec<Frame<'_>> = Vec::with_capacity(16);
    let mut expect = Expect::Value;
    let mut top_key: Cow<'_, [u8]> = Cow::Borrowed(b"");
    let mut wanted: Option<usize> = None;
    let mut value_start = 0;
    let mut i = if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    loop {
        i = skip_ws(body, i);
        let Some(&b) = body.get(i) else {
            break;
        };
        // Where a value has just ended, `done` is set to its end.
        let mut done = None;
        match (expect, b) {
            (Expect::End, _) => return out,
            (Expect::Colon, b':') => {
                expect = Expect::Value;
                i += 1;
            }
            (Expect::Colon, _) => return out,
            (Expect::Key | Expect::KeyOrClose, b'"') => {
                let Some(end) = string_end(body, i) else {
                    return out;
                };
                let Some(key) = decode_key(&body[i..end]) else {
                    return out;
                };
                if stack.len() == 1 {
                    wanted = keys.iter().position(|k| **k == *key);
                    if let Some(k) = wanted
                        && out.spans[k].is_some()
                    {
                        out.duplicate.get_or_insert(k);
                    }
                    top_key = key.clone();
                }
                if let Some(frame) = stack.last_mut() {
                    frame.key = key;
                }
                expect = Expect::Colon;
                i = end;
            }
            (Expect::KeyOrClose, b'}') | (Expect::ValueOrClose, b']') => {
                stack.pop();
                i += 1;
                done = Some(i);
            }
            (Expect::CommaOrClose, b',') => {
                let object = stack.last().is_some_and(|f| f.object);
                expect = if object { Expect::Key } else { Expect::Value };
                i += 1;
            }
            (Expect::CommaOrClose, b'}' | b']') => {
                let object = stack.last().is_some_and(|f| f.object);
                if object != (b == b'}') {
                    return out;
                }
                stack.pop();
                i += 1;
                done = Some(i);
            }
            (Expect::Value | Expect::ValueOrClose, _) => {
                if stack.len() == 1 {
                    value_start = i;
                }
                let key: &[u8] = stack.last().map_or(&b""[..], |f| &f.key);
                match b {
                    b'{' | b'[' => {
                        if stack.len() >= MAX_DEPTH {
                            return out;
                        }
                        if stack.is_empty() && b == b'{' {
                            out.open = Some(i);
                        }
                        let object = b == b'{';
                        // An array's elements are under its key (a clone of a borrowed key
                        // is a copy of the slice's address).
                        let key = match stack.last() {
                            Some(parent) if !object => parent.key.clone(),
                            _ => Cow::Borrowed(&b""[..]),
                        };
                        stack.push(Frame { object, key });
                        expect = if object {
                            Expect::KeyOrClose
                        } else {
                            Expect::ValueOrClose
                        };
                        i += 1;
                    }
                    b'"' => {
                        let Some(end) = string_end(body, i) else {
                            return out;
                        };
                        let raw = &body[i + 1..end - 1];
                        if MEDIA_KEYS.contains(&key) || is_data_url(raw) {
                            out.media_parts += 1;
                        } else if !LABEL_KEYS.contains(&key) {
                            out.text_chars += chars_in(raw);
                        }
                        i = end;
                        done = Some(i);
                    }
                    b'-' | b'0'..=b'9' => {
                        if stack.len() >= 2 && token_keys.contains(&&*top_key) {
                            out.token_numbers += 1;
                        }
                        i = scalar_end(body, i);
                        done = Some(i);
                    }
                    b't' | b'f' | b'n' => {
                        let end = scalar_end(body, i);
                        if !matches!(&body[i..end], b"true" | b"false" | b"null") {
                            return out;
                        }
                        i = end;
                        done = Some(i);
                    }
                    _ => return out,
                }
            }
            _ => return out,
        }
        if let Some(end) = done {
            if stack.len() == 1
                && let Some(k) = wanted.take()
            {
                out.spans[k] = Some((value_start, end));
            }
            expect = if stack.is_empty() {
                Expect::End
            } else {
                Expect::CommaOrClose
            };
        }
    }
    out.valid = expect == Expect::End;
    out
}

#[cfg(test)]
mod tests {
    use memchr::memmem::{Finder, FinderRev};

    use super::*;

    #[test]
    fn chars_count_scalar_values_and_escapes_as_one() {
        assert_eq!(chars_in("héllo 👋".as_bytes()), 7);
        assert_eq!(chars_in(br#"a\nb\"c\\"#), 6);
        assert_eq!(chars_in(br#"caf\u00e9"#), 4);
        assert_eq!(chars_in(b"trailing\\"), 9);
        assert_eq!(chars_in(b""), 0);
    }

    #[test]
    fn keys_inside_strings_are_not_keys() {
        let hay = br#"{"text":"say \"usage\": {\"prompt_tokens\":9}","usage":{"prompt_tokens":1}, "x": "usage"}"#;
        let (k, v) = find_key(hay, &Finder::new(b"\"usage\""), 0).expect("the real key");
        assert_eq!(&hay[k..v], br#""usage":"#);
        assert_eq!(
            value_end(hay, v).map(|e| &hay[v..e]),
            Some(&br#"{"prompt_tokens":1}"#[..])
        );
        let (_, v2) = rfind_key(hay, &FinderRev::new(b"\"usage\""), hay.len()).expect("key");
        assert_eq!(v, v2, "a string value \"usage\" is not a key");
    }

    #[test]
    fn value_end_skips_brackets_in_strings() {
        let hay = br#"{"a": ["}", {"b": "]\"{"}], "c": 1}"#;
        assert_eq!(value_end(hay, 0), Some(hay.len()));
        assert_eq!(
            value_end(hay, 6).map(|e| &hay[6..e]),
            Some(&br#"["}", {"b": "]\"{"}]"#[..])
        );
        assert_eq!(value_end(b"12, 3", 0), Some(2));
        assert_eq!(value_end(b"{\"unterminated", 0), None);
    }

    #[test]
    fn first_key_error_must_be_first_and_not_null() {
        assert!(first_key_is(b" {\n  \"error\" : {\"code\": 1}}", b"error"));
        assert!(!first_key_is(b"{\"error\": null}", b"error"));
        assert!(!first_key_is(b"{\"errors\": 1}", b"error"));
        assert!(!first_key_is(b"{\"id\": 1, \"error\": {}}", b"error"));
        assert!(!first_key_is(b"[{\"error\": {}}]", b"error"));
    }

    /// Found by fuzzing: an object under the empty key was walked as if it were the top level,
    /// and `{"":{"":{…` recursed once per level (a stack overflow on a deep enough answer).
    #[test]
    fn object_numbers_does_not_read_under_the_empty_key() {
        let mut seen = Vec::new();
        let obj = br#"{"":{"prompt_tokens":5,"d":{"n":1}},"a":{"":2}}"#;
        let end = object_numbers(obj, |p, k, n| seen.push((p.to_vec(), k.to_vec(), n)));
        assert_eq!(end, Some(obj.len()));
        assert_eq!(seen, vec![(b"a".to_vec(), b"".to_vec(), 2)]);
        let levels = 1_000_000;
        let deep = [&br#"{"":"#.repeat(levels)[..], b"1", &b"}".repeat(levels)].concat();
        assert_eq!(object_numbers(&deep, |_, _, _| {}), Some(deep.len()));
    }

    #[test]
    fn object_numbers_reads_top_level_and_one_level_deep() {
        let obj = br#"{"a": 1, "s": "x}", "d": {"b": 22, "deep": {"c": 3}, "f": 1.5}, "arr": [{"n": 4}], "z": null, "big": 18446744073709551615, "huge": 123456789012345678901234567890, "neg": -5}trailing"#;
        let mut seen = Vec::new();
        let end = object_numbers(obj, |p, k, n| seen.push((p.to_vec(), k.to_vec(), n)));
        assert_eq!(end, Some(obj.len() - 8));
        let seen: Vec<(&[u8], &[u8], u64)> =
            seen.iter().map(|(p, k, n)| (&p[..], &k[..], *n)).collect();
        assert_eq!(
            seen,
            vec![
                (&b""[..], &b"a"[..], 1),
                (b"d", b"b", 22),
                (b"", b"big", u64::MAX),
                (b"", b"huge", u64::MAX)
            ]
        );
        assert_eq!(object_numbers(b"{}", |_, _, _| {}), Some(2));
        for bad in [
            &b"{"[..],
            b"{\"a\": 1",
            b"{\"a\" 1}",
            b"{a: 1}",
            b"[]",
            b"{\"a\": 1,}",
            b"{\"a\": 99999999999999999999}x",
        ] {
            let r = object_numbers(bad, |_, _, _| {});
            assert!(
                r.is_none() || bad.ends_with(b"x"),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn decode_string_unescapes() {
        assert_eq!(decode_string(br#""a\u002db""#, 0).as_deref(), Some("a-b"));
        assert_eq!(decode_string(br#""plain""#, 0).as_deref(), Some("plain"));
        assert_eq!(decode_string(b"5", 0), None);
    }

    #[test]
    fn scan_records_top_level_spans_only() {
        let body = br#"{"model":"x","nested":{"model":"inner"},"stream" : true ,"n":2}"#;
        let scan = scan_body(body, [b"model", b"stream", b"n", b"absent"], &[]);
        assert!(scan.valid);
        assert_eq!(scan.open, Some(0));
        assert_eq!(scan.value(body, 0), Some(&br#""x""#[..]));
        assert_eq!(scan.value(body, 1), Some(&b"true"[..]));
        assert_eq!(scan.value(body, 2), Some(&b"2"[..]));
        assert_eq!(scan.value(body, 3), None);
    }

    #[test]
    fn scan_reads_escaped_keys_and_reports_repeats() {
        let body =
            br#"{"\u006dodel":"x","n":1,"stre\u0061m":true,"nested":{"model":"y","model":"z"}}"#;
        let scan = scan_body(body, [b"model", b"stream", b"n"], &[]);
        assert!(scan.valid);
        assert_eq!(scan.value(body, 0), Some(&br#""x""#[..]));
        assert_eq!(scan.value(body, 1), Some(&b"true"[..]));
        assert_eq!(
            scan.duplicate, None,
            "nested repeats are not top-level ones"
        );
        let body = br#"{"n":1,"model":"x","\u006e":2}"#;
        let scan = scan_body(body, [b"model", b"n"], &[]);
        assert_eq!(scan.duplicate, Some(1));
        assert_eq!(scan.value(body, 1), Some(&b"2"[..]), "the last one is kept");
        assert!(!scan_body(br#"{"\u12":1}"#, [b"model"], &[]).valid);
        let tokens = br#"{"\u0069nput":[1,2,3]}"#;
        assert_eq!(scan_body(tokens, [], &[b"input"]).token_numbers, 3);
    }

    #[test]
    fn repeated_field_reads_decoded_keys_and_spellings() {
        let field = |k: &[u8]| match k {
            b"a" | b"a_alias" => Some("a"),
            b"b" => Some("b"),
            _ => None,
        };
        assert_eq!(repeated_field(br#"{}"#, field), Ok(None));
        assert_eq!(
            repeated_field(br#"{"a":1,"b":{"a":2},"c":3,"c":4}"#, field),
            Ok(None)
        );
        assert_eq!(
            repeated_field(br#"{"a":1,"a_alias":2}"#, field),
            Ok(Some("a"))
        );
        assert_eq!(
            repeated_field(br#"{ "b" : [1] , "\u0062" : null }"#, field),
            Ok(Some("b"))
        );
        for bad in [
            &b"[]"[..],
            b"{",
            b"{\"a\" 1}",
            b"{\"a\":1,}",
            b"{\"\\u1\":1}",
        ] {
            assert_eq!(
                repeated_field(bad, field),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn scan_counts_text_but_not_labels_or_media() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"input_audio","input_audio":{"data":"UklGR","format":"wav"}}]}]}"#;
        let scan = scan_body(body, [], &[]);
        assert!(scan.valid);
        assert_eq!(scan.text_chars, 8);
        assert_eq!(scan.media_parts, 2);
        assert_eq!(scan.prompt_tokens(), 2 + 2 * MEDIA_PART_TOKENS);
    }

    #[test]
    fn scan_treats_any_base64_data_url_as_media() {
        let body = br#"{"messages":[{"content":"data:image/png;base64,iVBORw0KGgo="}]}"#;
        assert_eq!(scan_body(body, [], &[]).media_parts, 1);
        let text = br#"{"messages":[{"content":"data: not a url"}]}"#;
        assert_eq!(scan_body(text, [], &[]).media_parts, 0);
    }

    #[test]
    fn scan_rejects_malformed_and_too_deep_bodies() {
        for body in [
            &b"{\"a\":1,}"[..],
            b"{\"a\" 1}",
            b"{\"a\":1} x",
            b"[1,2",
            b"{\"a\":[}]}",
            b"nul",
        ] {
            assert!(
                !scan_body(body, [], &[]).valid,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(!scan_body(deep.as_bytes(), [], &[]).valid);
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(scan_body(ok.as_bytes(), [], &[]).valid);
    }
}
