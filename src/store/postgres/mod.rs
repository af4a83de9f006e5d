//! The PostgreSQL store (`store.backend = "postgres"`): the store several gateways share.
//!
//! It implements the same [`crate::store::Store`] as the SQLite store, on a pool of
//! connections (deadpool-postgres over tokio-postgres, TLS by rustls when the URL asks for it).
//! What differs is only where things live: the tables are `migrations/*.sql`, applied at start
//! under an advisory lock ([`schema`]); `token_usage` is partitioned by month. The call journal
//! stays a local file beside `store.path` ([`crate::store::journal`]), so the crash guarantee is
//! the SQLite store's.
//!
//! The connection string comes from the environment variable `store.database_url_env` names,
//! never from the file; [`Target`] is what may be shown of it (host, port, database, user —
//! never the password).

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::store::StoreError;

pub use store::PgStore;

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod controls;
pub mod import;
pub mod lease;
pub mod reads;
pub mod rows;
pub mod schema;
mod store;
#[doc(hidden)]
pub mod testing;
pub mod work;
pub mod writer;

/// How to reach the database: the parsed URL and the pool's settings.
#[derive(Clone)]
pub struct Settings {
    config: tokio_postgres::Config,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
}

impl Settings {
    /// Parse `url` (a `postgres://` URL or a `key=value` string). The error never repeats the
    /// URL, which may hold a password.
    pub fn new(
        url: &str,
        pool_size: usize,
        statement_timeout: Duration,
    ) -> Result<Settings, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("the database URL cannot be read: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        config.connect_timeout(Duration::from_secs(10));
        let timeout_ms = statement_timeout.as_millis().max(1);
        config.options(format!("-c statement_timeout={timeout_ms}"));
        Ok(Settings {
            config,
            pool_size: pool_size.max(1),
            statement_timeout,
        })
    }

    /// What may be shown of the URL: user, host, port and database.
    pub fn target(&self) -> Target {
        Target::of(&self.config)
    }

    /// A pool of connections (none is opened until one is asked for).
    pub fn pool(&self) -> Result<Pool, StoreError> {
        let manager = Manager::from_config(
            self.config.clone(),
            tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the database pool: {e}")))
    }

    /// One connection outside the pool (migrations, `LISTEN`), its driver task spawned.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(tls()?)
            .await
            .map_err(|e| self.target().error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended");
            }
        });
        Ok(client)
    }
}

impl Settings {
    /// A connection outside the pool that `LISTEN`s on `channel`: each notice's payload
    /// arrives on the receiver (bounded: a reader that falls behind holds the connection back),
    /// which ends when the connection does. Keep the client: dropping it ends the connection.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<String>), StoreError> {
        let (client, mut connection) = self
            .config
            .connect(tls()?)
            .await
            .map_err(|e| self.target().error(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1_024);
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_string()).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %describe(&e), "database listener ended");
                        break;
                    }
                    None => break,
                }
            }
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok((client, rx))
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target())
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// TLS for the database connections: rustls with the public roots, used when the URL's
/// `sslmode` asks for it (`require`); `prefer` (the default) tries it and falls back.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Backend(format!("TLS for the database: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The database as logs and errors may name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
}

impl Target {
    fn of(config: &tokio_postgres::Config) -> Target {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        Target {
            user: config.get_user().unwrap_or_default().to_string(),
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            dbname: config.get_dbname().unwrap_or_default().to_string(),
        }
    }

    /// A connection error naming the database (never its password).
    pub fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Backend(format!(
            "cannot reach the database at {self}: {}",
            describe(e)
        ))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

/// A driver error with its cause (tokio-postgres's own `Display` leaves the cause out).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Backend(format!("postgres: {}", describe(&e)))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Busy(format!("database pool: {other}")),
        }
    }
}
