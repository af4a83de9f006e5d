//! The `tollgate` command line: `serve` runs the gateway, `check-config` validates and prints the
//! effective configuration with secrets masked, `token` mints a trial JWT, `admin` manages the
//! admin accounts (argon2id hashes in the store; passwords never echoed or logged), `demo` runs
//! the gateway against a built-in fake upstream with made-up traffic ([`tollgate::demo`]).
//!
//! This file only parses arguments, loads the configuration and picks exit codes: 0 on success
//! (and after a graceful stop), 2 for an invalid configuration or usage, 1 when the gateway
//! fails while running. It never prints a secret; `token` prints the JWT it was asked for.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tollgate::config::{CONFIG_PATH_ENV, Config, ConfigError, JwtAlgorithm, RawConfig};

/// Exit code for an invalid configuration (and for usage errors, like clap's).
const EXIT_INVALID: u8 = 2;
/// Exit code for a failure while running.
const EXIT_FAILED: u8 = 1;
/// Longest `--ttl` accepted: a trial token, not a permanent credential.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A metering, budget-enforcing reverse proxy in front of the OpenAI and Gemini APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and the admin side until SIGTERM or SIGINT.
    Serve(ConfigArg),
    /// Validate the configuration and print it, secrets masked.
    CheckConfig(ConfigArg),
    /// Apply the store's schema migrations (PostgreSQL: once, under a lock, whatever else is
    /// starting) and exit.
    Migrate(ConfigArg),
    /// Bring an existing SQLite history (calls, users and their controls, admin accounts, the
    /// audit trail) into the PostgreSQL store the configuration names. Safe to run again: it
    /// continues where it stopped and adds nothing twice.
    Import(ImportArgs),
    /// Copy the SQLite database, consistently, while the gateway serves (`VACUUM INTO`), and
    /// check the copy. Restore: stop the gateway, put the copy at `store.path`, start it.
    Backup(BackupArgs),
    /// Delete the calls recorded before a day (midnight in `limits.timezone`), in small
    /// batches, while the gateway serves; the rollups — the dashboard's history and every total
    /// — stay. What `store.retain_days` does hourly.
    Prune(PruneArgs),
    /// Mint a JWT with the configured HS256 secret, for trials; prints it on stdout.
    Token(TokenArgs),
    /// See Tollgate work without provider keys: the gateway and its dashboard in front of a
    /// built-in fake OpenAI and Gemini, a throwaway database, an admin account and a little
    /// traffic from made-up users; prints the dashboard's address and sign-in, then serves
    /// until Ctrl-C and deletes everything.
    Demo(DemoArgs),
    /// Manage the admin accounts that sign in to the dashboard and admin API.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an account. The password is read from stdin when it is not a terminal (one
    /// line), else prompted for twice.
    Add(AdminName),
    /// Give an account a new password (read like `add`) and end its sessions.
    SetPassword(AdminName),
    /// List the accounts.
    List(ConfigArg),
    /// Remove an account and end its sessions.
    Remove(AdminName),
}

