//! The mesh's services and calls, and the faults that turn one call into a propagation bug.

use std::fmt;
use std::str::FromStr;

use super::{DemoError, Propagation};

/// The services of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Svc {
    Gateway,
    Users,
    Orders,
    Payments,
    Inventory,
    /// Consumes `OrderPlaced` messages from the broker (stable and canary consumer groups).
    Billing,
}

impl Svc {
    pub const ALL: [Svc; 6] = [
        Svc::Gateway,
        Svc::Users,
        Svc::Orders,
        Svc::Payments,
        Svc::Inventory,
        Svc::Billing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Svc::Gateway => "gateway",
            Svc::Users => "users",
            Svc::Orders => "orders",
            Svc::Payments => "payments",
            Svc::Inventory => "inventory",
            Svc::Billing => "billing",
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

/// Every caller->callee call the mesh makes, in the order a request makes them; the last one is
/// the messaging hop through the broker (with `--broker`).
pub const EDGES: [(Svc, Svc); 6] = [
    (Svc::Gateway, Svc::Users),
    (Svc::Users, Svc::Orders),
    (Svc::Orders, Svc::Payments),
    (Svc::Orders, Svc::Inventory),
    (Svc::Gateway, Svc::Orders),
    BROKER_EDGE,
];

/// orders publishes `OrderPlaced`, billing consumes it.
pub const BROKER_EDGE: (Svc, Svc) = (Svc::Orders, Svc::Billing);

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
    /// The producer's propagator is TraceContext only: the message carries no baggage.
    TraceContextOnly,
    /// The consumer starts its own trace with a link to the message's context and does not
    /// restore the stage from the headers.
    LinksOnly,
    /// The consumer ignores the message's headers: neither parent nor link.
    IgnoreHeaders,
}

impl FaultKind {
    const ALL: [FaultKind; 8] = [
        FaultKind::Missing,
        FaultKind::Changed,
        FaultKind::Misroute,
        FaultKind::Typo,
        FaultKind::LostContext,
        FaultKind::TraceContextOnly,
        FaultKind::LinksOnly,
        FaultKind::IgnoreHeaders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Missing => "missing",
            FaultKind::Changed => "changed",
            FaultKind::Misroute => "misroute",
            FaultKind::Typo => "typo",
            FaultKind::LostContext => "lost-context",
            FaultKind::TraceContextOnly => "tracecontext-only",
            FaultKind::LinksOnly => "links-only",
            FaultKind::IgnoreHeaders => "ignore-headers",
        }
    }

    /// Whether the fault breaks a message hop (only those), a call (only those), or either.
    fn applies_to(self, edge: (Svc, Svc)) -> bool {
        let messaging = edge == BROKER_EDGE;
        match self {
            FaultKind::TraceContextOnly | FaultKind::LinksOnly | FaultKind::IgnoreHeaders => {
                messaging
            }
            FaultKind::Missing | FaultKind::Typo | FaultKind::LostContext => !messaging,
            FaultKind::Changed | FaultKind::Misroute => true,
        }
    }

    /// The verdict and scope grayscope reports for this fault on a call.
    pub fn expected(self, propagation: Propagation) -> (&'static str, &'static str) {
        match (self, propagation) {
            // The stage is on no span between the two SERVER spans: the hop is where it is lost.
            (FaultKind::Missing, Propagation::Header) => ("missing", "cross_service"),
            // A misspelt header is not captured: the callee received no stage.
            (FaultKind::Typo, Propagation::Header) => ("missing", "cross_service"),
            (kind, _) => kind.expected_on_calls(),
        }
    }

    fn expected_on_calls(self) -> (&'static str, &'static str) {
        match self {
            FaultKind::Missing => ("missing", "in_process"),
            FaultKind::Changed => ("changed", "cross_service"),
            FaultKind::Misroute => ("misrouted", "cross_service"),
            FaultKind::Typo => ("key_mismatch", "cross_service"),
            FaultKind::LostContext => ("broken_trace", "in_process"),
            FaultKind::TraceContextOnly | FaultKind::LinksOnly => ("missing", "messaging"),
            FaultKind::IgnoreHeaders => ("broken_trace", "messaging"),
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
        if kind == FaultKind::Misroute && !matches!(callee, Svc::Orders | Svc::Billing) {
            return Err(err(
                "only orders and billing run a canary instance, so only calls to orders and messages to billing can be misrouted"
                    .into(),
            ));
        }
        if !kind.applies_to((caller, callee)) {
            return Err(err(if (caller, callee) == BROKER_EDGE {
                "orders->billing is a message through the broker: its faults are tracecontext-only, links-only, ignore-headers, changed, misroute".into()
            } else {
                format!(
                    "{} breaks a message hop; the only one is orders->billing",
                    kind.name()
                )
            }));
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
    /// The verdict and scope grayscope reports for this fault, on its own edge, when the
    /// services carry the stage as `propagation` says.
    pub fn expected(&self, propagation: Propagation) -> (&'static str, &'static str) {
        match (self.kind, (self.caller, self.callee) == BROKER_EDGE) {
            (FaultKind::Changed, true) => ("changed", "messaging"),
            (FaultKind::Misroute, true) => ("misrouted", "messaging"),
            (kind, _) => kind.expected(propagation),
        }
    }

    /// What the fault does and what grayscope should say about it, in one line.
    pub fn describe(&self, propagation: Propagation) -> String {
        let (verdict, scope) = self.expected(propagation);
        let header = propagation == Propagation::Header;
        let what = match self.kind {
            FaultKind::Missing if header => format!(
                "{} calls {} without forwarding X-Release-Stage",
                self.caller, self.callee
            ),
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
            FaultKind::Typo if header => format!(
                "{} sends the stage to {} as header 'x-release-stag', which nobody captures",
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
            FaultKind::TraceContextOnly => format!(
                "{} publishes to {} with a TraceContext-only propagator: no baggage in the message",
                self.caller, self.callee
            ),
            FaultKind::LinksOnly => format!(
                "{} handles {}'s messages in a trace of its own, linked, without restoring the stage",
                self.callee, self.caller
            ),
            FaultKind::IgnoreHeaders => format!(
                "{} ignores the headers of {}'s messages: neither parent nor link",
                self.callee, self.caller
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
        assert!(
            f.describe(Propagation::Baggage)
                .contains("expect missing (in_process)")
        );
        assert!(
            f.describe(Propagation::Header)
                .contains("without forwarding X-Release-Stage; expect missing (cross_service)")
        );
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
        assert!(e("misroute@orders->payments").contains("only orders and billing run a canary"));
        assert!(e("links-only@orders->payments").contains("the only one is orders->billing"));
        assert!(e("typo@orders->billing").contains("tracecontext-only, links-only"));
        let f: Fault = "changed@orders->billing".parse().unwrap();
        assert_eq!(f.expected(Propagation::Baggage), ("changed", "messaging"));
        let twice = parse_faults(&[
            "typo@orders->inventory".into(),
            "lost-context@orders->inventory".into(),
        ]);
        assert!(twice.unwrap_err().to_string().contains("one per call"));
        assert!(parse_faults(&["none".into()]).unwrap().is_empty());
    }
}
