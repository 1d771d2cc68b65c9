//! The command line: `grayscope serve | check | loadgen | demo | probe`, each command's arguments owned by
//! the module that runs it. `serve --demo` is resolved here into a configuration and a demo to run.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::ServeDemo;
use crate::config::{ConfigError, Dur, ServeArgs, ServeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "grayscope",
    version,
    about = "Verifies gray-release stage propagation across every hop of your traces"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the collector: OTLP in, verdicts out (JSON API, metrics).
    Serve(Box<ServeCommand>),
    /// Verify OTLP/JSON files offline; exits 1 when there are findings (for CI).
    Check(crate::check::CheckArgs),
    /// Send pre-built OTLP traffic with seeded faults to a collector and measure throughput.
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Run a small instrumented service mesh that sends real traffic, with chosen propagation
    /// faults, to any OTLP endpoint.
    Demo(crate::demo::DemoArgs),
    /// Before go-live: send requests tagged with each stage through the real call chain and
    /// judge exactly those traces; exits 0 all good, 1 a break or unmet expectation, 2 no verdict.
    Probe(crate::probe::ProbeArgs),
}

/// `grayscope serve`: the collector's options, and the demo mesh it can run alongside.
#[derive(Args, Debug)]
pub struct ServeCommand {
    #[command(flatten)]
    pub args: ServeArgs,
    #[command(flatten)]
    pub demo: ServeDemoArgs,
}

/// Flags of `serve --demo`; not config-file keys, since they describe a run, not a deployment.
#[derive(Args, Debug, Default)]
pub struct ServeDemoArgs {
    /// Also run the demo mesh, exporting to this collector (trace-idle defaults to 2s, so that
    /// findings show within seconds)
    #[arg(long)]
    pub demo: bool,
    /// Fault for the demo mesh, KIND@CALLER->CALLEE, repeatable; `none` for a clean mesh
    /// (default: missing@orders->payments)
    #[arg(long = "fault", value_name = "SPEC", requires = "demo")]
    pub faults: Vec<String>,
    /// Requests per second the demo sends
    #[arg(long, value_name = "N", requires = "demo", default_value_t = 20.0)]
    pub demo_rate: f64,
    /// Where the demo's gateway listens, for `grayscope probe` and curl [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR", requires = "demo")]
    pub demo_gateway: Option<std::net::SocketAddr>,
    /// How the demo's services carry the stage: `baggage` (copied onto every span) or `header`
    /// (forwarded by hand, captured on SERVER spans only)
    #[arg(long, value_enum, requires = "demo", default_value = "baggage")]
    pub demo_propagation: crate::demo::Propagation,
}

/// `serve --demo`'s gateway port: the OTLP ports and the API's, plus one.
const DEMO_GATEWAY_PORT: u16 = 8081;

/// The fault `serve --demo` shows when none is given: a newcomer sees one red hop.
const DEFAULT_DEMO_FAULT: &str = "missing@orders->payments";

/// `serve --demo`'s trace-idle unless flags, environment or file say otherwise: findings show
/// within seconds instead of after the production default.
const DEMO_TRACE_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Fault(#[from] crate::demo::DemoError),
}

impl ServeCommand {
    /// The configuration, with `--demo`'s defaults under the config file, and the demo to run.
    pub fn resolve(self) -> Result<(ServeConfig, Option<ServeDemo>), CliError> {
        let ServeCommand { args, demo } = self;
        if !demo.demo {
            return Ok((args.resolve()?, None));
        }
        let defaults = ServeArgs {
            trace_idle: Some(Dur(DEMO_TRACE_IDLE)),
            ..ServeArgs::default()
        };
        let cfg = args.resolve_over(defaults)?;
        let faults = if demo.faults.is_empty() {
            vec![DEFAULT_DEMO_FAULT.to_string()]
        } else {
            demo.faults
        };
        let demo = ServeDemo {
            faults: crate::demo::parse_faults(&faults)?,
            rate: demo.demo_rate,
            gateway: demo
                .demo_gateway
                .unwrap_or(([127, 0, 0, 1], DEMO_GATEWAY_PORT).into()),
            propagation: demo.demo_propagation,
        };
        Ok((cfg, Some(demo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeCommand {
        let mut full = vec!["grayscope", "serve"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Serve(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn demo_defaults_sit_under_the_config_file_and_over_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "trace-idle = \"5s\"\n").unwrap();
        let file = file.to_str().unwrap();
        let idle = |args: &[&str]| serve(args).resolve().unwrap().0.trace_idle.0;
        assert_eq!(idle(&[]), Duration::from_secs(10), "built in");
        assert_eq!(idle(&["--demo"]), DEMO_TRACE_IDLE, "demo default");
        assert_eq!(
            idle(&["--demo", "--config", file]),
            Duration::from_secs(5),
            "the file wins over the demo's default"
        );
        assert_eq!(
            idle(&["--demo", "--config", file, "--trace-idle", "1s"]),
            Duration::from_secs(1),
            "and the flag over the file"
        );
        let (_, demo) = serve(&["--demo"]).resolve().unwrap();
        assert_eq!(demo.unwrap().faults.len(), 1, "{DEFAULT_DEMO_FAULT}");
    }
}
