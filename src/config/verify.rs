//! What decides verdicts: the stage keys, allowed values, declared instances and exempt roots,
//! shared by `serve` and `check`.

use clap::Args;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::instances::Instances;
use crate::intern::Symbols;
use crate::model::{DestinationPolicy, StageMode};

/// What decides verdicts; shared by `serve` and `check`.
#[derive(Args, Deserialize, Serialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyArgs {
    /// Span attribute keys that carry the request's stage, first found wins; keys named as
    /// captured headers (`http.request.header.*`) or metadata (`rpc.*.request.metadata.*`) are
    /// read as captured [default: x-release-stage,http.request.header.x-release-stage,
    /// http.request.header.x_release_stage,rpc.grpc.request.metadata.x-release-stage,
    /// rpc.request.metadata.x-release-stage]
    #[arg(
        long,
        env = "GRAYSCOPE_STAGE_KEYS",
        value_delimiter = ',',
        value_name = "KEY,..."
    )]
    pub stage_keys: Option<Vec<String>>,
    /// Resource attribute key naming the deployment stage of an instance [default: deployment.stage]
    #[arg(long, env = "GRAYSCOPE_INSTANCE_STAGE_KEY", value_name = "KEY")]
    pub instance_stage_key: Option<String>,
    /// Allowed stage values; any other value is `invalid_value` [default: any value]
    #[arg(
        long,
        env = "GRAYSCOPE_ALLOWED_STAGES",
        value_delimiter = ',',
        value_name = "STAGE,..."
    )]
    pub allowed_stages: Option<Vec<String>>,
    /// Instances that count as live for misrouting even before they send a span: SERVICE=STAGE
    #[arg(
        long,
        env = "GRAYSCOPE_DECLARED_INSTANCES",
        value_delimiter = ',',
        value_name = "SERVICE=STAGE,..."
    )]
    pub declared_instances: Option<Vec<String>>,
    /// Services whose root CLIENT/PRODUCER spans are expected (jobs): SERVICE or SERVICE:SPAN_NAME
    #[arg(
        long,
        env = "GRAYSCOPE_EXEMPT_ROOTS",
        value_delimiter = ',',
        value_name = "SERVICE[:SPAN],..."
    )]
    pub exempt_roots: Option<Vec<String>>,
    /// When a message of one stage may be processed by a consumer instance of another, per
    /// destination (exclusive, fallback or broadcast; `*` for the rest) [default: *=fallback]
    #[arg(
        long,
        env = "GRAYSCOPE_DESTINATION_POLICIES",
        value_delimiter = ',',
        value_name = "DESTINATION=POLICY,..."
    )]
    pub destination_policies: Option<Vec<String>>,
    /// Which spans of a service carry the stage, when it should not be learned from its spans:
    /// `every-span` (copied from baggage onto every span) or `captured` (a captured request
    /// header or metadata, on the spans that received a request); `*` for every other service
    /// [default: learned per service]
    #[arg(
        long,
        env = "GRAYSCOPE_STAGE_MODES",
        value_delimiter = ',',
        value_name = "SERVICE=MODE,..."
    )]
    pub stage_modes: Option<Vec<String>>,
}

/// Verification settings with defaults applied.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyConfig {
    pub stage_keys: Vec<String>,
    pub instance_stage_key: String,
    pub allowed_stages: Vec<String>,
    /// (service, stage)
    pub declared_instances: Vec<(String, String)>,
    /// (service, optional span name)
    pub exempt_roots: Vec<(String, Option<String>)>,
    /// (destination or `*`, policy)
    pub destination_policies: Vec<(String, DestinationPolicy)>,
    /// (service or `*`, mode); services not named have their mode learned.
    pub stage_modes: Vec<(String, StageMode)>,
}

