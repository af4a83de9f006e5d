//! TLS on Tollgate's own listeners: `[server.tls]` for the proxy, `[admin.tls]` for the admin
//! side. Owns their settings ([`TlsConfig`]), reading a certificate chain and its private key
//! from PEM files ([`ServerTls::load`]), the rustls server configuration (TLS 1.2 and 1.3,
//! aws-lc-rs, ALPN `h2` then `http/1.1`, so HTTP/2 is chosen in the handshake), the handshake
//! of each connection ([`ServerTls::accept`], bounded in time), and replacing the certificate
//! while serving ([`ServerTls::reload`], [`ServerTls::watch`]).
//!
//! **Rotation without a restart.** The certificate a handshake presents is read from an
//! [`ArcSwap`] by a rustls `ResolvesServerCert`: a reload swaps it, so the next handshake uses
//! the new one, and connections already open keep the session they made. A new pair that cannot
//! be used (unreadable, not PEM, a key that does not belong to the certificate) is refused with
//! a log line naming the key and the file; the pair in use goes on serving.
//!
//! **Handshakes never hold the accept loop.** Listeners accept the TCP connection and hand it to
//! its own task ([`serve_connection`]), which makes the handshake there, within
//! `handshake_timeout_ms`: a client that connects and says nothing is dropped then. A client
//! speaking plain HTTP to the TLS port gets a plain `400` saying to use `https://`.
//!
//! Key material never reaches a log or an error: messages name the setting and the path, and
//! say what is wrong with the file, never what is in it. Certificates are identified by their
//! SHA-256 fingerprint.
//!
//! This module knows nothing of the proxy or the admin side; it never reads gateway.toml.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

pub use crate::file_watch::{DEBOUNCE, POLL_INTERVAL};
/// The protocols offered in the handshake, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Most bytes of a plain HTTP request read before it is answered with 400.
const PLAIN_HEAD_MAX: usize = 16 * 1024;
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// `[server.tls]` / `[admin.tls]`: the listener speaks HTTPS with this certificate.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate, optionally followed by its intermediate certificates
    /// (leaf first). Replacing it (and the key) is picked up without a restart.
    pub cert_file: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// Time a client has, from connecting, to complete its TLS handshake; past it the
    /// connection is closed.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

/// Smallest and largest `handshake_timeout_ms` accepted.
pub const HANDSHAKE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// A certificate or key that cannot be used, naming the setting and the file. Never carries
/// the file's content.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {problem}")]
pub struct TlsError {
    /// `server.tls.cert_file`, `admin.tls.key_file`, …
    pub key: String,
    /// What is wrong, with the path.
    pub problem: String,
}

impl TlsError {
    fn new(section: &str, field: &str, problem: String) -> TlsError {
        TlsError {
            key: format!("{section}.{field}"),
            problem,
        }
    }
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the pair already in use.
    Unchanged,
    /// New handshakes present this certificate (its SHA-256 fingerprint, hex).
    Replaced { fingerprint: String },
}

/// Why a connection did not become a TLS stream. Logged at debug: clients cause all of them.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("plain HTTP on the TLS port (answered 400)")]
    PlainHttp,
    #[error("not a TLS client")]
    NotTls,
    #[error("the client closed the connection before the handshake")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The TLS side of one listener: its files, the certificate in use, the acceptor. Cloning
/// shares it (a reload through any clone is seen by all).
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// `server.tls` or `admin.tls`: named in every error and log line.
    section: &'static str,
    files: TlsConfig,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the files' bytes as last loaded: a reload of the same bytes does nothing.
    loaded: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("section", &self.inner.section)
            .field("cert_file", &self.inner.files.cert_file)
            .field("key_file", &self.inner.files.key_file)
            .finish_non_exhaustive()
    }
}

