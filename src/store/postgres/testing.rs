//! A database of its own per test, on the machine's PostgreSQL: created by [`TestDb::create`],
//! dropped (connections and all) when the value is dropped. The server is
//! `TOLLGATE_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`, the
//! trust-auth server the test machines run).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Settings;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The server tests make their databases on.
pub fn server_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database, dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    /// The server's administrator URL.
    server: String,
}

impl TestDb {
    /// Create a database named after this process and a counter. Panics when the server
    /// cannot be reached: a test that needs PostgreSQL must not pass without it.
    pub async fn create() -> TestDb {
        TestDb::create_on(&server_url()).await
    }

    /// [`TestDb::create`] on the server at `server` (an administrator's URL).
    pub async fn create_on(server: &str) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = jiff::Timestamp::now().as_nanosecond() % 1_000_000_000;
        let name = format!("tollgate_test_{}_{n}_{nanos}", std::process::id());
        let admin = admin_client(server).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut config: tokio_postgres::Config = server
            .parse()
            .unwrap_or_else(|e| panic!("the test server's URL: {e}"));
        config.dbname(&name);
        let url = url_of(&config, &name);
        TestDb {
            name,
            url,
            server: server.to_string(),
        }
    }

    /// The database's URL (no password: the test server trusts local connections; no TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `sql` on the server as its administrator (outside this database): to cut this
    /// database off and let it back in, say.
    pub async fn on_server(&self, sql: &str) {
        admin_client(&self.server)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Settings for this database: a pool of 4, statements cut at 30 s.
    pub fn settings(&self) -> Settings {
        Settings::new(&self.url, 4, std::time::Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let server = std::mem::take(&mut self.server);
        // On a thread of its own: the test's runtime may be the one dropping this.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            rt.block_on(async {
                let admin = admin_client(&server).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("the test PostgreSQL at {url} is not reachable: {e}"));
    tokio::spawn(connection);
    client
}

fn url_of(config: &tokio_postgres::Config, dbname: &str) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    // Loopback to the machine's own server: no TLS (its certificate is a self-signed one).
    format!("postgres://{user}@{host}:{port}/{dbname}?sslmode=disable")
}
