//! The pooled client calls go out through: HTTPS via rustls (aws-lc-rs, the public webpki roots
//! plus `server.upstream_ca_file`, host names always verified, HTTP/1.1 and HTTP/2 by ALPN) or plain HTTP for local upstreams, with the connect timeout and pool
//! settings of `[server]`. Built at start and again by a reload that changes those settings.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Config;

/// The pooled upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the upstream client: {0}")]
pub struct ClientError(#[from] rustls::Error);

/// The pooled upstream client for `config`.
pub fn client(config: &Config) -> Result<UpstreamClient, ClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout()));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in &config.upstream_roots {
        roots.add(cert.clone())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(
            config.raw.server.pool_idle_timeout_secs,
        ))
        .pool_max_idle_per_host(config.raw.server.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}
