//! The mesh's services and calls, and the faults that turn one call into a propagation bug.

use std::fmt;
use std::str::FromStr;

use super::DemoError;

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
}
