//! The per-call work on the request path before and after the upstream: JWT verification,
//! request inspection and pricing.
//!
//! Run: `cargo bench --bench request_path` (one group: `cargo bench --bench request_path -- inspect`).
//!
//! - `verify::*`: `auth::Verifier::verify` on an HS256 token minted by `auth::mint` with the
//!   default `[auth]` settings: `cache_hit` (the token was verified before, as on every call of a
//!   session after its first) and `cache_miss` (`with_cache_capacity(0)`: base64, JSON and HMAC
//!   each time).
//! - `inspect::*`: `provider::inspect` on a typical chat body (~1.2 KB, six messages), the same body streaming
//!   without `stream_options` (so Tollgate rewrites it to add `include_usage`), a Gemini
//!   `generateContent` body, and a 3 MB chat body carrying a screenshot as a base64 data URL.
//! - `price::*`: `PriceTable::cost_nano_usd` with the `[pricing]` table shipped in gateway.toml:
//!   an exact key, a dated model name found by longest prefix, and a model with no price.
//! - `plan::*`: what a plan adds to a call, with the free and pro tiers of gateway.toml's
//!   commented example: `choose` (the token's claim to its plan) + `check_model` + `output` on
//!   the 1.2 KB chat body that asks for no more than the ceiling (`allowed`), and the same with
//!   the ceiling written into a body that sets no cap (`cap_written`: `provider::cap_output`'s
//!   scan and copy).
//!
//! `main` first checks what each case is meant to exercise (cache hit and miss, the rewrite,
//! the media part, the prefix match).

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark's set-up fails loudly on a broken fixture"
)]

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use http::Method;
use serde::Deserialize;
use serde_json::json;
use tollgate::auth::{self, Verifier};
use tollgate::config::{AuthConfig, Secret};
use tollgate::pricing::{Price, PriceTable};
use tollgate::provider::{self, ProviderKind, Usage};

fn main() {
    check_cases();
    divan::main();
}

// === JWT verification ===

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// A token as a login backend would issue it: subject, email, name, one hour to live.
static TOKEN: LazyLock<String> = LazyLock::new(|| {
    auth::mint(
        &Secret::new(SECRET),
        &AuthConfig::default(),
        "user-4f3c9a2e-8b1d-4e7a-9c6f-2d5e8a1b3c7d",
        false,
        Duration::from_secs(3600),
        Some("ada.lovelace@example.com"),
        Some("Ada Lovelace"),
    )
    .unwrap()
});

fn verifier() -> Verifier {
    Verifier::new(&AuthConfig::default(), Some(&Secret::new(SECRET)), None).unwrap()
}

mod verify {
    use super::*;

    #[divan::bench]
    fn cache_hit(bencher: Bencher<'_, '_>) {
        let verifier = verifier();
        verifier.verify(&TOKEN).unwrap();
        bencher.bench(|| verifier.verify(black_box(&TOKEN)));
    }

    #[divan::bench]
    fn cache_miss(bencher: Bencher<'_, '_>) {
        let verifier = verifier().with_cache_capacity(0);
        bencher.bench(|| verifier.verify(black_box(&TOKEN)));
    }
}

// === request inspection ===

const SYSTEM_PROMPT: &str = "You are a helpful assistant for an online bookshop. Answer briefly and \
    politely, recommend at most three titles at a time, never invent prices or stock levels, and \
    when a question is about an order ask for the order number first. Use British spelling.";

/// A few turns of conversation, as chat apps send them (the whole history every call).
fn chat_messages() -> serde_json::Value {
    json!([
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Hi! I loved \"The Left Hand of Darkness\". What should I read next?"},
        {"role": "assistant", "content": "If you enjoyed Le Guin's world-building, try \"The Dispossessed\" (also Le Guin), \"A Memory Called Empire\" by Arkady Martine, or \"Ancillary Justice\" by Ann Leckie — all thoughtful takes on culture, politics and identity."},
        {"role": "user", "content": "Ancillary Justice sounds great. Is it part of a series, and do I need to read anything else first?"},
        {"role": "assistant", "content": "Yes, it opens the Imperial Radch trilogy, followed by \"Ancillary Sword\" and \"Ancillary Mercy\". You can start with it directly; no earlier books are needed."},
        {"role": "user", "content": "Perfect. Could you also suggest something shorter, maybe a novella, in a similar spirit?"}
    ])
}

