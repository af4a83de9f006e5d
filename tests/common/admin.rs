//! The admin side of a [`Harness`] gateway, driven as a script would drive it: the admin
//! listener on 127.0.0.1:0 over the running gateway's handles, reqwest with an admin bearer JWT.
//! Included with `#[path = "common/admin.rs"] mod admin;` next to `mod common;`.
#![allow(dead_code)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tollgate::admin::AdminServer;

use crate::common::Harness;

/// A running admin listener and a client signed in as an admin.
pub struct AdminSide {
    server: AdminServer,
    base: String,
    client: reqwest::Client,
    token: String,
}

impl AdminSide {
    /// The admin listener of `h`'s running gateway.
    pub async fn start(h: &Harness) -> AdminSide {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = tollgate::admin::start(h.running().admin_handles(), listener)
            .await
            .unwrap();
        let token = crate::common::process::admin_jwt(&h.raw);
        AdminSide {
            base: format!("http://{}", server.addr),
            server,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            token,
        }
    }

    /// `GET path`: the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// `GET path`: the status and the body as JSON (`Null` when it is not JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, text) = self.get_text(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}
