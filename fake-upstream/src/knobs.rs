//! Per-request knobs. Precedence: query parameter > token in the model name > command line.
//!
//! | query             | model token | meaning                                              |
//! |-------------------|-------------|------------------------------------------------------|
//! | `chunks`          | `n<N>`      | content chunks in the answer (= output tokens)       |
//! | `chunk_delay_ms`  | `cd<N>`     | pause between two stream pieces                      |
//! | `delay_ms`        | `d<N>`      | pause before the response head                       |
//! | `reasoning_tokens`| `r<N>`      | reasoning/thinking tokens reported (on top of chunks) |
//! | `cached_tokens`   | `c<N>`      | cached input tokens reported (at most the input)      |
//! | `cut_after`       | `cut<N>`    | abort a stream after N pieces (no clean end)          |
//! | `status`          | `e<NNN>`    | answer with this HTTP error status, provider-shaped  |
//!
//! Model tokens are separated by `-`, `/` or `_`: `gpt-4o-mini-cd10-n5`, `gemini-2.5-flash-r7`.

use std::time::Duration;

/// Defaults from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub chunks: u64,
    pub chunk_delay_ms: u64,
    pub head_delay_ms: u64,
}

/// The knobs in force for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    pub chunks: u64,
    pub chunk_delay_ms: u64,
    pub head_delay_ms: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    pub cut_after: Option<u64>,
    pub status: Option<u16>,
}

/// Knobs that a query or model name may set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Overrides {
    chunks: Option<u64>,
    chunk_delay_ms: Option<u64>,
    head_delay_ms: Option<u64>,
    reasoning_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cut_after: Option<u64>,
    status: Option<u64>,
}

impl Overrides {
    fn or(self, o: Overrides) -> Overrides {
        Overrides {
            chunks: self.chunks.or(o.chunks),
            chunk_delay_ms: self.chunk_delay_ms.or(o.chunk_delay_ms),
            head_delay_ms: self.head_delay_ms.or(o.head_delay_ms),
            reasoning_tokens: self.reasoning_tokens.or(o.reasoning_tokens),
            cached_tokens: self.cached_tokens.or(o.cached_tokens),
            cut_after: self.cut_after.or(o.cut_after),
            status: self.status.or(o.status),
        }
    }
}

/// Largest chunk count accepted (bounds the rendered body).
pub const MAX_CHUNKS: u64 = 100_000;

impl Knobs {
    pub fn resolve(defaults: &Defaults, query: Option<&str>, model: &str) -> Knobs {
        let o = from_query(query).or(from_model(model));
        Knobs {
            chunks: o.chunks.unwrap_or(defaults.chunks).clamp(1, MAX_CHUNKS),
            chunk_delay_ms: o.chunk_delay_ms.unwrap_or(defaults.chunk_delay_ms),
            head_delay_ms: o.head_delay_ms.unwrap_or(defaults.head_delay_ms),
            reasoning_tokens: o.reasoning_tokens.unwrap_or(0),
            cached_tokens: o.cached_tokens.unwrap_or(0),
            cut_after: o.cut_after,
            status: o
                .status
                .filter(|s| (400..=599).contains(s))
                .map(|s| s as u16),
        }
    }

    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.chunk_delay_ms)
    }
}

fn from_query(query: Option<&str>) -> Overrides {
    let mut o = Overrides::default();
    for pair in query.unwrap_or("").split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        match k {
            "chunks" => o.chunks = Some(v),
            "chunk_delay_ms" => o.chunk_delay_ms = Some(v),
            "delay_ms" => o.head_delay_ms = Some(v),
            "reasoning_tokens" => o.reasoning_tokens = Some(v),
            "cached_tokens" => o.cached_tokens = Some(v),
            "cut_after" => o.cut_after = Some(v),
            "status" => o.status = Some(v),
            _ => {}
        }
    }
    o
}

fn from_model(model: &str) -> Overrides {
    let mut o = Overrides::default();
    for tok in model.split(['-', '/', '_']) {
        let num = |prefix: &str| -> Option<u64> {
            let digits = tok.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        // Longer prefixes first: `cut` and `cd` before `c`.
        if let Some(v) = num("cut") {
            o.cut_after = Some(v);
        } else if let Some(v) = num("cd") {
            o.chunk_delay_ms = Some(v);
        } else if let Some(v) = num("c") {
            o.cached_tokens = Some(v);
        } else if let Some(v) = num("d") {
            o.head_delay_ms = Some(v);
        } else if let Some(v) = num("n") {
            o.chunks = Some(v);
        } else if let Some(v) = num("r") {
            o.reasoning_tokens = Some(v);
        } else if let Some(v) = num("e") {
            o.status = Some(v);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Defaults = Defaults {
        chunks: 20,
        chunk_delay_ms: 0,
        head_delay_ms: 0,
    };

    #[test]
    fn model_tokens() {
        let k = Knobs::resolve(&D, None, "fake-cd10-d50-n5-r3-c2-cut4-e429");
        assert_eq!(
            k,
            Knobs {
                chunks: 5,
                chunk_delay_ms: 10,
                head_delay_ms: 50,
                reasoning_tokens: 3,
                cached_tokens: 2,
                cut_after: Some(4),
                status: Some(429),
            }
        );
    }

    #[test]
    fn real_model_names_set_nothing() {
        for m in [
            "gpt-4o-mini-2024-07-18",
            "o3",
            "gemini-2.5-flash",
            "text-embedding-3-small",
            "gpt-5-nano",
            "models/gemini-embedding-001",
        ] {
            let k = Knobs::resolve(&D, None, m);
            assert_eq!(
                (k.chunks, k.reasoning_tokens, k.cached_tokens, k.status),
                (20, 0, 0, None),
                "{m}"
            );
        }
    }

    #[test]
    fn query_wins_over_model() {
        let k = Knobs::resolve(
            &D,
            Some("alt=sse&chunks=3&delay_ms=7&status=200"),
            "fake-n9-d1",
        );
        assert_eq!((k.chunks, k.head_delay_ms, k.status), (3, 7, None));
    }
}
