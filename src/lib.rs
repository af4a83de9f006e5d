//! Tollgate: a metering, budget-enforcing reverse proxy in front of the OpenAI and Gemini APIs.

pub mod auth;
pub mod config;
pub mod pricing;
pub mod provider;
pub mod store;
pub mod stream;
pub mod serve;
