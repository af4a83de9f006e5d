//! HTTPS on Tollgate's own listeners, on real sockets: certificate authorities made by the test
//! (rcgen), a server certificate for 127.0.0.1 and localhost written as a chain to a temp dir,
//! clients built on tokio-rustls and hyper that trust only the test's CA and look at what the
//! handshake gave them (the peer certificate, the protocol ALPN chose). Covered: proxied calls
//! over HTTP/1.1 and over HTTP/2 by ALPN; the admin listener over HTTPS with a `Secure` sign-in
//! cookie; a certificate replaced while serving (new connections get it, an open HTTP/2
//! connection keeps working); a broken replacement refused while the old one serves; SIGHUP on a
//! real process; plain HTTP and silent clients on the TLS port; start-up refusing an unusable
//! file by its key and path.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test's failure report"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{jwt as mint_jwt, spawn_gateway, stop, write_config};
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tollgate::config::TlsConfig;

const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// Protocols a client offers by ALPN, the one the gateway must choose, the HTTP version spoken.
type AlpnCase = (&'static [&'static [u8]], Option<&'static [u8]>, Version);

// === certificates ===

/// A certificate authority made by the test.
struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for 127.0.0.1 and localhost signed by a CA: its DER, the chain file's
/// PEM (the certificate, then the CA's) and the key's PEM.
struct Leaf {
    der: CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
}

fn leaf(ca: &Ca, name: &str) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        der: cert.der().clone(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem),
        key_pem: key.serialize_pem(),
    }
}

/// The two files `[server.tls]` names in `dir`.
fn files(dir: &Path, handshake_timeout_ms: u64) -> TlsConfig {
    TlsConfig {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        handshake_timeout_ms,
    }
}

/// Write one file the way a renewal does: a new file renamed over the old.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Put `leaf` in `dir` as the certificate and key (the key first, as a renewal may not).
fn install(dir: &Path, leaf: &Leaf) {
    replace(&dir.join("key.pem"), &leaf.key_pem);
    replace(&dir.join("cert.pem"), &leaf.chain_pem);
}

// === clients ===

