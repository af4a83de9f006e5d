//! Prices (USD per million tokens, from `[pricing]`) and the cost of a usage, in integer
//! nano-USD.
//!
//! This module owns the price table: validating `[pricing."model"]` entries, turning them into
//! integer pico-USD per token once at build time, finding the entry for a model name by longest
//! prefix, and pricing a [`Usage`]. It is pure: no I/O, no clock, no floats and no allocation per
//! call. It never decides what a usage *is* (that is `provider`) nor what a cost is *for* (that is
//! `quota` and `store`).
//!
//! The cost of a call, in the convention every provider is mapped to (input includes cached,
//! output includes reasoning):
//!
//! ```text
//! (input − cached) × input price + cached × cached price + output × output price
//! ```
//!
//! computed exactly in pico-USD (saturating) and rounded half up to nano-USD once at the end; a
//! cost above [`MAX_COST_NANO_USD_PER_CALL`] (only an absurd price can get there: usage is
//! checked against [`MAX_TOKENS_PER_CALL`](crate::usage::MAX_TOKENS_PER_CALL) before it is
//! priced) is that ceiling, so no call adds more than it to a sum or a budget. Models priced
//! by prompt size (Gemini 2.5 Pro above 200k prompt tokens, OpenAI's GPT-6 above 272k) carry a
//! long-context tier: when a call's input tokens are *above* the threshold, all of its tokens are
//! priced at the tier's prices, as the providers bill it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::{MAX_COST_NANO_USD_PER_CALL, Usage};

/// One `[pricing."model"]` entry, USD per million tokens.
///
/// ```toml
/// [pricing."gemini-2.5-pro"]
/// input = 1.25
/// cached_input = 0.125
/// output = 10.00
/// long_context_threshold = 200000   # prompts above this many input tokens…
/// long_input = 2.50                 # …are billed entirely at these prices
/// long_cached_input = 0.25
/// long_output = 15.00
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input tokens.
    pub input: f64,
    /// Cached input tokens; defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Output tokens, reasoning included.
    pub output: f64,
    /// Input tokens above which the whole call is priced at the `long_*` prices. Set together
    /// with `long_input` and `long_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context_threshold: Option<u64>,
    /// Uncached input tokens of a long-context call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_input: Option<f64>,
    /// Cached input tokens of a long-context call; defaults to `long_input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_cached_input: Option<f64>,
    /// Output tokens of a long-context call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_output: Option<f64>,
}

/// A price entry that cannot be used. `message` does not repeat the model.
#[derive(Debug, thiserror::Error)]
#[error("pricing.\"{model}\": {message}")]
pub struct PriceError {
    pub model: String,
    pub message: String,
}

/// The largest price accepted, USD per million tokens. Far above any real price; it keeps
/// `tokens × pico-USD per token` comfortably inside integer range.
const MAX_USD_PER_MILLION: f64 = 1_000_000.0;

/// The prefix Gemini puts before model names in some paths and responses (`models/gemini-…`).
const GEMINI_MODELS_PREFIX: &str = "models/";

/// Prices of one tier in pico-USD (10⁻¹² USD) per token. USD per million tokens × 10⁶ is
/// exactly pico-USD per token, so any price with up to six decimals converts without loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rates {
    input: u64,
    cached_input: u64,
    output: u64,
}

impl Rates {
    fn pico_usd(&self, usage: &Usage) -> u128 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let times = |tokens: u64, price: u64| u128::from(tokens).saturating_mul(u128::from(price));
        times(uncached, self.input)
            .saturating_add(times(cached, self.cached_input))
            .saturating_add(times(usage.output_tokens, self.output))
    }
}

/// A validated entry: base rates and, for models priced by prompt size, the long-context tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    base: Rates,
    long: Option<(u64, Rates)>,
}

impl Entry {
    fn rates_for(&self, usage: &Usage) -> &Rates {
        match &self.long {
            Some((threshold, long)) if usage.input_tokens > *threshold => long,
            _ => &self.base,
        }
    }
}

