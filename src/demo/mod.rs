//! `grayscope demo`: a small shop of real services on loopback, instrumented with the OpenTelemetry
//! SDK and [`grayscope_propagation`], sending real traffic with chosen propagation bugs to any OTLP
//! endpoint.
//!
//! ```text
//! client ──> gateway (HTTP, entry) ──> users (HTTP) ──> orders (gRPC: stable + canary) ──> payments (HTTP)
//!                  │                                          └──> inventory (gRPC)
//!                  └──> orders (ListOrders)
//! ```
//!
//! Each service has its own tracer provider, `service.name` and `deployment.stage`, and exports
//! over OTLP itself, exactly as a production service would; the only thing special about the demo
//! is that a fault can turn one hop into one of the bugs grayscope exists to find.

mod broker;
pub mod export;
mod fault;
mod mesh;
mod traffic;

/// The demo's gRPC services (`proto/grayscope/demo/v1/shop.proto`), clients and servers.
pub mod proto {
    tonic::include_proto!("grayscope.demo.v1");
}

use std::sync::Arc;
use std::time::Duration;

use crate::config::Dur;

pub use fault::{BROKER_EDGE, EDGES, Fault, FaultKind, Svc, parse_faults};

/// The `nats-server` the demo would start for its messaging hop, if one is installed.
pub fn nats_server_binary() -> Option<std::path::PathBuf> {
    broker::NatsServer::binary()
}
pub use traffic::Progress;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid fault '{spec}': {reason}")]
    Fault { spec: String, reason: String },
    #[error("invalid OTLP endpoint '{endpoint}': {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the OTLP exporter of {service}: {message}")]
    Exporter { service: String, message: String },
    #[error("cannot listen on {addr} for {service}: {source}")]
    Bind {
        service: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("--canary-share must be between 0 and 1, not {0}")]
    Share(f64),
    #[error("--rate must be more than 0")]
    Rate,
    #[error(transparent)]
    Auth(crate::security::SecurityError),
    #[error("the message broker: {0}")]
    Broker(String),
    #[error("the orders database: {0}")]
    Database(String),
}

/// How the demo's services export their spans.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC
    Grpc,
    /// OTLP/HTTP with protobuf bodies
    Http,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the services send their spans: for gRPC the collector's address, for HTTP its base
    /// URL (`/v1/traces` is appended) [default: http://127.0.0.1:4317, or :4318 for --protocol http]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol of the services' exporters
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Requests per second sent to the gateway
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rate: f64,
    /// Share of requests tagged `canary`; the rest are `stable`, half of them untagged (the
    /// gateway's default applies)
    #[arg(long, default_value_t = 0.3, value_name = "RATIO")]
    pub canary_share: f64,
    /// Inject a propagation bug on one hop: KIND@CALLER->CALLEE, KIND one of missing, changed,
    /// misroute, typo, lost-context (repeatable; e.g. missing@orders->payments)
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Stop after this long [default: run until interrupted]
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// Stop after this many requests
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Where the gateway, the mesh's entry point, listens [default: a free loopback port]
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<std::net::SocketAddr>,
    /// The messaging hop orders -> billing through NATS: `auto` runs it when `nats-server` is
    /// installed (Debian package `nats-server`), `on` requires it, `off` leaves it out
    #[arg(long, value_enum, default_value = "auto")]
    pub broker: BrokerMode,
    /// How the services carry the stage: `baggage` (copied onto every span) or `header`
    /// (forwarded by hand, captured on SERVER spans only; no messaging hop)
    #[arg(long, value_enum, default_value = "baggage")]
    pub propagation: Propagation,
    #[command(flatten)]
    pub auth: crate::security::ClientAuthArgs,
}

/// How the demo's services carry the stage from one to the next, and where it shows on their
/// spans.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// As W3C baggage (and `X-Release-Stage`), copied onto every span by a span processor: the
    /// `every span` mode, where grayscope finds a lost stage on the very span that lost it
    #[default]
    Baggage,
    /// Hand-built: `X-Release-Stage` read in a middleware and written on every call, recorded
    /// only as the captured request header of SERVER spans: the `captured` mode, where grayscope
    /// judges each hop from what one service received to what the next one received
    Header,
}

/// Whether the demo runs its messaging hop.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerMode {
    Auto,
    On,
    Off,
}