#[derive(Args)]
struct DemoArgs {
    /// The proxy listener [default: server.listen of the configuration, on loopback]
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The admin listener and dashboard [default: admin.listen, on loopback]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Keep the demo's database (in its temp dir) when it stops.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct PruneArgs {
    /// The first day to keep, `YYYY-MM-DD`: every call before its midnight goes.
    #[arg(long)]
    before: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct BackupArgs {
    /// Where to write the copy (a new file).
    file: std::path::PathBuf,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct AdminName {
    /// The account name (letters, digits, . _ - @).
    name: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct ImportArgs {
    /// The SQLite database to bring over (`store.path` of the gateway that wrote it)
    #[arg(long = "from-sqlite", value_name = "FILE")]
    from_sqlite: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file [default: $TOLLGATE_CONFIG, else gateway.toml]
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| {
                std::env::var_os(CONFIG_PATH_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("gateway.toml"))
    }
}

#[derive(Args)]
struct TokenArgs {
    /// The user id, written to the configured user claim (`auth.user_claim`).
    #[arg(long, value_name = "ID")]
    sub: String,
    /// Mark the token as an admin's (`auth.admin_claim` = `auth.admin_value`).
    #[arg(long)]
    admin: bool,
    /// Lifetime: a number with s, m, h or d (30s, 15m, 1h, 7d); a bare number is seconds.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The `email` claim.
    #[arg(long)]
    email: Option<String>,
    /// The `name` claim.
    #[arg(long)]
    name: Option<String>,
    /// The user's plan, written to the configured plan claim (`auth.plan_claim`).
    #[arg(long, value_name = "NAME")]
    plan: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Migrate(args) => migrate(&args),
        Command::Import(args) => import(&args),
        Command::Backup(args) => backup(&args),
        Command::Prune(args) => prune(&args),
        Command::Token(args) => token(&args),
        Command::Demo(args) => demo(&args),
        Command::Admin(command) => admin(&command),
    }
}

fn serve(args: &ConfigArg) -> ExitCode {
    let config = match Config::load(&args.path()) {
        Ok(config) => config,
        Err(e) => return invalid(&e),
    };
    // Held to the end of `serve`: dropping it writes the lines still queued.
    let _log = tollgate::telemetry::init(&config.raw.log);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // 0: one per CPU this process may run on (its affinity and cgroup quota included).
    let threads = match config.raw.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(0, usize::from),
        n => n,
    };
    let mut builder = match threads {
        // One core: a current-thread runtime skips the work-stealing machinery.
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    tracing::info!(
        serving_threads = threads,
        runtime = if threads == 1 {
            "current_thread"
        } else {
            "multi_thread"
        },
        "async runtime"
    );
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(tollgate::serve::run(config));
    // `run` has flushed the store; don't let a stuck blocking task hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tollgate stopped on an error");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `tollgate demo`: the configuration file is read (with its `TOLLGATE_*` overrides) for what
/// the demo keeps of it; the secrets it names are not needed.
fn demo(args: &DemoArgs) -> ExitCode {
    let raw = match RawConfig::load(&args.config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    let options = tollgate::demo::Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        keep: args.keep,
    };
    let failed = |e: tollgate::demo::DemoError| {
        eprintln!("error: {e}");
        ExitCode::from(if e.is_usage() {
            EXIT_INVALID
        } else {
            EXIT_FAILED
        })
    };
    let prepared = match tollgate::demo::prepare(raw, &options) {
        Ok(prepared) => prepared,
        Err(e) => return failed(e),
    };
    // Held to the end: dropping it writes the lines still queued.
    let _log = tollgate::telemetry::init(&prepared.config.raw.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(tollgate::demo::run(prepared, &mut std::io::stdout()));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

fn check_config(args: &ConfigArg) -> ExitCode {
    let path = args.path();
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => return invalid(&e),
    };
    // The listeners' certificates, read as `serve` reads them at start.
    let mut prints = Vec::new();
    for (section, files) in [
        ("server.tls", &config.raw.server.tls),
        ("admin.tls", &config.raw.admin.tls),
    ] {
        if let Some(files) = files {
            match tollgate::tls::ServerTls::load(section, files) {
                Ok(tls) => prints.push(format!(
                    "# {section}: certificate sha256 {}",
                    tls.fingerprint()
                )),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            }
        }
    }
    println!(
        "# {} is valid. Effective configuration (file, TOLLGATE_* overrides, defaults):",
        path.display()
    );
    print!("{}", config.masked());
    for line in prints {
        println!("{line}");
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    if let Some(jwks) = config.jwks() {
        match current_thread().and_then(|rt| rt.block_on(jwks.check()).map_err(|e| e.to_string())) {
            Ok(keys) => println!(
                "# auth.jwks_url: {} usable keys: {}",
                keys.len(),
                keys.join(", ")
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    if config.raw.store.backend == tollgate::config::StoreBackend::Postgres {
        let env = |name: &str| std::env::var(name).ok();
        match current_thread().and_then(|rt| {
            rt.block_on(tollgate::store::check(&config.raw.store, &env))
                .map_err(|e| e.to_string())
        }) {
            Ok(found) => println!("# store: {found}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    ExitCode::SUCCESS
}

/// `tollgate migrate`: reads only `[store]` and `limits.timezone`.
/// `tollgate prune --before DAY`.
fn prune(args: &PruneArgs) -> ExitCode {
    let raw = match RawConfig::load(&args.config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    let tz = jiff::tz::TimeZone::get(&raw.limits.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let before = match args
        .before
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| tollgate::calendar::midnight(d, &tz))
    {
        Some(midnight) => midnight,
        None => {
            eprintln!(
                "error: --before {:?} is not a day (YYYY-MM-DD)",
                args.before
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let done = current_thread().and_then(|rt| {
        rt.block_on(async {
            let store = tollgate::store::open(
                &raw.store,
                tz.clone(),
                None,
                &env,
                "prune",
                tollgate::store::Role::Tool,
            )
            .await
            .map_err(|e| e.to_string())?;
            let deleted = store.prune(before, 1_000).await.map_err(|e| e.to_string());
            store.close().await;
            deleted
        })
    });
    match done {
        Ok(n) => {
            println!(
                "deleted {n} calls recorded before {} ({}) from {}; the rollups stay",
                args.before,
                raw.limits.timezone,
                tollgate::store::describe(&raw.store, &env)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `tollgate backup FILE`: the SQLite store only (PostgreSQL has its own tools).
fn backup(args: &BackupArgs) -> ExitCode {
    let raw = match RawConfig::load(&args.config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    if raw.store.backend != tollgate::config::StoreBackend::Sqlite {
        eprintln!(
            "error: store.backend is \"postgres\": back up the database with PostgreSQL's own \
             tools (pg_dump, or the server's base backups); `tollgate backup` copies the SQLite file"
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let started = std::time::Instant::now();
    match tollgate::store::sqlite::backup::backup(&raw.store.path, &args.file) {
        Ok(b) => {
            println!(
                "backed up {} to {}: {} calls, {} users, {:.1} MB in {:.1} s; integrity check ok",
                raw.store.path.display(),
                args.file.display(),
                b.calls,
                b.users,
                b.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot back up {}: {e}", raw.store.path.display());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn migrate(args: &ConfigArg) -> ExitCode {
    let raw = match RawConfig::load(&args.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    let tz = jiff::tz::TimeZone::get(&raw.limits.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let env = |name: &str| std::env::var(name).ok();
    let done = current_thread().and_then(|rt| {
        rt.block_on(tollgate::store::migrate(&raw.store, &tz, &env))
            .map_err(|e| {
                format!(
                    "cannot migrate the store at {}: {e}",
                    tollgate::store::describe(&raw.store, &env)
                )
            })
    });
    match done {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `tollgate import --from-sqlite FILE`: reads `[store]` and `limits.timezone`; progress on
/// stderr (a bar on a terminal, a line every tenth otherwise), the summary on stdout.
fn import(args: &ImportArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    let raw = match RawConfig::load(&args.config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    let tz = jiff::tz::TimeZone::get(&raw.limits.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let env = |name: &str| std::env::var(name).ok();
    let terminal = std::io::stderr().is_terminal();
    let mut last_tenth = None;
    let mut progress = |done: u64, total: u64| {
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if terminal {
            let filled =
                usize::try_from((done * 30).checked_div(total).unwrap_or(30)).unwrap_or(30);
            eprint!(
                "\r[{}{}] {done} / {total} calls",
                "#".repeat(filled),
                "-".repeat(30 - filled.min(30))
            );
        } else if last_tenth != Some(tenth) {
            last_tenth = Some(tenth);
            eprintln!("imported {done} / {total} calls");
        }
    };
    let done = current_thread().and_then(|rt| {
        rt.block_on(tollgate::store::import::from_sqlite(
            &raw.store,
            tz,
            &env,
            &args.from_sqlite,
            &mut progress,
        ))
        .map_err(|e| e.to_string())
    });
    if terminal {
        eprintln!();
    }
    match done {
        Ok(d) => {
            println!(
                "imported {} from {}: {} calls ({} already there), {} users, {} new admin accounts, {} audit rows",
                tollgate::store::describe(&raw.store, &env),
                args.from_sqlite.display(),
                d.calls,
                d.calls_already,
                d.users,
                d.accounts,
                d.audit_rows
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Mint a token. Reads only `[auth]` and its secret: provider keys need not be set.
fn token(args: &TokenArgs) -> ExitCode {
    let raw = match RawConfig::load(&args.config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    if let Some(plan) = &args.plan
        && !raw.plans.contains_key(plan)
    {
        let instead = raw
            .limits
            .default_plan
            .as_deref()
            .map_or("[limits] and every model".to_string(), |d| {
                format!("the default plan {d:?}")
            });
        eprintln!(
            "warning: gateway.toml has no [plans.{plan}]: a call with this token gets {instead}"
        );
    }
    let auth = &raw.auth;
    if !auth.algorithms.contains(&JwtAlgorithm::HS256) {
        return invalid(&ConfigError::Invalid {
            key: "auth.algorithms".into(),
            message: "does not include HS256, so the gateway would refuse a token minted with the shared secret".into(),
        });
    }
    let secret = match auth.hs256_secret(&|name| std::env::var(name).ok()) {
        Ok(secret) => secret,
        Err(e) => return invalid(&e),
    };
    match tollgate::auth::mint_claims(
        &secret,
        auth,
        &tollgate::auth::MintClaims {
            sub: &args.sub,
            admin: args.admin,
            ttl: args.ttl,
            email: args.email.as_deref(),
            name: args.name.as_deref(),
            plan: args.plan.as_deref(),
        },
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `tollgate admin …`: reads only `[store]` from the configuration; every change is audited
/// with the operating-system user as the actor (`cli:$USER`), in the change's transaction.
fn admin(command: &AdminCommand) -> ExitCode {
    let config = match command {
        AdminCommand::Add(a) | AdminCommand::SetPassword(a) | AdminCommand::Remove(a) => &a.config,
        AdminCommand::List(c) => c,
    };
    let raw = match RawConfig::load(&config.path()) {
        Ok(raw) => raw,
        Err(e) => return invalid(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // No rows are recorded here, but opening an older file repairs its rollups, whose days are
    // in `limits.timezone` (`check-config` reports a bad zone; here it falls back to UTC).
    let tz = jiff::tz::TimeZone::get(&raw.limits.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let env = |name: &str| std::env::var(name).ok();
    let store = match runtime.block_on(tollgate::store::open(
        &raw.store,
        tz,
        None,
        &env,
        "cli",
        tollgate::store::Role::Tool,
    )) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "error: cannot open the store at {}: {e}",
                tollgate::store::describe(&raw.store, &env)
            );
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        let result = admin_command(command, &*store).await;
        store.close().await;
        result
    });
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn admin_command(
    command: &AdminCommand,
    store: &dyn tollgate::store::Store,
) -> Result<String, String> {
    use tollgate::store::{Committed, Op, Work};
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let commit = |op: Op| async {
        match store
            .commit(Work {
                actor: actor.clone(),
                at_ms: now,
                op,
            })
            .await
        {
            Ok(Committed::Account { changed }) => Ok(changed),
            Ok(other) => Err(format!("unexpected answer from the store: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    match command {
        AdminCommand::List(_) => {
            let list = store.accounts().await.map_err(|e| e.to_string())?;
            if list.is_empty() {
                return Ok("no admin accounts; add one with `tollgate admin add NAME`".into());
            }
            let fmt_ms = |ms: i64| {
                jiff::Timestamp::from_millisecond(ms)
                    .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default()
            };
            let mut out = format!("{:<32} {:<22} {}\n", "NAME", "CREATED", "LAST SIGN-IN");
            for a in list {
                out.push_str(&format!(
                    "{:<32} {:<22} {}\n",
                    a.name,
                    fmt_ms(a.created_at),
                    a.last_login_at.map_or_else(|| "never".into(), fmt_ms)
                ));
            }
            Ok(out.trim_end().to_string())
        }
        AdminCommand::Add(a) | AdminCommand::SetPassword(a) => {
            tollgate::admin::session::valid_account_name(&a.name)?;
            let adding = matches!(command, AdminCommand::Add(_));
            if adding
                && store
                    .password_hash(&a.name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
            {
                return Err(format!(
                    "an account named {:?} exists (use `admin set-password`)",
                    a.name
                ));
            }
            let password = read_new_password()?;
            let password_hash = tollgate::admin::hash_password(&password)?;
            let name = a.name.clone();
            let op = if adding {
                Op::AddAccount {
                    name,
                    password_hash,
                }
            } else {
                Op::SetPassword {
                    name,
                    password_hash,
                }
            };
            if !commit(op).await? {
                return Err(if adding {
                    format!(
                        "an account named {:?} exists (use `admin set-password`)",
                        a.name
                    )
                } else {
                    format!("no account named {:?}", a.name)
                });
            }
            Ok(if adding {
                format!("admin account {:?} created", a.name)
            } else {
                format!("password of {:?} changed; its sessions ended", a.name)
            })
        }
        AdminCommand::Remove(a) => {
            if !commit(Op::RemoveAccount {
                name: a.name.clone(),
            })
            .await?
            {
                return Err(format!("no account named {:?}", a.name));
            }
            Ok(format!(
                "admin account {:?} removed; its sessions ended",
                a.name
            ))
        }
    }
}

/// A new password: one line from stdin when it is not a terminal, else prompted twice.
fn read_new_password() -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _};
    let min = tollgate::admin::session::MIN_PASSWORD_CHARS;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < min {
        return Err(format!("the password must have at least {min} characters"));
    }
    Ok(password)
}

fn invalid(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_INVALID)
}

/// `30s`, `15m`, `1h`, `7d`, or a bare number of seconds; at least 1s, at most 366d.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{s}`: expected a number with s, m, h or d, e.g. 30s, 15m, 1h, 7d")
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; use s, m, h or d")),
    };
    let ttl = Duration::from_secs(n.saturating_mul(scale));
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(format!("`{s}`: must be between 1s and 366d"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_seconds_minutes_hours_and_days() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn ttl_refuses_nonsense() {
        for bad in [
            "",
            "h",
            "0s",
            "1w",
            "1.5h",
            "-1h",
            "1h30m",
            "367d",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