/// The price table, ready for longest-prefix lookups.
///
/// Keys are sorted once at build time; a lookup is a handful of binary searches over them with
/// no allocation.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    /// Sorted by key bytes, keys unique (they come from a map).
    entries: Vec<(Box<str>, Entry)>,
}

impl PriceTable {
    /// Validate `[pricing]` and build the table. Refuses an empty key, a key written with
    /// Gemini's `models/` prefix, a price that is negative, not finite or absurdly large, and
    /// a half-specified long-context tier.
    pub fn new(entries: &BTreeMap<String, Price>) -> Result<PriceTable, PriceError> {
        let mut built = Vec::with_capacity(entries.len());
        for (model, price) in entries {
            let entry = build_entry(model, price).map_err(|message| PriceError {
                model: model.clone(),
                message,
            })?;
            built.push((Box::<str>::from(model.as_str()), entry));
        }
        // A BTreeMap<String, _> iterates in byte order already; sort anyway so the lookup's
        // invariant does not depend on where the entries came from.
        built.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(PriceTable { entries: built })
    }

    /// Number of price entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries (every call is then unpriced).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The price key that applies to `model`: the longest key that prefixes it, after removing
    /// a leading `models/`. `None` when no key does.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tollgate::pricing::{Price, PriceTable};
    ///
    /// let price = |input, output| Price { input, output, ..Price::default() };
    /// let table = PriceTable::new(&BTreeMap::from([
    ///     ("gpt-4o".to_string(), price(2.50, 10.00)),
    ///     ("gpt-4o-mini".to_string(), price(0.15, 0.60)),
    /// ]))?;
    /// assert_eq!(table.matched_key("gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
    /// assert_eq!(table.matched_key("gpt-4o-2024-08-06"), Some("gpt-4o"));
    /// assert_eq!(table.matched_key("o3"), None);
    /// # Ok::<(), tollgate::pricing::PriceError>(())
    /// ```
    pub fn matched_key(&self, model: &str) -> Option<&str> {
        self.find(model).map(|i| &*self.entries[i].0)
    }

    /// Cost of `usage` on `model` in nano-USD (10⁻⁹ USD); `None` when no price key prefixes the
    /// model. Never wraps: at most [`MAX_COST_NANO_USD_PER_CALL`].
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tollgate::pricing::{Price, PriceTable};
    /// use tollgate::usage::Usage;
    ///
    /// let table = PriceTable::new(&BTreeMap::from([(
    ///     "gpt-4o".to_string(),
    ///     Price { input: 2.50, cached_input: Some(1.25), output: 10.00, ..Price::default() },
    /// )]))?;
    /// let usage = Usage {
    ///     input_tokens: 1_000,      // 200 of them cached
    ///     cached_input_tokens: 200,
    ///     output_tokens: 500,       // reasoning included
    ///     reasoning_tokens: 100,
    /// };
    /// // 800 × $2.50/M + 200 × $1.25/M + 500 × $10/M = $0.00725 = 7,250,000 nano-USD
    /// assert_eq!(table.cost_nano_usd("gpt-4o-2024-08-06", &usage), Some(7_250_000));
    /// assert_eq!(table.cost_nano_usd("claude-sonnet", &usage), None);
    /// # Ok::<(), tollgate::pricing::PriceError>(())
    /// ```
    ///
    /// A long-context tier prices the whole call once its input is above the threshold:
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tollgate::pricing::{Price, PriceTable};
    /// use tollgate::usage::Usage;
    ///
    /// let pro = Price {
    ///     input: 1.25,
    ///     output: 10.00,
    ///     long_context_threshold: Some(200_000),
    ///     long_input: Some(2.50),
    ///     long_output: Some(15.00),
    ///     ..Price::default()
    /// };
    /// let table = PriceTable::new(&BTreeMap::from([("gemini-2.5-pro".to_string(), pro)]))?;
    /// let usage = |input_tokens| Usage { input_tokens, output_tokens: 1_000, ..Usage::default() };
    /// // 200,000 × $1.25/M + 1,000 × $10/M = $0.26
    /// assert_eq!(table.cost_nano_usd("models/gemini-2.5-pro", &usage(200_000)), Some(260_000_000));
    /// // 200,001 × $2.50/M + 1,000 × $15/M = $0.5150025
    /// assert_eq!(table.cost_nano_usd("gemini-2.5-pro", &usage(200_001)), Some(515_002_500));
    /// # Ok::<(), tollgate::pricing::PriceError>(())
    /// ```
    pub fn cost_nano_usd(&self, model: &str, usage: &Usage) -> Option<i64> {
        let (_, entry) = &self.entries[self.find(model)?];
        let pico = entry.rates_for(usage).pico_usd(usage);
        // Round half up, once: 1 nano-USD = 1,000 pico-USD.
        let nano = pico.saturating_add(500) / 1_000;
        Some(i64::try_from(nano).map_or(MAX_COST_NANO_USD_PER_CALL, |n| {
            n.min(MAX_COST_NANO_USD_PER_CALL)
        }))
    }

