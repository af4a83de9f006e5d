//! Prices (USD per million tokens, from `[pricing]`) and the cost of a usage, in integer
//! nano-USD. Pure: no I/O, no clock. (to be implemented)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::Usage;

/// One `[pricing."model"]` entry, USD per million tokens.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    /// Price of cached input tokens; defaults to `input`.
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// A price entry that cannot be used.
#[derive(Debug)]
pub struct PriceError {
    pub model: String,
    pub message: String,
}

/// The price table, ready for longest-prefix lookups.
#[derive(Clone, Debug, Default)]
pub struct PriceTable {}

impl PriceTable {
    pub fn new(entries: &BTreeMap<String, Price>) -> Result<PriceTable, PriceError> {
        let _ = entries;
        Ok(PriceTable {})
    }

    /// Cost of `usage` on `model` in nano-USD; `None` when no price key prefixes the model.
    pub fn cost_nano_usd(&self, model: &str, usage: &Usage) -> Option<i64> {
        let _ = (model, usage);
        None
    }
}
