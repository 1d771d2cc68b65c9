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

mod export;
mod mesh;
mod traffic;

/// The demo's gRPC services (`proto/grayscope/demo/v1/shop.proto`), clients and servers.
pub mod proto {
    tonic::include_proto!("grayscope.demo.v1");
}

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Dur;

pub use traffic::Progress;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid fault '{spec}': {reason}")]
    Fault { spec: String, reason: String },
    #[error("invalid OTLP endpoint '{endpoint}': {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the OTLP exporter of {service}: {message}")]
    Exporter { service: String, message: String },
    #[error("cannot bind a loopback port for {service}: {source}")]
    Bind {
        service: &'static str,
        source: std::io::Error,
    },
    #[error("--canary-share must be between 0 and 1, not {0}")]
    Share(f64),
    #[error("--rate must be more than 0")]
    Rate,
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
}

/// The services of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Svc {
    Gateway,
    Users,
    Orders,
    Payments,
    Inventory,
}

impl Svc {
    pub const ALL: [Svc; 5] = [
        Svc::Gateway,
        Svc::Users,
        Svc::Orders,
        Svc::Payments,
        Svc::Inventory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Svc::Gateway => "gateway",
            Svc::Users => "users",
            Svc::Orders => "orders",
            Svc::Payments => "payments",
            Svc::Inventory => "inventory",
        }
    }

    fn parse(s: &str) -> Option<Svc> {
        Svc::ALL.into_iter().find(|v| v.name() == s)
    }
}

impl fmt::Display for Svc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every caller->callee call the mesh makes, in the order a request makes them.
pub const EDGES: [(Svc, Svc); 5] = [
    (Svc::Gateway, Svc::Users),
    (Svc::Users, Svc::Orders),
    (Svc::Orders, Svc::Payments),
    (Svc::Orders, Svc::Inventory),
    (Svc::Gateway, Svc::Orders),
];

/// The bugs a fault can put on a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The call is made with the trace but without the request's baggage.
    Missing,
    /// A middleware on the caller's client stamps `X-Release-Stage: stable` (and the baggage entry)
    /// over whatever the request carried.
    Changed,
    /// The caller sends every request to the callee's stable instance.
    Misroute,
    /// The caller writes the baggage entry as `x-release-stag` and no header.
    Typo,
    /// The call is made from a spawned task that did not take the request's context along.
    LostContext,
}

impl FaultKind {
    const ALL: [FaultKind; 5] = [
        FaultKind::Missing,
        FaultKind::Changed,
        FaultKind::Misroute,
        FaultKind::Typo,
        FaultKind::LostContext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Missing => "missing",
            FaultKind::Changed => "changed",
            FaultKind::Misroute => "misroute",
            FaultKind::Typo => "typo",
            FaultKind::LostContext => "lost-context",
        }
    }

    /// The verdict and scope grayscope reports for this fault, on the fault's own edge.
    pub fn expected(self) -> (&'static str, &'static str) {
        match self {
            FaultKind::Missing => ("missing", "in_process"),
            FaultKind::Changed => ("changed", "cross_service"),
            FaultKind::Misroute => ("misrouted", "cross_service"),
            FaultKind::Typo => ("key_mismatch", "cross_service"),
            FaultKind::LostContext => ("broken_trace", "in_process"),
        }
    }

    /// Whether every request shows the fault, or only canary ones.
    fn canary_only(self) -> bool {
        matches!(self, FaultKind::Changed | FaultKind::Misroute)
    }
}

/// One fault on one edge of the mesh: `KIND@CALLER->CALLEE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub caller: Svc,
    pub callee: Svc,
}