/// A typical non-streaming chat completion request.
static CHAT: LazyLock<Bytes> = LazyLock::new(|| {
    body(&json!({
        "model": "gpt-4o-mini",
        "messages": chat_messages(),
        "temperature": 0.7,
        "max_tokens": 512,
        "user": "user-4f3c9a2e"
    }))
});

/// The same request streaming without `stream_options`: Tollgate adds `include_usage`.
static CHAT_STREAM: LazyLock<Bytes> = LazyLock::new(|| {
    body(&json!({
        "model": "gpt-4o-mini",
        "messages": chat_messages(),
        "temperature": 0.7,
        "max_tokens": 512,
        "stream": true
    }))
});

/// A Gemini `generateContent` request with a system instruction and a few turns.
static GEMINI: LazyLock<Bytes> = LazyLock::new(|| {
    let turn = |role: &str, text: &str| json!({"role": role, "parts": [{"text": text}]});
    body(&json!({
        "systemInstruction": {"parts": [{"text": SYSTEM_PROMPT}]},
        "contents": [
            turn("user", "Hi! I loved \"The Left Hand of Darkness\". What should I read next?"),
            turn("model", "If you enjoyed Le Guin's world-building, try \"The Dispossessed\", \"A Memory Called Empire\" or \"Ancillary Justice\"."),
            turn("user", "Ancillary Justice sounds great. Is it part of a series?"),
            turn("model", "Yes, it opens the Imperial Radch trilogy, followed by \"Ancillary Sword\" and \"Ancillary Mercy\"."),
            turn("user", "Could you also suggest something shorter, maybe a novella, in a similar spirit?")
        ],
        "generationConfig": {"temperature": 0.7, "maxOutputTokens": 1024, "candidateCount": 1},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    }))
});

/// Bytes of the screenshot before base64 (which makes it 3 MB).
const SCREENSHOT_BYTES: usize = 3 * 1024 * 1024 / 4 * 3;

/// A chat request with a 3 MB screenshot as a base64 data URL, as the SDKs send local images.
static SCREENSHOT: LazyLock<Bytes> = LazyLock::new(|| {
    // Incompressible-looking bytes (xorshift), so the base64 has no long runs.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let png: Vec<u8> = (0..SCREENSHOT_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let url = format!("data:image/png;base64,{}", STANDARD.encode(&png));
    body(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": "What is wrong with the layout of this checkout page?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
            ]}
        ],
        "max_tokens": 800
    }))
});

fn body(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap())
}

const OPENAI_CHAT_PATH: &str = "/v1/chat/completions";
const GEMINI_GENERATE_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

mod inspect {
    use super::*;

    fn bench_inspect(
        bencher: Bencher<'_, '_>,
        kind: ProviderKind,
        rest: &'static str,
        body: &'static Bytes,
    ) {
        bencher
            .counter(BytesCount::new(body.len()))
            .bench(|| provider::inspect(kind, &Method::POST, black_box(rest), None, body));
    }

    #[divan::bench]
    fn openai_chat(bencher: Bencher<'_, '_>) {
        bench_inspect(bencher, ProviderKind::Openai, OPENAI_CHAT_PATH, &CHAT);
    }

    #[divan::bench]
    fn openai_chat_stream_rewrite(bencher: Bencher<'_, '_>) {
        bench_inspect(
            bencher,
            ProviderKind::Openai,
            OPENAI_CHAT_PATH,
            &CHAT_STREAM,
        );
    }

    #[divan::bench]
    fn gemini_generate(bencher: Bencher<'_, '_>) {
        bench_inspect(bencher, ProviderKind::Gemini, GEMINI_GENERATE_PATH, &GEMINI);
    }