/// Presents the pair in use to every handshake; a reload swaps it.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The crypto provider of every TLS connection Tollgate makes or accepts.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate chain and key the two files hold, checked to belong together.
fn read_pair(section: &str, files: &TlsConfig) -> Result<(CertifiedKey, [u8; 32]), TlsError> {
    let cert_path = &files.cert_file;
    let key_path = &files.key_file;
    let read = |field: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            TlsError::new(
                section,
                field,
                format!("cannot read {}: {e}", path.display()),
            )
        })
    };
    let cert_pem = read("cert_file", cert_path)?;
    let key_pem = read("key_file", key_path)?;
    let digest = {
        let mut h = Sha256::new();
        h.update((cert_pem.len() as u64).to_le_bytes());
        h.update(&cert_pem);
        h.update(&key_pem);
        h.finalize().into()
    };

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                section,
                "cert_file",
                format!("{} is not PEM: {e}", cert_path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(TlsError::new(
            section,
            "cert_file",
            format!(
                "{} holds no CERTIFICATE (a PEM file, the server's certificate first)",
                cert_path.display()
            ),
        ));
    }
    // The key file's own parse errors are not repeated: they may quote a line of it.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no private key (PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            }
            _ => "is not a readable PEM private key",
        };
        TlsError::new(section, "key_file", format!("{} {why}", key_path.display()))
    })?;
    let pair = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            section,
            "key_file",
            format!(
                "{} is not the private key of the certificate in {} ({section}.cert_file)",
                key_path.display(),
                cert_path.display()
            ),
        ),
        rustls::Error::General(_) => TlsError::new(
            section,
            "key_file",
            format!(
                "{} holds a private key TLS cannot use (RSA, ECDSA P-256/P-384 or Ed25519 are)",
                key_path.display()
            ),
        ),
        other => TlsError::new(
            section,
            "cert_file",
            format!(
                "the first certificate in {} cannot be used: {other}",
                cert_path.display()
            ),
        ),
    })?;
    Ok((pair, digest))
}

/// The SHA-256 fingerprint of a pair's certificate, hex (how logs name a certificate).
fn fingerprint(pair: &CertifiedKey) -> String {
    pair.cert
        .first()
        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

impl ServerTls {
    /// Read and check the pair `files` names, for the listener whose settings are `section`
    /// (`server.tls`, `admin.tls`). An error names the key at fault and its path.
    pub fn load(section: &'static str, files: &TlsConfig) -> Result<ServerTls, TlsError> {
        let (pair, digest) = read_pair(section, files)?;
        let print = fingerprint(&pair);
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(pair)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new(section, "cert_file", format!("TLS set-up: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        tracing::debug!(section, fingerprint = %print, "TLS certificate loaded");
        Ok(ServerTls {
            inner: Arc::new(Inner {
                section,
                files: files.clone(),
                resolver,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                loaded: Mutex::new(digest),
            }),
        })
    }

    /// `server.tls` or `admin.tls`.
    pub fn section(&self) -> &'static str {
        self.inner.section
    }

    /// The SHA-256 fingerprint (hex) of the certificate new handshakes present.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.inner.resolver.0.load())
    }

    /// Read the files again. A new, valid pair is used by every handshake from now on;
    /// connections already open keep theirs. An invalid one is refused, logged at warn with
    /// the key and the path, and the pair in use stays. `trigger` is for the log
    /// (`file change`, `SIGHUP`).
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, TlsError> {
        let inner = &self.inner;
        // Reloads take turns, so the last files read are the ones in use.
        let mut loaded = inner.loaded.lock().await;
        let (section, files) = (inner.section, inner.files.clone());
        let read = tokio::task::spawn_blocking(move || read_pair(section, &files))
            .await
            .map_err(|e| {
                TlsError::new(
                    section,
                    "cert_file",
                    format!("the reading task failed: {e}"),
                )
            })
            .and_then(|r| r);
        let (pair, digest) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(
                    section,
                    trigger,
                    error = %e,
                    "TLS certificate reload refused: the certificate in use goes on serving"
                );
                return Err(e);
            }
        };
        if digest == *loaded {
            tracing::debug!(section, trigger, "TLS certificate files unchanged");
            return Ok(Reloaded::Unchanged);
        }
        let print = fingerprint(&pair);
        inner.resolver.0.store(Arc::new(pair));
        *loaded = digest;
        tracing::info!(
            section,
            trigger,
            fingerprint = %print,
            "TLS certificate reloaded: new connections use it"
        );
        Ok(Reloaded::Replaced { fingerprint: print })
    }

    /// Reload when the certificate or key file changes, until `stop` changes or its sender is
    /// gone. The files are polled every [`POLL_INTERVAL`] with their content compared (which
    /// also sees a file replaced by a rename); a burst of changes makes one reload, once the
    /// files have been quiet for [`DEBOUNCE`].
    pub fn watch(&self, stop: watch::Receiver<bool>) -> Result<JoinHandle<()>, String> {
        let files = &self.inner.files;
        let tls = self.clone();
        crate::file_watch::watch_files(
            &[files.cert_file.clone(), files.key_file.clone()],
            "the TLS files",
            |event| !matches!(event.kind, notify::EventKind::Access(_)),
            stop,
            move || {
                let tls = tls.clone();
                async move {
                    // Refusals are logged by `reload`.
                    let _ = tls.reload("file change").await;
                }
            },
        )
    }

    /// The TLS handshake of an accepted connection, within `handshake_timeout_ms`. Plain HTTP
    /// is answered with a plain `400` that says to use `https://`, then closed.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeError> {
        let limit = Duration::from_millis(self.inner.files.handshake_timeout_ms);
        tokio::time::timeout(limit, self.handshake(tcp))
            .await
            .unwrap_or(Err(HandshakeError::Timeout(limit)))
    }

    async fn handshake(
        &self,
        mut tcp: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeError> {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(HandshakeError::Closed);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if first[0].is_ascii_uppercase() {
                answer_plain_http(&mut tcp).await;
                return Err(HandshakeError::PlainHttp);
            }
            return Err(HandshakeError::NotTls);
        }
        Ok(self.inner.acceptor.accept(tcp).await?)
    }
}

