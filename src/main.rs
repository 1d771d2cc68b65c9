use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use grayscope::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grayscope: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(cmd) => {
            let print = cmd.args.print_config;
            let (cfg, demo) = cmd.resolve()?;
            if print {
                print!("{}", toml::to_string(&cfg)?);
                return Ok(ExitCode::SUCCESS);
            }
            init_logging(&cfg.log);
            let rt = runtime()?;
            let stopped = rt.block_on(grayscope::app::serve(cfg, demo))?;
            // A store write cut short at the deadline may still sit in SQLite's busy wait on a
            // blocking thread; the process does not wait for it.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(match stopped {
                grayscope::app::Stopped::Clean => ExitCode::SUCCESS,
                // Logged with the counts by serve; distinct from 2, a failure to start.
                grayscope::app::Stopped::Lost(_) => ExitCode::FAILURE,
            })
        }
        Command::Check(args) => grayscope::check::run(args).map(ExitCode::from),
        Command::Loadgen(args) => grayscope::loadgen::run(args).map(|()| ExitCode::SUCCESS),
        Command::Probe(args) => {
            init_logging("warn,opentelemetry_sdk=off");
            Ok(ExitCode::from(
                runtime()?.block_on(grayscope::probe::main(args)),
            ))
        }
        Command::Demo(args) => {
            // The demo reports export failures itself, once, instead of once per batch.
            init_logging("info,opentelemetry_sdk=off");
            let progress = runtime()?.block_on(grayscope::demo::run(args))?;
            Ok(if progress.failed > 0 || progress.spans_failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("grayscope: invalid log filter {filter:?} ({e}); using 'info'");
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colour only for a person at a terminal, not in a journal or a log file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