    #[divan::bench]
    fn openai_screenshot_3mb(bencher: Bencher<'_, '_>) {
        bench_inspect(bencher, ProviderKind::Openai, OPENAI_CHAT_PATH, &SCREENSHOT);
    }
}

// === pricing ===

/// The part of gateway.toml read here.
#[derive(Deserialize)]
struct Gateway {
    pricing: BTreeMap<String, Price>,
}

static PRICES: LazyLock<PriceTable> = LazyLock::new(|| {
    let gateway: Gateway = toml::from_str(include_str!("../gateway.toml")).unwrap();
    PriceTable::new(&gateway.pricing).unwrap()
});

/// A typical chat call: a cached system prompt, a short answer.
const USAGE: Usage = Usage {
    input_tokens: 1_350,
    cached_input_tokens: 1_024,
    output_tokens: 420,
    reasoning_tokens: 0,
};

mod price {
    use super::*;

    fn bench_price(bencher: Bencher<'_, '_>, model: &'static str) {
        let table = &*PRICES;
        bencher.bench(|| table.cost_nano_usd(black_box(model), black_box(&USAGE)));
    }

    #[divan::bench]
    fn exact_key(bencher: Bencher<'_, '_>) {
        bench_price(bencher, "gpt-4o-mini");
    }

    #[divan::bench]
    fn dated_prefix(bencher: Bencher<'_, '_>) {
        bench_price(bencher, "gpt-4o-mini-2024-07-18");
    }

    #[divan::bench]
    fn unknown_model(bencher: Bencher<'_, '_>) {
        bench_price(bencher, "claude-sonnet-4-20250514");
    }
}

// === plans ===

/// The free and pro tiers of gateway.toml's commented example.
static PLANS: LazyLock<tollgate::plan::Plans> = LazyLock::new(|| {
    let tiers: BTreeMap<String, tollgate::plan::PlanConfig> = toml::from_str(
        r#"
        [free]
        daily_tokens = 20000
        monthly_tokens = 200000
        requests_per_minute = 10
        models = ["gpt-4o-mini*", "gemini-2.5-flash*"]
        max_output_tokens = 1024
        [pro]
        daily_tokens = 1000000
        monthly_cost_usd = 50.00
        deny_models = ["o1-pro*", "gpt-4.5*"]
        max_output_tokens = 16384
        clamp_max_output_tokens = true
        "#,
    )
    .unwrap();
    tollgate::plan::Plans::new(&tiers, Some("free")).unwrap()
});

/// The claim of a free user's token.
static FREE_CLAIM: LazyLock<Vec<Box<str>>> = LazyLock::new(|| vec![Box::from("free")]);

/// The chat body without its `max_tokens`, so a plan's ceiling is written in.
static CHAT_NO_CAP: LazyLock<Bytes> = LazyLock::new(|| {
    body(&json!({
        "model": "gpt-4o-mini",
        "messages": chat_messages(),
        "temperature": 0.7,
        "user": "user-4f3c9a2e"
    }))
});

mod plan {
    use super::*;

    fn bench_plan(bencher: Bencher<'_, '_>, body: &'static LazyLock<Bytes>) {
        let (info, _) = provider::inspect(
            ProviderKind::Openai,
            &Method::POST,
            OPENAI_CHAT_PATH,
            None,
            body,
        )
        .unwrap();
        bencher.bench(|| {
            let plan = PLANS.choose(Some(black_box(&FREE_CLAIM[..]))).plan.unwrap();
            plan.check_model(info.model.as_deref(), false, true)
                .unwrap();
            match plan.output(black_box(info.max_output_tokens)).unwrap() {
                tollgate::plan::OutputCap::Keep => None,
                tollgate::plan::OutputCap::Set(total) => {
                    provider::cap_output(ProviderKind::Openai, &info, body, total).unwrap()
                }
            }
        });
    }