    /// Index of the longest key that is a byte prefix of `model` (without `models/`).
    ///
    /// Let `k` be the greatest key ≤ `probe`. If `k` prefixes `probe` it is the longest key that
    /// does (a longer one would sort after `k` and still be ≤ `probe`). Otherwise every key that
    /// prefixes `probe` is no longer than the common prefix of `k` and `probe`, so search again
    /// with that shorter probe. Each round shortens the probe; real tables need one or two.
    fn find(&self, model: &str) -> Option<usize> {
        let model = model.strip_prefix(GEMINI_MODELS_PREFIX).unwrap_or(model);
        let mut probe = model.as_bytes();
        loop {
            let below = self
                .entries
                .partition_point(|(key, _)| key.as_bytes() <= probe);
            let i = below.checked_sub(1)?;
            let key = self.entries[i].0.as_bytes();
            if probe.starts_with(key) {
                return Some(i);
            }
            let common = key.iter().zip(probe).take_while(|(a, b)| a == b).count();
            probe = &probe[..common];
        }
    }
}

fn build_entry(model: &str, price: &Price) -> Result<Entry, String> {
    if model.is_empty() {
        return Err("an empty model name would price every model; name the model".into());
    }
    if model.starts_with(GEMINI_MODELS_PREFIX) {
        return Err(format!(
            "write the key without `{GEMINI_MODELS_PREFIX}`: it is removed from model names before lookup"
        ));
    }
    let base = Rates {
        input: pico_per_token("input", price.input)?,
        cached_input: pico_per_token("cached_input", price.cached_input.unwrap_or(price.input))?,
        output: pico_per_token("output", price.output)?,
    };
    let long = match (
        price.long_context_threshold,
        price.long_input,
        price.long_output,
    ) {
        (None, None, None) => {
            if price.long_cached_input.is_some() {
                return Err(
                    "long_cached_input needs long_context_threshold, long_input and long_output"
                        .into(),
                );
            }
            None
        }
        (Some(threshold), Some(long_input), Some(long_output)) => Some((
            threshold,
            Rates {
                input: pico_per_token("long_input", long_input)?,
                cached_input: pico_per_token(
                    "long_cached_input",
                    price.long_cached_input.unwrap_or(long_input),
                )?,
                output: pico_per_token("long_output", long_output)?,
            },
        )),
        _ => {
            return Err("a long-context tier needs all of long_context_threshold, long_input and long_output".into());
        }
    };
    Ok(Entry { base, long })
}

