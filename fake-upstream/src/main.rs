//! `fake-upstream`: run the fake OpenAI + Gemini server. See README.md.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpSocket;

use tollgate_fake_upstream::{Defaults, Fake, Settings, serve};

/// A fast, deterministic fake of the OpenAI and Gemini APIs (loopback use only).
#[derive(Parser, Debug)]
#[command(name = "fake-upstream", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port. Prints `listening on ADDR` once bound.
    #[arg(long, env = "FAKE_ADDR", default_value = "127.0.0.1:18000")]
    listen: SocketAddr,
    /// Content chunks (= output tokens) per answer, unless the request says otherwise.
    #[arg(long, env = "FAKE_CHUNKS", default_value_t = 20)]
    chunks: u64,
    /// Pause between stream chunks, in milliseconds.
    #[arg(long, env = "FAKE_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Pause before the response head, in milliseconds.
    #[arg(long, env = "FAKE_HEAD_DELAY_MS", default_value_t = 0)]
    head_delay_ms: u64,
    /// Runtime threads: 0 = one per CPU, 1 = a single-threaded runtime.
    #[arg(long, env = "FAKE_THREADS", default_value_t = 0)]
    threads: usize,
    /// Require `Authorization: Bearer <this>` on OpenAI requests.
    #[arg(long, env = "FAKE_EXPECT_OPENAI_KEY", hide_env_values = true)]
    expect_openai_key: Option<String>,
    /// Require `x-goog-api-key: <this>` on Gemini requests.
    #[arg(long, env = "FAKE_EXPECT_GEMINI_KEY", hide_env_values = true)]
    expect_gemini_key: Option<String>,
    /// Send non-stream answers with chunked transfer encoding instead of `content-length`.
    #[arg(long, env = "FAKE_CHUNKED_JSON")]
    chunked_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings {
        defaults: Defaults {
            chunks: cli
                .chunks
                .clamp(1, tollgate_fake_upstream::knobs::MAX_CHUNKS),
            chunk_delay_ms: cli.chunk_delay_ms,
            head_delay_ms: cli.head_delay_ms,
        },
        expect_openai_key: cli.expect_openai_key,
        expect_gemini_key: cli.expect_gemini_key,
        chunked_json: cli.chunked_json,
    };
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if cli.threads > 1 {
            b.worker_threads(cli.threads);
        }
        b.enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-upstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match bind(cli.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fake-upstream: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("fake-upstream: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "fake-upstream: chunks={} chunk_delay_ms={} head_delay_ms={} openai_key={} gemini_key={}",
            settings.defaults.chunks,
            settings.defaults.chunk_delay_ms,
            settings.defaults.head_delay_ms,
            if settings.expect_openai_key.is_some() { "checked" } else { "any" },
            if settings.expect_gemini_key.is_some() { "checked" } else { "any" },
        );
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on {addr}");
        let _ = stdout.flush();
        tokio::select! {
            () = serve(listener, Fake::new(settings)) => {}
            () = shutdown_signal() => {}
        }
        ExitCode::SUCCESS
    })
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
