//! [`Secret`]: a value that must never be printed (the HS256 secret, a provider key). It sits at
//! the bottom of the crate and imports nothing from it, so that configuration, authentication
//! and the proxy can all hold secrets without depending on each other.

use std::fmt;
use std::sync::Arc;

/// A value that must never be printed: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }
    /// The value, for the one place that must use it (a header, a signing key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
