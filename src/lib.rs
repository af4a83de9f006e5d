//! Tollgate: a metering, budget-enforcing reverse proxy in front of the OpenAI and Gemini APIs.

pub mod auth;
pub mod config;
pub mod pricing;
pub mod quota;
pub mod provider;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod serve;
pub mod error;
pub mod meter;
pub mod proxy;