impl VerifyConfig {
    /// The registry of instances and services that verification asks, with the declared
    /// instances and configured stage modes in it.
    pub fn instances(&self, symbols: &Symbols, ttl_ms: u64) -> Instances {
        let declared = self
            .declared_instances
            .iter()
            .map(|(svc, st)| (symbols.services.intern(svc), symbols.values.intern(st)));
        let modes = self
            .stage_modes
            .iter()
            .filter(|(svc, _)| svc != "*")
            .map(|(svc, m)| (symbols.services.intern(svc), *m));
        let default = self
            .stage_modes
            .iter()
            .find(|(svc, _)| svc == "*")
            .map(|(_, m)| *m);
        Instances::new(declared, ttl_ms).with_stage_modes(modes, default)
    }
}

impl VerifyArgs {
    pub(super) fn or(self, file: VerifyArgs) -> VerifyArgs {
        VerifyArgs {
            stage_keys: self.stage_keys.or(file.stage_keys),
            instance_stage_key: self.instance_stage_key.or(file.instance_stage_key),
            allowed_stages: self.allowed_stages.or(file.allowed_stages),
            declared_instances: self.declared_instances.or(file.declared_instances),
            exempt_roots: self.exempt_roots.or(file.exempt_roots),
            destination_policies: self.destination_policies.or(file.destination_policies),
            stage_modes: self.stage_modes.or(file.stage_modes),
        }
    }

    pub fn resolve(self) -> Result<VerifyConfig, ConfigError> {
        let stage_keys = self.stage_keys.unwrap_or_else(|| {
            vec![
                "x-release-stage".into(),
                "http.request.header.x-release-stage".into(),
                // Python's instrumentations (and older semantic conventions) write `_` for `-`.
                "http.request.header.x_release_stage".into(),
                "rpc.grpc.request.metadata.x-release-stage".into(),
                "rpc.request.metadata.x-release-stage".into(),
            ]
        });
        if stage_keys.is_empty() || stage_keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Invalid {
                option: "stage-keys",
                message: "needs at least one non-empty key".into(),
            });
        }
        let declared_instances = self
            .declared_instances
            .unwrap_or_default()
            .into_iter()
            .map(|d| match d.split_once('=') {
                Some((svc, stage)) if !svc.is_empty() && !stage.is_empty() => {
                    Ok((svc.to_string(), stage.to_string()))
                }
                _ => Err(ConfigError::Invalid {
                    option: "declared-instances",
                    message: format!("'{d}' is not SERVICE=STAGE"),
                }),
            })
            .collect::<Result<_, _>>()?;
        let exempt_roots = self
            .exempt_roots
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e.split_once(':') {
                Some((svc, span)) => (svc.to_string(), Some(span.to_string())),
                None => (e, None),
            })
            .collect();
        let destination_policies = named_values(
            "destination-policies",
            self.destination_policies,
            (
                "DESTINATION=POLICY",
                "a policy: exclusive, fallback or broadcast",
            ),
            DestinationPolicy::parse,
        )?;
        let stage_modes = named_values(
            "stage-modes",
            self.stage_modes,
            ("SERVICE=MODE", "a mode: every-span or captured"),
            StageMode::parse,
        )?;
        Ok(VerifyConfig {
            stage_keys,
            stage_modes,
            instance_stage_key: self
                .instance_stage_key
                .unwrap_or_else(|| "deployment.stage".into()),
            allowed_stages: self.allowed_stages.unwrap_or_default(),
            declared_instances,
            exempt_roots,
            destination_policies,
        })
    }
}

/// The `NAME=VALUE` items of a list option, each VALUE read by `parse`; `form` is how an item is
/// written and what a VALUE may be, for the errors.
fn named_values<T>(
    option: &'static str,
    items: Option<Vec<String>>,
    form: (&str, &str),
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(String, T)>, ConfigError> {
    items
        .unwrap_or_default()
        .into_iter()
        .map(|d| match d.rsplit_once('=') {
            Some((name, value)) if !name.is_empty() => parse(value)
                .map(|v| (name.to_string(), v))
                .ok_or_else(|| ConfigError::Invalid {
                    option,
                    message: format!("'{value}' in '{d}' is not {}", form.1),
                }),
            _ => Err(ConfigError::Invalid {
                option,
                message: format!("'{d}' is not {}", form.0),
            }),
        })
        .collect()
}