/// Where spans go.
#[derive(Clone, Debug)]
pub struct Export {
    pub protocol: Protocol,
    /// For gRPC the collector's URL, for HTTP the full URL of the traces endpoint.
    pub url: String,
    /// The CA to trust (https), the client certificate and the token to send.
    pub auth: crate::security::ClientAuth,
}

impl Export {
    /// Applies the defaults and the OTLP rule that an HTTP base URL gets `/v1/traces` appended.
    pub fn new(protocol: Protocol, endpoint: Option<&str>) -> Result<Export, DemoError> {
        let endpoint = endpoint.unwrap_or(match protocol {
            Protocol::Grpc => "http://127.0.0.1:4317",
            Protocol::Http => "http://127.0.0.1:4318",
        });
        let err = |reason: &str| DemoError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| err(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(err("expected a URL like http://127.0.0.1:4317")),
        }
        if uri.host().is_none() {
            return Err(err("the URL has no host"));
        }
        let url = match protocol {
            Protocol::Grpc => endpoint.trim_end_matches('/').to_string(),
            Protocol::Http if uri.path().ends_with("/v1/traces") => endpoint.to_string(),
            Protocol::Http => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        };
        Ok(Export {
            protocol,
            url,
            auth: Default::default(),
        })
    }

    /// Sends with `auth`'s token, and over https trusts and presents what it says.
    pub fn with_auth(mut self, auth: crate::security::ClientAuth) -> Export {
        self.auth = auth;
        self
    }

    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }
}

/// Everything a demo run needs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub export: Export,
    pub rate: f64,
    pub canary_share: f64,
    pub faults: Vec<Fault>,
    /// Stop sending after this many requests.
    pub requests: Option<u64>,
    /// How long spans wait in each service's exporter batch.
    pub batch_delay: Duration,
    /// Where the gateway listens [default: a loopback port the OS chooses].
    pub gateway: Option<std::net::SocketAddr>,
    /// The messaging hop orders -> billing through a NATS server the demo starts.
    pub broker: BrokerMode,
    pub propagation: Propagation,
}

impl DemoOptions {
    pub fn new(export: Export, faults: Vec<Fault>) -> Self {
        DemoOptions {
            export,
            rate: 20.0,
            canary_share: 0.3,
            faults,
            requests: None,
            batch_delay: Duration::from_millis(500),
            gateway: None,
            broker: BrokerMode::Off,
            propagation: Propagation::Baggage,
        }
    }

    fn validate(&self) -> Result<(), DemoError> {
        if !(0.0..=1.0).contains(&self.canary_share) {
            return Err(DemoError::Share(self.canary_share));
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(DemoError::Rate);
        }
        Ok(())
    }
}

/// A running demo: the mesh and the traffic driving it.
pub struct Demo {
    mesh: mesh::Mesh,
    traffic: traffic::Traffic,
    options: DemoOptions,
    /// Ended after the services that use it.
    broker: Option<broker::NatsServer>,
    /// Why the messaging hop is left out, when it is.
    broker_note: Option<String>,
}