/// A TLS client trusting only `cas`, offering `alpn`.
fn connector(cas: &[&Ca], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` for the name `localhost`.
async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP connection over TLS: HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn over(stream: TlsStream<TcpStream>) -> Conn {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// Send `req` (a path, with `Host: localhost`): the response head and the body.
    async fn send(&mut self, mut req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
        let resp = match self {
            Conn::H1(send) => {
                req.headers_mut()
                    .insert(http::header::HOST, "localhost".parse().unwrap());
                send.send_request(req).await.unwrap()
            }
            Conn::H2(send) => {
                let uri = format!("https://localhost{}", req.uri());
                *req.uri_mut() = uri.parse().unwrap();
                send.send_request(req).await.unwrap()
            }
        };
        let (head, body) = resp.into_parts();
        (head, body.collect().await.unwrap().to_bytes())
    }
}

fn chat(jwt: &str) -> Request<Full<Bytes>> {
    Request::post("/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT_BODY.as_bytes())))
        .unwrap()
}

/// A chat call on `conn`, which must be answered 200 with the fixture over `version`.
async fn chat_ok(conn: &mut Conn, jwt: &str, version: Version) {
    let (head, body) = conn.send(chat(jwt)).await;
    assert_eq!(
        head.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(head.version, version);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["object"], "chat.completion");
}

/// A gateway serving HTTPS with `leaf` (files in `certs`), its upstream answering every call
/// with OpenAI's chat fixture.
async fn https_gateway(certs: &Path, leaf: &Leaf, handshake_timeout_ms: u64) -> Harness {
    install(certs, leaf);
    let tls = files(certs, handshake_timeout_ms);
    let h = Harness::start_with(move |raw| raw.server.tls = Some(tls)).await;
    h.mock
        .set_default(Reply::json(200, fixture("openai/chat.json")));
    h
}

/// Connect until the gateway presents `want`, for at most `within`.
async fn until_presented(addr: SocketAddr, client: &TlsConnector, want: &Leaf, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = connect(addr, client).await
            && presented(&s) == want.der
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not present the new certificate within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === the tests ===

#[tokio::test]
async fn proxied_calls_over_https_speak_http2_by_alpn_and_http1_otherwise() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate test CA");
    let leaf = leaf(&ca, "gateway");
    let mut h = https_gateway(certs.path(), &leaf, 10_000).await;
    let jwt = h.token("tls-user");

    let cases: [AlpnCase; 3] = [
        (&[H2, H1], Some(H2), Version::HTTP_2),
        (&[H1], Some(H1), Version::HTTP_11),
        (&[], None, Version::HTTP_11),
    ];
    for (offered, chosen, version) in cases {
        let stream = connect(h.addr, &connector(&[&ca], offered)).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), chosen, "{offered:?}");
        assert_eq!(presented(&stream), leaf.der, "the configured certificate");
        let mut conn = Conn::over(stream).await;
        chat_ok(&mut conn, &jwt, version).await;
    }
    assert_eq!(h.mock.hits(), 3);
    assert_eq!(h.mock.violations(), Vec::<String>::new());
    // The chain file's second certificate (the CA) went out with the first.
    let stream = connect(h.addr, &connector(&[&ca], &[H2])).await.unwrap();
    let chain = stream.get_ref().1.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ca.der);
    drop(stream);

    h.stop().await;
    let rows = h.rows();
    assert_eq!(rows.len(), 3, "one row per call: {rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.outcome == "complete" && r.user_id == "tls-user"),
        "{rows:#?}"
    );
}

#[tokio::test]
async fn the_admin_listener_over_https_answers_and_signs_in_with_a_secure_cookie() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate admin CA");
    let leaf = leaf(&ca, "admin");
    install(certs.path(), &leaf);
    let tls = files(certs.path(), 10_000);
    let h = Harness::start_with(move |raw| raw.admin.tls = Some(tls)).await;
    let hash = tollgate::admin::hash_password("a long enough password").unwrap();
    h.exec(&format!(
        "INSERT INTO admin_accounts (name, password_hash, created_at) VALUES ('root', '{hash}', 1)"
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tollgate::admin::start(h.running().admin_handles(), listener)
        .await
        .unwrap();
    assert!(admin.tls.is_some());

    // HTTP/2 by ALPN: the health check answers.
    let stream = connect(admin.addr, &connector(&[&ca], &[H2, H1]))
        .await
        .unwrap();
    assert_eq!(presented(&stream), leaf.der);
    let mut conn = Conn::over(stream).await;
    let get = |path: &str| Request::get(path).body(Full::new(Bytes::new())).unwrap();
    let (head, body) = conn.send(get("/healthz")).await;
    assert_eq!(
        (head.status, head.version),
        (StatusCode::OK, Version::HTTP_2),
        "{body:?}"
    );

    // Sign-in over HTTP/1.1: the cookie is Secure because the listener itself is HTTPS (no
    // X-Forwarded-Proto here).
    let stream = connect(admin.addr, &connector(&[&ca], &[H1]))
        .await
        .unwrap();
    let mut conn = Conn::over(stream).await;
    let login = Request::post("/api/admin/login")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"username":"root","password":"a long enough password"}"#,
        )))
        .unwrap();
    let (head, body) = conn.send(login).await;
    assert_eq!(
        (head.status, head.version),
        (StatusCode::OK, Version::HTTP_11),
        "{body:?}"
    );
    let cookie = head.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("tollgate_admin="), "{cookie}");
    for attr in ["; Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    // The session it made works over the same connection.
    let token = cookie.split(';').next().unwrap().to_string();
    let me = Request::get("/api/admin/me")
        .header("cookie", token)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (head, body) = conn.send(me).await;
    assert_eq!(head.status, StatusCode::OK, "{body:?}");
    let me: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(me["admin"], "root");

    // Plain HTTP to the admin port gets the same clear refusal as on the proxy.
    let resp = h
        .client
        .get(format!("http://{}/healthz", admin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    admin.shutdown().await;
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_an_open_http2_one_keeps_working() {
    let certs = tempfile::tempdir().unwrap();
    let (first_ca, second_ca) = (ca("first CA"), ca("second CA"));
    let first = leaf(&first_ca, "first");
    let h = https_gateway(certs.path(), &first, 10_000).await;
    let jwt = h.token("rotating");
    let both = connector(&[&first_ca, &second_ca], &[H2, H1]);

    let stream = connect(h.addr, &both).await.unwrap();
    assert_eq!(presented(&stream), first.der);
    let mut open = Conn::over(stream).await;
    chat_ok(&mut open, &jwt, Version::HTTP_2).await;

    // A renewal from another CA: the file watch picks it up (polled every second).
    let second = leaf(&second_ca, "second");
    install(certs.path(), &second);
    until_presented(h.addr, &both, &second, Duration::from_secs(10)).await;
    let mut fresh = Conn::over(connect(h.addr, &both).await.unwrap()).await;
    chat_ok(&mut fresh, &jwt, Version::HTTP_2).await;
    // A client trusting only the first CA now refuses the gateway.
    assert!(
        connect(h.addr, &connector(&[&first_ca], &[H2]))
            .await
            .is_err()
    );
    // The connection made before the renewal goes on, on the session it made.
    chat_ok(&mut open, &jwt, Version::HTTP_2).await;
    chat_ok(&mut open, &jwt, Version::HTTP_2).await;
    assert_eq!(h.running().tls.as_ref().unwrap().fingerprint().len(), 64);
    assert_eq!(h.mock.hits(), 4);
}

#[tokio::test]
async fn a_broken_replacement_is_refused_and_the_old_certificate_still_serves() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate test CA");
    let first = leaf(&ca, "first");
    let h = https_gateway(certs.path(), &first, 10_000).await;
    let jwt = h.token("steady");
    let tls = h.running().tls.clone().unwrap();
    let client = connector(&[&ca], &[H2, H1]);
    let in_use = tls.fingerprint();

    let other = leaf(&ca, "other");
    let key_file = certs.path().join("key.pem");
    let cert_file = certs.path().join("cert.pem");
    // (what goes where, the key the refusal must name)
    let broken: [(&Path, &str, &str); 4] = [
        (&key_file, "not a key at all\n", "server.tls.key_file"),
        (&key_file, &other.key_pem, "server.tls.key_file"),
        (
            &cert_file,
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
            "server.tls.cert_file",
        ),
        (&cert_file, &first.key_pem, "server.tls.cert_file"),
    ];
    for (path, text, key) in broken {
        install(certs.path(), &first);
        replace(path, text);
        let refused = tls.reload("test").await.unwrap_err();
        assert_eq!(refused.key, key, "{refused}");
        assert!(
            refused.problem.contains(&path.display().to_string()),
            "{refused}"
        );
        for secret in [&first.key_pem, &other.key_pem] {
            let line = secret.lines().nth(1).unwrap();
            assert!(!refused.to_string().contains(line), "{refused}");
        }
        assert_eq!(tls.fingerprint(), in_use);
        // The watch saw the same files and refused them too; the old pair serves.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let stream = connect(h.addr, &client).await.unwrap();
        assert_eq!(presented(&stream), first.der);
        chat_ok(&mut Conn::over(stream).await, &jwt, Version::HTTP_2).await;
    }
    // Files that are whole again are taken.
    install(certs.path(), &other);
    until_presented(h.addr, &client, &other, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_cleanly_and_the_gateway_serves_on() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate test CA");
    let leaf = leaf(&ca, "gateway");
    let h = https_gateway(certs.path(), &leaf, 10_000).await;
    let jwt = h.token("plain");

    for _ in 0..3 {
        let resp = h.client.get(h.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["connection"], "close");
        let text = resp.text().await.unwrap();
        assert!(text.contains("https://"), "{text}");
    }
    // A call with a body: answered the same, nothing forwarded.
    let resp = h
        .client
        .post(h.url("/openai/v1/chat/completions"))
        .bearer_auth(&jwt)
        .body(CHAT_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    // Bytes that are neither TLS nor HTTP: the connection is closed.
    let mut junk = TcpStream::connect(h.addr).await.unwrap();
    junk.write_all(&[0, 1, 2, 3]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let mut conn = Conn::over(connect(h.addr, &connector(&[&ca], &[H2])).await.unwrap()).await;
    chat_ok(&mut conn, &jwt, Version::HTTP_2).await;
    assert_eq!(h.mock.hits(), 1, "only the HTTPS call reached the upstream");
}

#[tokio::test]
async fn silent_clients_hold_up_no_handshake_and_are_dropped_after_the_timeout() {
    const TIMEOUT_MS: u64 = 3_000;
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate test CA");
    let leaf = leaf(&ca, "gateway");
    let h = https_gateway(certs.path(), &leaf, TIMEOUT_MS).await;
    let jwt = h.token("busy");

    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(h.addr).await.unwrap());
    }
    // One that starts a TLS record and stops.
    let mut stalled = TcpStream::connect(h.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    silent.push(stalled);

    // Were handshakes made in the accept loop, this one would wait behind 21 timeouts.
    let mut conn = Conn::over(connect(h.addr, &connector(&[&ca], &[H2])).await.unwrap()).await;
    chat_ok(&mut conn, &jwt, Version::HTTP_2).await;
    assert!(
        opened.elapsed() < Duration::from_millis(TIMEOUT_MS),
        "served after {:?}",
        opened.elapsed()
    );
    // The silent ones are still connected meanwhile...
    let mut buf = [0u8; 16];
    for s in &silent {
        assert!(
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        );
    }
    // ...and are disconnected once their time is up.
    for mut s in silent {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the gateway closed the silent connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS - 200),
        "closed after {waited:?}, before the handshake timeout"
    );
    // The gateway serves on.
    chat_ok(&mut conn, &jwt, Version::HTTP_2).await;
}

#[tokio::test]
async fn start_up_with_an_unusable_file_fails_naming_its_key_and_path() {
    let certs = tempfile::tempdir().unwrap();
    let ca = ca("Tollgate test CA");
    let leaf = leaf(&ca, "gateway");
    install(certs.path(), &leaf);
    let missing = certs.path().join("missing-key.pem");

    // In-process: the proxy listener, then the admin listener.
    let mut raw = test_config("http://127.0.0.1:9", certs.path());
    raw.server.tls = Some(TlsConfig {
        key_file: missing.clone(),
        ..files(certs.path(), 10_000)
    });
    let config = tollgate::config::Config::from_raw(raw, &test_env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(e) = tollgate::serve::start_on(config, listener).await else {
        panic!("started with a missing key file")
    };
    let e = e.to_string();
    assert!(e.contains("`server.tls.key_file`"), "{e}");
    assert!(e.contains(&missing.display().to_string()), "{e}");

    let h = Harness::start_with({
        let cert_file = certs.path().join("key.pem"); // a key where the certificate should be
        let tls = files(certs.path(), 10_000);
        move |raw| raw.admin.tls = Some(TlsConfig { cert_file, ..tls })
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(e) = tollgate::admin::start(h.running().admin_handles(), listener).await else {
        panic!("the admin side started with a key as its certificate")
    };
    let e = e.to_string();
    assert!(e.contains("`admin.tls.cert_file`"), "{e}");
    assert!(e.contains("holds no CERTIFICATE"), "{e}");

    // The binary: `check-config` and `serve` both refuse it, naming the key and the path.
    let dir = tempfile::tempdir().unwrap();
    let (_raw, _) = write_config("http://127.0.0.1:9", dir.path(), |raw| {
        raw.server.tls = Some(TlsConfig {
            key_file: missing.clone(),
            ..files(certs.path(), 10_000)
        });
    });
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let checked = std::process::Command::new(exe)
        .current_dir(dir.path())
        .env_clear()
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("GEMINI_API_KEY", GEMINI_KEY)
        .env("JWT_SECRET", JWT_SECRET)
        .args(["check-config", "--config", "gateway.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`server.tls.key_file`"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    let mut child = spawn_gateway(dir.path(), &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("`server.tls.key_file`"), "{log}");
    assert!(log.contains(&missing.display().to_string()), "{log}");
}

#[tokio::test]
async fn sighup_rereads_the_certificate_refusing_a_broken_one_with_a_log_line() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(200, fixture("openai/chat.json")));
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    std::fs::create_dir(&certs).unwrap();
    let (first_ca, second_ca) = (ca("first CA"), ca("second CA"));
    let first = leaf(&first_ca, "first");
    install(&certs, &first);
    // No file watch (`write_config` turns it off): only SIGHUP re-reads the files.
    let (raw, port) = write_config(&mock.url(), dir.path(), |raw| {
        raw.server.tls = Some(files(&certs, 10_000));
    });
    assert!(!raw.server.watch_config);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = connector(&[&first_ca, &second_ca], &[H2, H1]);
    let mut child = spawn_gateway(dir.path(), &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        if let Ok(s) = connect(addr, &client).await {
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(presented(&stream), first.der);
    let jwt = mint_jwt(&raw, "hup");
    let mut open = Conn::over(stream).await;
    chat_ok(&mut open, &jwt, Version::HTTP_2).await;
    let hup = || {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let log = || std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();

    // A certificate whose key was not replaced: refused on SIGHUP, with a log line.
    let second = leaf(&second_ca, "second");
    replace(&certs.join("cert.pem"), &second.chain_pem);
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("TLS certificate reload refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refusal = log()
        .lines()
        .find(|l| l.contains("TLS certificate reload refused"))
        .unwrap()
        .to_string();
    assert!(refusal.contains("server.tls.key_file"), "{refusal}");
    assert!(refusal.contains("SIGHUP"), "{refusal}");
    let stream = connect(addr, &client).await.unwrap();
    assert_eq!(presented(&stream), first.der, "the old certificate serves");

    // The key too: still the old certificate until the next SIGHUP (nothing watches the files).
    replace(&certs.join("key.pem"), &second.key_pem);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(presented(&connect(addr, &client).await.unwrap()), first.der);
    hup();
    until_presented(addr, &client, &second, Duration::from_secs(10)).await;
    let mut fresh = Conn::over(connect(addr, &client).await.unwrap()).await;
    chat_ok(&mut fresh, &jwt, Version::HTTP_2).await;
    chat_ok(&mut open, &jwt, Version::HTTP_2).await;
    drop((open, fresh));

    assert!(stop(&mut child), "a graceful stop:\n{}", log());
    let log = log();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    for key in [&first.key_pem, &second.key_pem] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "key material in the log:\n{log}");
        }
    }
    assert_eq!(read_rows(&raw.store.path).len(), 3);
}
