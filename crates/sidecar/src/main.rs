//! `statusphere-sidecar`: the project's local Jetstream (see docs/sidecar.md and `--help`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use sidecar::cli::{self, Command, ServeArgs, Source};
use sidecar::server::{self, ServerConfig};
use sidecar::source::{firehose, generate, replay};
use sidecar::window::Hub;
use sidecar::{Error, Result};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .init();
    let command = match cli::parse(std::env::args().skip(1).collect()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Version => println!("statusphere-sidecar {}", env!("CARGO_PKG_VERSION")),
        Command::Help => print!("{}", cli::USAGE),
        Command::Generate { config, out } => {
            let lines = generate::generate(&config);
            let mut text = lines.join("\n");
            text.push('\n');
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?,
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| Error::io("writing to stdout", e))?,
            }
        }
        Command::Record(config) => {
            let seen = sidecar::record::record(&config).await?;
            eprintln!("recorded {} frames ({} skipped)", seen.frames, seen.skipped);
        }
        Command::Load(config) => {
            let report = sidecar::load::run(&config).await?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        }
        Command::Serve(args) => serve(*args).await?,
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let hub = Hub::new(args.window, args.time);
    // Read a replay before binding, so that a missing file fails fast and clearly.
    let replay_lines = match &args.source {
        Source::Replay(path) => Some(replay::read_file(path)?),
        _ => None,
    };
    let mut config = ServerConfig::new(args.listen);
    config.write_timeout = args.write_timeout;
    config.ping_interval = args.ping_interval;
    config.faults = args.faults;
    // Install the signal handlers before announcing the address: a supervisor may send SIGTERM
    // the moment it reads that line, and an uninstalled handler would let the signal kill us.
    let shutdown = shutdown_signal()?;
    let server = server::start(config, hub.clone()).await?;
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    match args.source {
        Source::Empty => hub.counters.source_done.store(true, Ordering::Relaxed),
        Source::Replay(_) => {
            tokio::spawn(replay::run(
                hub.clone(),
                replay_lines.unwrap_or_default(),
                args.pace,
            ));
        }
        Source::Generate(config) => {
            let lines = generate::generate(&config);
            tokio::spawn(replay::run(hub.clone(), lines, args.pace));
        }
        Source::Firehose(config) => {
            tokio::spawn(firehose::run(hub.clone(), config));
        }
    }
    shutdown.await;
    drop(server);
    Ok(())
}

/// Registers for SIGTERM and SIGINT at once (not on first poll), and returns a future that ends
/// when either arrives.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let installing = |source| Error::io("installing the signal handlers", source);
    let mut terminate = signal(SignalKind::terminate()).map_err(installing)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(installing)?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