impl FromStr for Fault {
    type Err = DemoError;
    fn from_str(spec: &str) -> Result<Self, DemoError> {
        let err = |reason: String| DemoError::Fault {
            spec: spec.to_string(),
            reason,
        };
        let kinds = || {
            FaultKind::ALL
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let edges = || {
            EDGES
                .iter()
                .map(|(a, b)| format!("{a}->{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (kind, edge) = spec
            .split_once('@')
            .ok_or_else(|| err("expected KIND@CALLER->CALLEE".into()))?;
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)
            .ok_or_else(|| err(format!("unknown kind '{kind}'; kinds are {}", kinds())))?;
        let (caller, callee) = edge
            .split_once("->")
            .ok_or_else(|| err("expected KIND@CALLER->CALLEE".into()))?;
        let (caller, callee) = match (Svc::parse(caller), Svc::parse(callee)) {
            (Some(a), Some(b)) if EDGES.contains(&(a, b)) => (a, b),
            _ => {
                return Err(err(format!(
                    "'{edge}' is not a call the mesh makes; calls are {}",
                    edges()
                )));
            }
        };
        if kind == FaultKind::Misroute && callee != Svc::Orders {
            return Err(err(
                "only orders runs a canary instance, so only calls to orders can be misrouted"
                    .into(),
            ));
        }
        Ok(Fault {
            kind,
            caller,
            callee,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}->{}", self.kind.name(), self.caller, self.callee)
    }
}

impl Fault {
    /// What the fault does and what grayscope should say about it, in one line.
    pub fn describe(&self) -> String {
        let (verdict, scope) = self.kind.expected();
        let what = match self.kind {
            FaultKind::Missing => format!(
                "{} calls {} without the request's baggage",
                self.caller, self.callee
            ),
            FaultKind::Changed => format!(
                "{} stamps X-Release-Stage: stable on its calls to {}",
                self.caller, self.callee
            ),
            FaultKind::Misroute => format!(
                "{} sends every call to the stable instance of {}",
                self.caller, self.callee
            ),
            FaultKind::Typo => format!(
                "{} sends the stage to {} as baggage 'x-release-stag'",
                self.caller, self.callee
            ),
            FaultKind::LostContext => format!(
                "{} calls {} from a spawned task without the request's context",
                self.caller, self.callee
            ),
        };
        let which = if self.kind.canary_only() {
            "canary requests"
        } else {
            "every request"
        };
        format!(
            "{self}: {what}; expect {verdict} ({scope}) on {}->{} for {which}",
            self.caller, self.callee
        )
    }
}

/// Parses fault specs; `none` stands for no fault (so that a default can be switched off).
pub fn parse_faults(specs: &[String]) -> Result<Vec<Fault>, DemoError> {
    let mut faults: Vec<Fault> = Vec::new();
    for spec in specs.iter().filter(|s| s.as_str() != "none") {
        let fault: Fault = spec.parse()?;
        if let Some(other) = faults
            .iter()
            .find(|f| (f.caller, f.callee) == (fault.caller, fault.callee))
        {
            return Err(DemoError::Fault {
                spec: spec.clone(),
                reason: format!("the same call already has the fault {other}; one per call"),
            });
        }
        faults.push(fault);
    }
    Ok(faults)
}

/// Where spans go.
#[derive(Clone, Debug)]
pub struct Export {
    pub protocol: Protocol,
    /// For gRPC the collector's URL, for HTTP the full URL of the traces endpoint.
    pub url: String,
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
            Some("http") => {}
            Some("https") => return Err(err("https is not supported: this build has no TLS")),
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
        Ok(Export { protocol, url })
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
}

impl Demo {
    /// Starts every service on a loopback port chosen by the OS, then the traffic. Must be called
    /// within a multi-threaded tokio runtime (the exporters' batch threads block on it).
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        options.validate()?;
        let exports = Arc::new(export::Exports::default());
        let mesh = mesh::Mesh::start(&options, &exports).await?;
        let traffic = traffic::Traffic::start(mesh.gateway_url(), &options, exports.clone());
        Ok(Demo {
            mesh,
            traffic,
            options,
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
        out.push_str(&format!(
            "traffic: {} requests/s to the gateway, {:.0}% tagged canary, the rest stable (half untagged: the gateway's default applies)\n",
            self.options.rate,
            self.options.canary_share * 100.0
        ));
        if self.options.faults.is_empty() {
            out.push_str("faults: none (grayscope should report no findings)\n");
        } else {
            for f in &self.options.faults {
                out.push_str(&format!("fault {}\n", f.describe()));
            }
        }
        out
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
        progress()
    }
}

/// `grayscope demo`: runs until `--duration`, `--requests` or an interrupt, then flushes.
pub async fn run(args: DemoArgs) -> Result<Progress, DemoError> {
    let export = Export::new(args.protocol, args.otlp_endpoint.as_deref())?;
    let mut options = DemoOptions::new(export, parse_faults(&args.faults)?);
    options.rate = args.rate;
    options.canary_share = args.canary_share;
    options.requests = args.requests;
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
    fn faults_parse_and_name_their_expected_finding() {
        let f: Fault = "missing@orders->payments".parse().unwrap();
        assert_eq!(
            f,
            Fault {
                kind: FaultKind::Missing,
                caller: Svc::Orders,
                callee: Svc::Payments
            }
        );
        assert_eq!(f.to_string(), "missing@orders->payments");
        assert!(f.describe().contains("expect missing (in_process)"));
        for spec in [
            "changed@users->orders",
            "misroute@gateway->orders",
            "typo@orders->inventory",
            "lost-context@orders->inventory",
        ] {
            assert_eq!(spec.parse::<Fault>().unwrap().to_string(), spec);
        }
    }

    #[test]
    fn bad_fault_specs_say_what_is_allowed() {
        let e = |s: &str| s.parse::<Fault>().unwrap_err().to_string();
        assert!(e("missing").contains("KIND@CALLER->CALLEE"));
        assert!(e("lost@orders->payments").contains("lost-context"));
        assert!(e("missing@payments->orders").contains("orders->payments"));
        assert!(e("misroute@orders->payments").contains("only orders runs a canary"));
        let twice = parse_faults(&[
            "typo@orders->inventory".into(),
            "lost-context@orders->inventory".into(),
        ]);
        assert!(twice.unwrap_err().to_string().contains("one per call"));
        assert!(parse_faults(&["none".into()]).unwrap().is_empty());
    }

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
                .unwrap_err()
                .to_string()
                .contains("no TLS")
        );
        assert!(Export::new(Protocol::Grpc, Some("h:1")).is_err());
    }
}
