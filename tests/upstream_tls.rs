//! An HTTPS upstream on real sockets, with a certificate authority made by the test and trusted
//! through `server.upstream_ca_file`: a certificate for the upstream's address is accepted; one
//! that names another host — the same CA, so only the name is wrong — is refused with 502 and
//! nothing is sent to it; a CA the gateway does not trust is refused too.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

/// A certificate authority: its PEM and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// An HTTPS server on 127.0.0.1:0 presenting a certificate for `names` signed by `ca`; it
/// answers every request with OpenAI's chat fixture and counts the requests it read.
async fn tls_upstream(ca: &Ca, names: &[&str]) -> (String, Arc<AtomicUsize>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client refused the certificate
                };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = fixture("openai/chat.json");
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://{addr}"), served)
}

async fn call_through(upstream: &str, ca_pem: &str) -> (u16, serde_json::Value, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let upstream = upstream.to_string();
    let h = Harness::start_with(move |c| {
        for p in &mut c.providers {
            p.upstream = upstream.clone();
        }
        c.server.upstream_ca_file = Some(ca_file);
    })
    .await;
    let jwt = h.token("tls-user");
    let resp = h
        .post_openai("/openai/v1/chat/completions", &jwt, CHAT_BODY)
        .await;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    drop(dir);
    (status, body, h)
}

#[tokio::test]
async fn an_upstream_certificate_for_its_address_is_accepted() {
    let ca = ca();
    let (url, served) = tls_upstream(&ca, &["127.0.0.1"]).await;
    let (status, body, _h) = call_through(&url, &ca.pem).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_certificate_naming_another_host_is_refused() {
    let ca = ca();
    // Signed by the trusted CA, but for another name: only the host check can catch it.
    let (url, served) = tls_upstream(&ca, &["api.openai.com", "other.example"]).await;
    let (status, body, mut h) = call_through(&url, &ca.pem).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(served.load(Ordering::SeqCst), 0, "no request reached it");
    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status, rows[0].outcome.as_str()),
        (502, "upstream_unreachable")
    );
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_authority_is_refused() {
    let (trusted, other) = (ca(), ca());
    let (url, served) = tls_upstream(&other, &["127.0.0.1"]).await;
    let (status, _, _h) = call_through(&url, &trusted.pem).await;
    assert_eq!(status, 502);
    assert_eq!(served.load(Ordering::SeqCst), 0);
}