impl Demo {
    /// Starts every service on a loopback port chosen by the OS, then the traffic. Must be called
    /// within a multi-threaded tokio runtime (the exporters' batch threads block on it).
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        options.validate()?;
        let broker_faults = options
            .faults
            .iter()
            .any(|f| (f.caller, f.callee) == BROKER_EDGE);
        let header = options.propagation == Propagation::Header;
        let (broker, broker_note) = match (options.broker, broker::NatsServer::binary()) {
            (BrokerMode::Off, _) => (None, None),
            (BrokerMode::On, _) if header => {
                return Err(DemoError::Broker(
                    "the messaging hop carries the stage as baggage: run --propagation header with --broker off".into(),
                ));
            }
            (BrokerMode::Auto, _) if header => (
                None,
                Some("--propagation header: the messaging hop orders -> billing (baggage in the message headers) is left out".to_string()),
            ),
            (_, Some(bin)) => (Some(broker::NatsServer::start(&bin)?), None),
            (BrokerMode::On, None) => {
                return Err(DemoError::Broker(
                    "nats-server is not installed (Debian: apt-get install nats-server; or set GRAYSCOPE_NATS_SERVER)".into(),
                ));
            }
            (BrokerMode::Auto, None) => (
                None,
                Some("nats-server is not installed (apt-get install nats-server): the messaging hop orders -> billing is left out".to_string()),
            ),
        };
        if broker.is_none() && broker_faults {
            return Err(DemoError::Broker(
                "a fault on orders->billing needs the messaging hop: run with --broker on and nats-server installed".into(),
            ));
        }
        let exports = Arc::new(export::Exports::default());
        let mesh =
            mesh::Mesh::start(&options, &exports, broker.as_ref().map(|b| b.url.as_str())).await?;
        let traffic = traffic::Traffic::start(mesh.gateway_url(), &options, exports.clone());
        Ok(Demo {
            mesh,
            traffic,
            options,
            broker,
            broker_note,
        })
    }

    /// What runs where, what is sent, and which faults are active.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "demo mesh on 127.0.0.1, exporting OTLP/{} to {}\n",
            match self.options.export.protocol {
                Protocol::Grpc => "gRPC",
                Protocol::Http => "HTTP",
            },
            self.options.export.url
        );
        out.push_str(&self.mesh.describe());
        out.push_str(match self.options.propagation {
            Propagation::Baggage => "  propagation: baggage and X-Release-Stage; the stage is copied onto every span (grayscope mode: every span)\n",
            Propagation::Header => "  propagation: X-Release-Stage forwarded by hand; the stage is recorded only as the captured header of SERVER spans (grayscope mode: captured)\n",
        });
        if let Some(note) = &self.broker_note {
            out.push_str(&format!("  broker: {note}\n"));
        }
        out.push_str(&format!(
            "traffic: {} requests/s to the gateway, {:.0}% tagged canary, the rest stable (half untagged: the gateway's default applies)\n",
            self.options.rate,
            self.options.canary_share * 100.0
        ));
        if self.options.faults.is_empty() {
            out.push_str("faults: none (grayscope should report no findings)\n");
        } else {
            for f in &self.options.faults {
                out.push_str(&format!("fault {}\n", f.describe(self.options.propagation)));
            }
        }
        out
    }

    /// The gateway's base URL: the mesh's entry point (`/checkout?user=U&item=I`).
    pub fn gateway_url(&self) -> String {
        self.mesh.gateway_url()
    }

    /// The stable orders instance, a gRPC entry point (`grayscope.demo.v1.Orders`).
    pub fn orders_addr(&self) -> std::net::SocketAddr {
        self.mesh.orders_addr()
    }

    pub fn progress(&self) -> Progress {
        self.traffic.progress()
    }

    /// Resolves when the traffic has sent every request it was asked to.
    pub async fn finished(&mut self) {
        self.traffic.finished().await;
    }

    /// Stops the traffic, waits for answers to everything in flight, then flushes every service's
    /// spans to the endpoint and stops the services.
    pub async fn stop(self) -> Progress {
        let progress = self.traffic.stop().await;
        self.mesh.stop().await;
        drop(self.broker);
        progress()
    }
}

/// `grayscope demo`: runs until `--duration`, `--requests` or an interrupt, then flushes.
pub async fn run(args: DemoArgs) -> Result<Progress, DemoError> {
    let export = Export::new(args.protocol, args.otlp_endpoint.as_deref())?
        .with_auth(args.auth.resolve().map_err(DemoError::Auth)?);
    let mut options = DemoOptions::new(export, parse_faults(&args.faults)?);
    options.rate = args.rate;
    options.canary_share = args.canary_share;
    options.requests = args.requests;
    options.gateway = args.gateway;
    options.broker = args.broker;
    options.propagation = args.propagation;
    let mut demo = Demo::start(options).await?;
    print!("{}", demo.describe());
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d.0).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = deadline => {}
        _ = demo.finished() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let endpoint = demo.options.export.url.clone();
    let progress = demo.stop().await;
    println!("{progress}");
    if progress.spans_failed > 0 {
        eprintln!(
            "grayscope demo: {} spans could not be exported to {endpoint} ({}): is an OTLP receiver listening there?",
            progress.spans_failed,
            progress.export_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_otlp_rules() {
        let e = Export::new(Protocol::Http, None).unwrap();
        assert_eq!(e.url, "http://127.0.0.1:4318/v1/traces");
        let e = Export::new(Protocol::Http, Some("http://h:1/v1/traces")).unwrap();
        assert_eq!(e.url, "http://h:1/v1/traces");
        let e = Export::new(Protocol::Grpc, Some("http://h:1/")).unwrap();
        assert_eq!(e.url, "http://h:1");
        assert!(
            Export::new(Protocol::Grpc, Some("https://h:1"))
                .unwrap()
                .is_https()
        );
        assert!(Export::new(Protocol::Grpc, Some("h:1")).is_err());
    }
}