/// USD per million tokens → pico-USD per token (× 10⁶), rounded to the nearest pico-USD.
fn pico_per_token(field: &str, usd_per_million: f64) -> Result<u64, String> {
    if !usd_per_million.is_finite() {
        return Err(format!(
            "{field} must be a finite number of USD per million tokens"
        ));
    }
    if usd_per_million < 0.0 {
        return Err(format!(
            "{field} must not be negative (got {usd_per_million})"
        ));
    }
    if usd_per_million > MAX_USD_PER_MILLION {
        return Err(format!(
            "{field} = {usd_per_million} USD per million tokens is above the {MAX_USD_PER_MILLION} accepted; prices are per million tokens"
        ));
    }
    // In range by the checks above: 0 ≤ value ≤ 10¹², so the cast neither truncates nor wraps.
    Ok((usd_per_million * 1e6).round() as u64)
}

/// Largest cost budget accepted, in USD: far above any real budget, and its nano-USD fits the
/// store's signed 64-bit integers.
pub const MAX_COST_USD: f64 = 1e9;

/// USD → integer nano-USD (rounded to the nearest), for budgets (`[limits]`, `[plans.NAME]`,
/// the admin API): a conversion made when a setting is read, never per call. `None` for a
/// negative, NaN, infinite or larger-than-[`MAX_COST_USD`] amount.
pub fn usd_to_nano_usd(usd: f64) -> Option<u64> {
    if !usd.is_finite() || !(0.0..=MAX_COST_USD).contains(&usd) {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked above: 0 <= usd * 1e9 <= 1e18 < u64::MAX"
    )]
    Some((usd * 1e9).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, cached: Option<f64>, output: f64) -> Price {
        Price {
            input,
            cached_input: cached,
            output,
            ..Price::default()
        }
    }

    fn table(entries: &[(&str, Price)]) -> PriceTable {
        let map = entries
            .iter()
            .map(|(k, p)| ((*k).to_string(), p.clone()))
            .collect();
        PriceTable::new(&map).unwrap()
    }

    fn usage(input: u64, cached: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            reasoning_tokens: 0,
        }
    }

    fn error(entries: &[(&str, Price)]) -> PriceError {
        let map = entries
            .iter()
            .map(|(k, p)| ((*k).to_string(), p.clone()))
            .collect();
        PriceTable::new(&map).unwrap_err()
    }

    fn gemini_pro() -> Price {
        Price {
            input: 1.25,
            cached_input: Some(0.125),
            output: 10.0,
            long_context_threshold: Some(200_000),
            long_input: Some(2.5),
            long_cached_input: Some(0.25),
            long_output: Some(15.0),
        }
    }

    #[test]
    fn cost_sums_uncached_cached_and_output_at_their_prices() {
        let t = table(&[("gpt-4.1", price(2.0, Some(0.5), 8.0))]);
        // 600 × 2,000,000 + 400 × 500,000 + 300 × 8,000,000 pico = 3,800,000,000 pico = 3,800,000 nano
        assert_eq!(
            t.cost_nano_usd("gpt-4.1", &usage(1_000, 400, 300)),
            Some(3_800_000)
        );
    }

    #[test]
    fn reasoning_tokens_are_not_billed_twice() {
        let t = table(&[("o3", price(2.0, Some(0.5), 8.0))]);
        let mut u = usage(0, 0, 1_000);
        let without = t.cost_nano_usd("o3", &u);
        u.reasoning_tokens = 900;
        assert_eq!(
            t.cost_nano_usd("o3", &u),
            without,
            "output already includes reasoning"
        );
    }

    #[test]
    fn cached_defaults_to_the_input_price() {
        let t = table(&[("m", price(3.0, None, 0.0))]);
        assert_eq!(
            t.cost_nano_usd("m", &usage(1_000, 1_000, 0)),
            t.cost_nano_usd("m", &usage(1_000, 0, 0))
        );
    }

    #[test]
    fn cached_above_input_is_clamped_to_input() {
        let t = table(&[("m", price(1.0, Some(0.5), 0.0))]);
        // 100 tokens, all cached: 100 × 500,000 pico = 50,000 nano.
        assert_eq!(t.cost_nano_usd("m", &usage(100, 500, 0)), Some(50_000));
    }

    #[test]
    fn zero_usage_costs_zero_on_a_priced_model() {
        let t = table(&[("gpt-4o", price(2.5, Some(1.25), 10.0))]);
        assert_eq!(t.cost_nano_usd("gpt-4o", &Usage::default()), Some(0));
    }

    #[test]
    fn rounds_half_up_once_at_the_end() {
        // $0.0005 per million = 500 pico per token.
        let t = table(&[("cheap", price(0.0005, None, 0.0004))]);
        assert_eq!(
            t.cost_nano_usd("cheap", &usage(1, 0, 0)),
            Some(1),
            "500 pico rounds up to 1 nano"
        );
        assert_eq!(
            t.cost_nano_usd("cheap", &usage(0, 0, 1)),
            Some(0),
            "400 pico rounds down"
        );
        assert_eq!(
            t.cost_nano_usd("cheap", &usage(3, 0, 0)),
            Some(2),
            "1,500 pico rounds up to 2"
        );
        // Rounding per part would give 1 + 0 + 0 = 1 or 1 + 1 = 2; once at the end: 900 pico → 1.
        assert_eq!(t.cost_nano_usd("cheap", &usage(1, 0, 1)), Some(1));
        // Two parts of 400 pico each: 800 → 1 once, not 0 + 0.
        assert_eq!(t.cost_nano_usd("cheap", &usage(0, 0, 2)), Some(1));
    }

    #[test]
    fn sub_nano_prices_are_exact_in_pico() {
        // $0.005 per million = 5,000 pico = 5 nano per token; 0.075 → 75,000 pico.
        let t = table(&[
            ("gpt-5-nano", price(0.05, Some(0.005), 0.4)),
            ("gpt-4o-mini", price(0.15, Some(0.075), 0.6)),
        ]);
        assert_eq!(t.cost_nano_usd("gpt-5-nano", &usage(1, 1, 0)), Some(5));
        assert_eq!(
            t.cost_nano_usd("gpt-4o-mini", &usage(1_000_000, 1_000_000, 0)),
            Some(75_000_000)
        );
    }

    #[test]
    fn huge_usage_saturates_at_the_ceiling_instead_of_wrapping() {
        let t = table(&[("m", price(MAX_USD_PER_MILLION, None, MAX_USD_PER_MILLION))]);
        assert_eq!(
            t.cost_nano_usd("m", &usage(u64::MAX, 0, u64::MAX)),
            Some(MAX_COST_NANO_USD_PER_CALL)
        );
        // The most a believed report can cost at the dearest price accepted is above the
        // ceiling too: clamped, never more.
        let max = crate::usage::MAX_TOKENS_PER_CALL;
        assert_eq!(
            t.cost_nano_usd("m", &usage(max, 0, max)),
            Some(MAX_COST_NANO_USD_PER_CALL)
        );
        // At $1 per token: 999,999 tokens are priced exactly, 1,000,001 reach the ceiling.
        let t = table(&[("m", price(1_000_000.0, None, 0.0))]);
        assert_eq!(
            t.cost_nano_usd("m", &usage(999_999, 0, 0)),
            Some(999_999_000_000_000)
        );
        assert_eq!(
            t.cost_nano_usd("m", &usage(1_000_001, 0, 0)),
            Some(MAX_COST_NANO_USD_PER_CALL)
        );
    }

    #[test]
    fn long_tier_prices_every_token_when_input_is_above_the_threshold() {
        let t = table(&[("gemini-2.5-pro", gemini_pro())]);
        // At the threshold: base prices. 200,000 × 1.25 + 0 = $0.25
        assert_eq!(
            t.cost_nano_usd("gemini-2.5-pro", &usage(200_000, 0, 0)),
            Some(250_000_000)
        );
        // One above: everything at long prices, cached and output included.
        // (200,001 − 100,000) × 2.5 + 100,000 × 0.25 + 1,000 × 15 = 250,002.5 + 25,000 + 15,000 µUSD
        assert_eq!(
            t.cost_nano_usd("gemini-2.5-pro", &usage(200_001, 100_000, 1_000)),
            Some(290_002_500)
        );
        // Below: cached and output at base prices. 100 × 1.25 + 100 × 0.125 + 10 × 10 µUSD
        assert_eq!(
            t.cost_nano_usd("gemini-2.5-pro", &usage(200, 100, 10)),
            Some(237_500)
        );
    }

    #[test]
    fn long_cached_defaults_to_long_input() {
        let mut p = gemini_pro();
        p.long_cached_input = None;
        let t = table(&[("g", p)]);
        assert_eq!(
            t.cost_nano_usd("g", &usage(300_000, 300_000, 0)),
            t.cost_nano_usd("g", &usage(300_000, 0, 0))
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[
            ("gpt-4o", price(2.5, None, 10.0)),
            ("gpt-4o-mini", price(0.15, None, 0.6)),
            ("o1", price(15.0, None, 60.0)),
            ("o1-mini", price(1.1, None, 4.4)),
            ("gpt-4.1", price(2.0, None, 8.0)),
            ("gpt-4.1-mini", price(0.4, None, 1.6)),
            ("gpt-4.1-nano", price(0.1, None, 0.4)),
        ]);
        for (model, key) in [
            ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini")),
            ("gpt-4o-mini", Some("gpt-4o-mini")),
            ("gpt-4o-2024-08-06", Some("gpt-4o")),
            ("gpt-4o", Some("gpt-4o")),
            ("gpt-4o-min", Some("gpt-4o")),
            ("o1-2024-12-17", Some("o1")),
            ("o1-mini-2024-09-12", Some("o1-mini")),
            ("gpt-4.1-mini-2025-04-14", Some("gpt-4.1-mini")),
            ("gpt-4.1-nano", Some("gpt-4.1-nano")),
            ("gpt-4.1-2025-04-14", Some("gpt-4.1")),
            ("gpt-4", None),
            ("gpt-4-turbo", None),
            ("o3", None),
            ("", None),
            ("zzz", None),
        ] {
            assert_eq!(t.matched_key(model), key, "model {model:?}");
        }
    }

    #[test]
    fn a_non_prefix_neighbour_does_not_hide_a_shorter_prefix() {
        // Sorted: "a" < "ab" < "abd" < "ac"; probe "abc" lands after "ab"… and "ac" probe after "abd".
        let t = table(&[
            ("a", price(1.0, None, 0.0)),
            ("ab", price(2.0, None, 0.0)),
            ("abd", price(3.0, None, 0.0)),
        ]);
        assert_eq!(t.matched_key("abc"), Some("ab"));
        assert_eq!(t.matched_key("ac"), Some("a"));
        assert_eq!(t.matched_key("abdx"), Some("abd"));
        assert_eq!(t.matched_key("b"), None);
    }

    #[test]
    fn multibyte_names_split_mid_character_do_not_panic() {
        let t = table(&[("é", price(1.0, None, 0.0)), ("éa", price(2.0, None, 0.0))]);
        // "è" shares its first UTF-8 byte with "é".
        assert_eq!(t.matched_key("è"), None);
        assert_eq!(t.matched_key("éb"), Some("é"));
    }

    #[test]
    fn gemini_models_prefix_is_stripped_before_matching() {
        let t = table(&[("gemini-2.5-flash", price(0.3, Some(0.03), 2.5))]);
        assert_eq!(
            t.matched_key("models/gemini-2.5-flash"),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            t.matched_key("models/gemini-2.5-flash-preview-09-2025"),
            Some("gemini-2.5-flash")
        );
        assert_eq!(t.matched_key("models/"), None);
    }

    #[test]
    fn unknown_model_and_empty_table_are_unpriced() {
        assert_eq!(
            PriceTable::default().cost_nano_usd("gpt-4o", &usage(1, 0, 1)),
            None
        );
        let t = table(&[("gpt-4o", price(2.5, None, 10.0))]);
        assert_eq!(t.cost_nano_usd("claude-3-opus", &usage(1, 0, 1)), None);
    }

    #[test]
    fn invalid_prices_are_refused_naming_the_model() {
        for bad in [f64::NAN, f64::INFINITY, -0.01, 2e6] {
            let e = error(&[
                ("ok", price(1.0, None, 1.0)),
                ("bad-model", price(bad, None, 1.0)),
            ]);
            assert_eq!(e.model, "bad-model");
            assert!(e.message.contains("input"), "{}", e.message);
        }
        let e = error(&[("m", price(1.0, Some(-1.0), 1.0))]);
        assert!(e.message.contains("cached_input"), "{}", e.message);
        let e = error(&[("m", price(1.0, None, f64::NAN))]);
        assert!(e.message.contains("output"), "{}", e.message);
        assert!(
            error(&[("", price(1.0, None, 1.0))])
                .message
                .contains("empty")
        );
        assert!(
            error(&[("models/gemini-2.5-pro", price(1.0, None, 1.0))])
                .message
                .contains("models/")
        );
    }

    #[test]
    fn long_tier_fields_are_all_or_none() {
        for strip in 0..3 {
            let mut p = gemini_pro();
            match strip {
                0 => p.long_context_threshold = None,
                1 => p.long_input = None,
                _ => p.long_output = None,
            }
            let e = error(&[("g", p)]);
            assert!(e.message.contains("long-context tier"), "{}", e.message);
        }
        let only_cached = Price {
            long_cached_input: Some(0.1),
            ..price(1.0, None, 1.0)
        };
        assert!(
            error(&[("g", only_cached)])
                .message
                .contains("long_cached_input")
        );
        let mut negative = gemini_pro();
        negative.long_output = Some(-1.0);
        assert!(error(&[("g", negative)]).message.contains("long_output"));
        let negative_cached = Price {
            long_cached_input: Some(-0.5),
            ..gemini_pro()
        };
        let e = error(&[("g", negative_cached)]);
        assert!(
            e.to_string()
                .starts_with("pricing.\"g\": long_cached_input"),
            "{e}"
        );
    }

    #[test]
    fn price_entries_refuse_unknown_fields() {
        let parsed: Result<Price, _> = toml::from_str("input = 1.0\noutput = 2.0\ncached = 0.5\n");
        assert!(parsed.is_err(), "`cached` is a typo of `cached_input`");
        let parsed: Price = toml::from_str("input = 1\noutput = 2\n").unwrap();
        assert_eq!(parsed, price(1.0, None, 2.0));
    }

    /// The `[pricing]` table of the shipped gateway.toml, other sections ignored.
    fn shipped_table() -> PriceTable {
        #[derive(Deserialize)]
        struct Shipped {
            pricing: BTreeMap<String, Price>,
        }
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
        let shipped: Shipped = toml::from_str(&text).unwrap();
        PriceTable::new(&shipped.pricing).unwrap()
    }

    #[test]
    fn shipped_price_table_maps_common_models_to_their_own_entry() {
        let t = shipped_table();
        for (model, key) in [
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
            ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
            ("gpt-4.1-nano", "gpt-4.1-nano"),
            ("gpt-4.1-2025-04-14", "gpt-4.1"),
            ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
            ("gpt-5-nano", "gpt-5-nano"),
            ("gpt-5-2025-08-07", "gpt-5"),
            ("gpt-5-codex", "gpt-5"),
            ("gpt-5.1-2025-11-13", "gpt-5.1"),
            ("gpt-5.4-mini", "gpt-5.4-mini"),
            ("gpt-5.6", "gpt-5.6"),
            ("gpt-5.6-luna", "gpt-5.6-luna"),
            ("gpt-6-astra-2026-09-03", "gpt-6-astra"),
            ("gpt-6.2-sol", "gpt-6.2-sol"),
            ("o1-2024-12-17", "o1"),
            ("o1-mini-2024-09-12", "o1-mini"),
            ("o1-pro", "o1-pro"),
            ("o3-mini-2025-01-31", "o3-mini"),
            ("o3-2025-04-16", "o3"),
            ("o3-pro", "o3-pro"),
            ("o4-mini-2025-04-16", "o4-mini"),
            ("gpt-3.5-turbo-instruct", "gpt-3.5-turbo-instruct"),
            ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
            ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
            ("gpt-4-0613", "gpt-4"),
            ("text-embedding-3-small", "text-embedding-3-small"),
            ("text-embedding-3-large", "text-embedding-3-large"),
            ("text-embedding-ada-002", "text-embedding-ada-002"),
            ("models/gemini-2.5-pro", "gemini-2.5-pro"),
            ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
            ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
            (
                "gemini-2.5-flash-preview-tts",
                "gemini-2.5-flash-preview-tts",
            ),
            ("gemini-2.5-flash-image", "gemini-2.5-flash-image"),
            ("gemini-2.0-flash-001", "gemini-2.0-flash"),
            ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
            ("gemini-3-pro-preview", "gemini-3-pro"),
            ("gemini-3.1-pro-preview", "gemini-3.1-pro"),
            ("gemini-3-flash-preview", "gemini-3-flash"),
            ("gemini-3.5-flash-lite", "gemini-3.5-flash-lite"),
            ("models/gemini-embedding-001", "gemini-embedding-001"),
            ("text-embedding-004", "text-embedding-004"),
        ] {
            assert_eq!(t.matched_key(model), Some(key), "model {model:?}");
        }
        // Families Tollgate has no price for stay unpriced rather than borrowing a neighbour's.
        for model in ["gpt-6.1-luna", "claude-sonnet-5", "gemini-1.0-pro"] {
            assert_eq!(t.matched_key(model), None, "model {model:?}");
        }
    }

    #[test]
    fn shipped_price_table_prices_a_few_models_as_published() {
        let t = shipped_table();
        // 100k tokens (below every long-context threshold) at p thousandths of a USD per
        // million tokens cost 100,000 × p nano-USD.
        let tokens = 100_000;
        let inputs = usage(tokens, 0, 0);
        let outputs = usage(0, 0, tokens);
        let cached = usage(tokens, tokens, 0);
        let at = |thousandths: i64| thousandths * 100_000;
        for (model, input, cached_input, output) in [
            ("gpt-4o-mini-2024-07-18", 150, 75, 600),
            ("gpt-4o", 2_500, 1_250, 10_000),
            ("gpt-4.1", 2_000, 500, 8_000),
            ("gpt-5", 1_250, 125, 10_000),
            ("o4-mini", 1_100, 275, 4_400),
            ("text-embedding-3-small", 20, 20, 0),
            ("gemini-2.5-flash", 300, 30, 2_500),
            ("gemini-2.5-pro", 1_250, 125, 10_000),
            ("text-embedding-004", 0, 0, 0),
        ] {
            assert_eq!(
                t.cost_nano_usd(model, &inputs),
                Some(at(input)),
                "{model} input"
            );
            assert_eq!(
                t.cost_nano_usd(model, &cached),
                Some(at(cached_input)),
                "{model} cached"
            );
            assert_eq!(
                t.cost_nano_usd(model, &outputs),
                Some(at(output)),
                "{model} output"
            );
        }
        // Above the long-context thresholds the whole call moves to the long prices:
        // 1M in + 1M out = $2.50 + $15 on Gemini 2.5 Pro, $20 + $75 on GPT-6 Astra.
        let long = usage(1_000_000, 0, 1_000_000);
        assert_eq!(
            t.cost_nano_usd("gemini-2.5-pro", &long),
            Some(17_500_000_000)
        );
        assert_eq!(t.cost_nano_usd("gpt-6-astra", &long), Some(95_000_000_000));
        assert_eq!(
            t.cost_nano_usd("gpt-6-astra", &usage(272_000, 0, 0)),
            Some(2_720_000_000)
        );
    }
}
