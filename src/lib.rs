//! Tollgate: a metering, budget-enforcing reverse proxy in front of the OpenAI and Gemini APIs.

pub mod access_log;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod calendar;
pub mod config;
pub mod demo;
pub mod error;
pub mod file_watch;
#[doc(hidden)]
pub mod fuzzing;
pub mod meter;
pub mod metrics;
pub mod plan;
pub mod pricing;
pub mod provider;
pub mod proxy;
pub mod quota;
pub mod reload;
pub mod secret;
pub mod serve;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod usage;
