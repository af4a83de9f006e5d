//! End-user credentials: where the JWT is found in a request, and its verification into a
//! [`Caller`]. (to be implemented)

use std::sync::Arc;

/// A verified end user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Arc<str>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_admin: bool,
}
