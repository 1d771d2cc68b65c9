use std::process::ExitCode;

use clap::Parser;
use grayscope::config::{Cli, Command};

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
        Command::Serve(args) => {
            let print = args.print_config;
            let cfg = (*args).resolve()?;
            if print {
                print!("{}", toml::to_string(&cfg)?);
                return Ok(ExitCode::SUCCESS);
            }
            init_logging(&cfg.log);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(grayscope::app::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => grayscope::check::run(args).map(ExitCode::from),
        Command::Loadgen(args) => grayscope::loadgen::run(args).map(|()| ExitCode::SUCCESS),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("grayscope: invalid log filter {filter:?} ({e}); using 'info'");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