    #[divan::bench]
    fn allowed(bencher: Bencher<'_, '_>) {
        bench_plan(bencher, &CHAT);
    }

    #[divan::bench]
    fn cap_written(bencher: Bencher<'_, '_>) {
        bench_plan(bencher, &CHAT_NO_CAP);
    }
}

// === set-up check ===

fn check_cases() {
    let hit = verifier();
    let caller = hit.verify(&TOKEN).unwrap();
    assert_eq!(
        &*caller.user_id,
        "user-4f3c9a2e-8b1d-4e7a-9c6f-2d5e8a1b3c7d"
    );
    assert_eq!(
        hit.cached_tokens(),
        1,
        "the cache_hit case must hit the cache"
    );
    let miss = verifier().with_cache_capacity(0);
    assert_eq!(miss.verify(&TOKEN).unwrap(), caller);
    assert_eq!(
        miss.cached_tokens(),
        0,
        "the cache_miss case must miss the cache"
    );

    let post = Method::POST;
    let (info, rewrite) =
        provider::inspect(ProviderKind::Openai, &post, OPENAI_CHAT_PATH, None, &CHAT).unwrap();
    assert_eq!(info.model.as_deref(), Some("gpt-4o-mini"));
    assert!(!info.stream && rewrite.is_none() && info.max_output_tokens == Some(512));
    assert!(CHAT.len() > 1_000, "{} bytes", CHAT.len());

    let (info, rewrite) = provider::inspect(
        ProviderKind::Openai,
        &post,
        OPENAI_CHAT_PATH,
        None,
        &CHAT_STREAM,
    )
    .unwrap();
    assert!(info.stream && info.usage_injected, "{info:?}");
    let rewritten = rewrite.unwrap();
    assert!(memchr::memmem::find(&rewritten, b"include_usage").is_some());

    let (info, _) = provider::inspect(
        ProviderKind::Gemini,
        &post,
        GEMINI_GENERATE_PATH,
        None,
        &GEMINI,
    )
    .unwrap();
    assert_eq!(info.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(info.max_output_tokens, Some(1024));

    let (info, rewrite) = provider::inspect(
        ProviderKind::Openai,
        &post,
        OPENAI_CHAT_PATH,
        None,
        &SCREENSHOT,
    )
    .unwrap();
    assert!(
        SCREENSHOT.len() >= 3 * 1024 * 1024,
        "{} bytes",
        SCREENSHOT.len()
    );
    assert_eq!(info.model.as_deref(), Some("gpt-4o"));
    assert!(rewrite.is_none());
    assert!(
        (provider::MEDIA_PART_TOKENS..provider::MEDIA_PART_TOKENS + 200)
            .contains(&info.prompt_tokens_estimate),
        "the screenshot must count as one media part, not as text: {}",
        info.prompt_tokens_estimate
    );

    let free = PLANS.choose(Some(&FREE_CLAIM[..])).plan.unwrap();
    let (info, _) = provider::inspect(
        ProviderKind::Openai,
        &post,
        OPENAI_CHAT_PATH,
        None,
        &CHAT_NO_CAP,
    )
    .unwrap();
    assert_eq!(
        free.output(info.max_output_tokens),
        Ok(tollgate::plan::OutputCap::Set(1024)),
        "cap_written must write the ceiling"
    );
    assert_eq!(
        free.output(Some(512)),
        Ok(tollgate::plan::OutputCap::Keep),
        "allowed must keep the body"
    );

    assert!(
        PRICES.len() > 40,
        "gateway.toml's [pricing] has {} entries",
        PRICES.len()
    );
    assert_eq!(PRICES.matched_key("gpt-4o-mini"), Some("gpt-4o-mini"));
    assert_eq!(
        PRICES.matched_key("gpt-4o-mini-2024-07-18"),
        Some("gpt-4o-mini")
    );
    assert_eq!(PRICES.matched_key("claude-sonnet-4-20250514"), None);
    assert!(PRICES.cost_nano_usd("gpt-4o-mini", &USAGE).is_some());
}