/// A plain HTTP request on the TLS port: read its head, say `400` with the reason, close. (The
/// head is read first so that closing does not reset the connection before the client reads
/// the answer.)
async fn answer_plain_http(tcp: &mut TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while head.len() < PLAIN_HEAD_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    const BODY: &str = "This port speaks HTTPS: use an https:// URL.\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    if tcp.write_all(answer.as_bytes()).await.is_ok() {
        let _ = tcp.shutdown().await;
    }
}

/// Serve one accepted connection with `service` through `builder` (HTTP/1.1 or HTTP/2), after
/// the TLS handshake when the listener has `tls`. Runs in the connection's own task, so a
/// handshake never holds up the accept loop; `watcher` lets a graceful stop reach it.
pub async fn serve_connection<S, B>(
    tcp: TcpStream,
    tls: Option<ServerTls>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    watcher: Watcher,
) where
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let served = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(tls) => match tls.accept(tcp).await {
            Ok(stream) => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
            Err(e) => {
                tracing::debug!(section = tls.section(), error = %e, "no TLS connection");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, key.serialize_pem())
    }

    fn files(cert_file: PathBuf, key_file: PathBuf) -> TlsConfig {
        TlsConfig {
            cert_file,
            key_file,
            handshake_timeout_ms: 1_000,
        }
    }

    fn error(files: &TlsConfig) -> String {
        ServerTls::load("server.tls", files)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_unusable_file_is_named_with_its_key_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, key_pem) = pair(dir.path(), "a");
        let (_, other_key, other_pem) = pair(dir.path(), "b");
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n",
        )
        .unwrap();

        assert!(ServerTls::load("server.tls", &files(cert.clone(), key.clone())).is_ok());
        let cases = [
            (
                files(missing.clone(), key.clone()),
                "`server.tls.cert_file`: cannot read",
            ),
            (
                files(cert.clone(), missing.clone()),
                "`server.tls.key_file`: cannot read",
            ),
            (files(key.clone(), key.clone()), "`server.tls.cert_file`:"),
            (files(cert.clone(), cert.clone()), "`server.tls.key_file`:"),
            (
                files(cert.clone(), garbage.clone()),
                "`server.tls.key_file`:",
            ),
            (
                files(cert.clone(), other_key.clone()),
                "is not the private key of the certificate",
            ),
        ];
        for (files, expected) in cases {
            let e = error(&files);
            assert!(e.contains(expected), "{e}");
            for secret in [&key_pem, &other_pem] {
                let body: String = secret.lines().nth(1).unwrap().chars().take(24).collect();
                assert!(!e.contains(&body), "{e}");
            }
            assert!(!e.contains("not base64 at all"), "{e}");
        }
        let e = error(&files(missing.clone(), key));
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_reload_swaps_a_valid_pair_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pair(dir.path(), "live");
        let tls = ServerTls::load("admin.tls", &files(cert.clone(), key.clone())).unwrap();
        let first = tls.fingerprint();
        assert_eq!(first.len(), 64);
        assert_eq!(tls.reload("test").await.unwrap(), Reloaded::Unchanged);

        // A certificate whose key is not (yet) the new one: refused, the old pair serves.
        let (new_cert, new_key, _) = pair(dir.path(), "next");
        std::fs::copy(&new_cert, &cert).unwrap();
        let e = tls.reload("test").await.unwrap_err();
        assert_eq!(e.key, "admin.tls.key_file");
        assert_eq!(tls.fingerprint(), first);

        std::fs::copy(&new_key, &key).unwrap();
        let Reloaded::Replaced { fingerprint } = tls.reload("test").await.unwrap() else {
            panic!("not replaced")
        };
        assert_ne!(fingerprint, first);
        assert_eq!(tls.fingerprint(), fingerprint);
    }
}
