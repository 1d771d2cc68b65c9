//! Configuration: flags, `GRAYSCOPE_*` environment variables and a TOML file, in that order of
//! precedence, then built-in defaults.
//!
//! One struct per command carries every option once: clap reads it from flags and the environment,
//! serde reads it from the file. TOML keys are the long flag names (`trace-idle = "10s"` is
//! `--trace-idle 10s` is `GRAYSCOPE_TRACE_IDLE=10s`), and a key clap does not know is an error, so a
//! typo in a config file fails loudly instead of being ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;

mod security;
mod verify;
pub use security::{Addresses, SecurityArgs, SecurityConfig, TlsFiles};
use serde::{Deserialize, Serialize};
pub use verify::{VerifyArgs, VerifyConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path}: unknown key '{key}' (keys are the long flag names of `grayscope serve --help`)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("{option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

/// Default of `--store-queue-spans`: two seconds and more of a busy collector's traffic, so that a
/// short stall of the disk is absorbed without refusing anyone.
pub const STORE_QUEUE_SPANS: usize = 524_288;

/// Flags of `serve` that are not keys of the config file.
const NOT_FILE_KEYS: [&str; 2] = ["config", "print-config"];

/// Where the store is: `--data` is a directory, or a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Dir(PathBuf),
    Postgres(String),
}

impl Data {
    pub fn of(data: PathBuf) -> Data {
        match data.to_str() {
            Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                Data::Postgres(s.to_string())
            }
            _ => Data::Dir(data),
        }
    }
}

/// Printed without the password a URL may hold.
impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Dir(p) => p.serialize(s),
            Data::Postgres(url) => s.collect_str(&crate::config::redact(url)),
        }
    }
}

/// A URL without its password, for logs, errors and `--print-config`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A duration written like `500ms`, `10s`, `15m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|e| format!("'{s}' is not a duration like 500ms, 10s or 15m: {e}"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

#[derive(Args, Deserialize, Serialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these options (keys are the long flag names)
    #[arg(long, env = "GRAYSCOPE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]
    #[arg(long, env = "GRAYSCOPE_OTLP_GRPC", value_name = "ADDR")]
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318]
    #[arg(long, env = "GRAYSCOPE_OTLP_HTTP", value_name = "ADDR")]
    pub otlp_http: Option<SocketAddr>,
    /// Web origins whose pages may export spans to OTLP/HTTP (browsers with the OpenTelemetry web
    /// SDK), like https://shop.example.com; `*` for any [default: none]
    #[arg(
        long,
        env = "GRAYSCOPE_OTLP_HTTP_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN,..."
    )]
    pub otlp_http_cors_origins: Option<Vec<String>>,
    /// JSON API, health and metrics listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "GRAYSCOPE_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Largest accepted request body, before and after decompression [default: 16MiB]
    #[arg(long, env = "GRAYSCOPE_MAX_REQUEST_BYTES", value_name = "SIZE")]
    pub max_request_bytes: Option<ByteSize>,
    /// A request's body (HTTP) or message (gRPC) must arrive within this long; a slower sender is
    /// answered 408 / DEADLINE_EXCEEDED and may retry. A connection that sends no request (or no
    /// complete HTTP/1.1 request head) within it is closed, idle keep-alive ones too [default: 30s]
    #[arg(long, env = "GRAYSCOPE_READ_TIMEOUT", value_name = "DURATION")]
    pub read_timeout: Option<Dur>,
    /// Requests decoded at once; more wait up to 200 ms with their bodies unread, then are refused,
    /// retryably. Bounds the memory requests in flight take [default: twice the workers, at least 4]
    #[arg(long, env = "GRAYSCOPE_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub max_concurrent_requests: Option<usize>,
    /// A trace is finalised after this long without new spans [default: 10s]
    #[arg(long, env = "GRAYSCOPE_TRACE_IDLE", value_name = "DURATION")]
    pub trace_idle: Option<Dur>,
    /// Spans held in memory at most; past it the least recently active traces are finalised early
    /// [default: 2000000]
    #[arg(long, env = "GRAYSCOPE_MAX_BUFFERED_SPANS", value_name = "N")]
    pub max_buffered_spans: Option<usize>,
    /// How long a span whose parent has not arrived when its trace is finalised waits for it
    /// before it is judged `broken_trace`; late children of a finalised trace are judged against
    /// their parents too. 0: judge it with its trace and keep no trace for late spans [default:
    /// 2m: a parent is exported after its slowest child, plus the batch delay (5 s) and exporter
    /// retries (Go's OTLP exporter gives up after 1 min)]
    #[arg(long, env = "GRAYSCOPE_ORPHAN_WAIT", value_name = "DURATION")]
    pub orphan_wait: Option<Dur>,
    /// Spans of finalised traces kept for their late spans at most (the waiting ones among
    /// them); past it the oldest are forgotten first, counted, and waiting spans are not judged
    /// [default: 1000000]
    #[arg(long, env = "GRAYSCOPE_MAX_KEPT_SPANS", value_name = "N")]
    pub max_kept_spans: Option<usize>,
    /// An instance stage counts as live this long after its last span [default: 15m]
    #[arg(long, env = "GRAYSCOPE_INSTANCE_TTL", value_name = "DURATION")]
    pub instance_ttl: Option<Dur>,
    /// How long a message's producer span is kept for consumers that link to it, and how long a
    /// consumer waits for the producer spans it links to (consumers lag) [default: 5m]
    #[arg(long, env = "GRAYSCOPE_LINK_WAIT", value_name = "DURATION")]
    pub link_wait: Option<Dur>,
    /// Producer spans kept for links at most; past it the oldest go, counted [default: 200000]
    #[arg(long, env = "GRAYSCOPE_MAX_LINK_PRODUCERS", value_name = "N")]
    pub max_link_producers: Option<usize>,
    /// Links of waiting consumer spans at most; past it the oldest waits end as unresolved,
    /// counted [default: 100000]
    #[arg(long, env = "GRAYSCOPE_MAX_LINK_WAITS", value_name = "N")]
    pub max_link_waits: Option<usize>,
    /// Address at which the other instances of a cluster reach this one's API (host:port)
    /// [default: the --http address]
    #[arg(long, env = "GRAYSCOPE_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// With a shared store, how often an instance renews its membership and shares what it saw
    /// [default: 2s]
    #[arg(long, env = "GRAYSCOPE_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub heartbeat_interval: Option<Dur>,
    /// After the instances behind the load balancer change, how long a span whose parent never
    /// arrives is `unverifiable` rather than a broken trace [default: trace-idle + 10s: the
    /// resolver's interval and noticing the change]
    #[arg(long, env = "GRAYSCOPE_REBALANCE_WINDOW", value_name = "DURATION")]
    pub rebalance_window: Option<Dur>,
    /// Verification workers (traces are sharded by trace id) [default: number of CPUs]
    #[arg(long, env = "GRAYSCOPE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Spans queued per worker before senders are told to retry [default: 262144]
    #[arg(long, env = "GRAYSCOPE_QUEUE_SPANS", value_name = "N")]
    pub queue_spans: Option<usize>,
    /// Spans of finalised traces queued for the store's writer before workers wait for it (and so
    /// senders are told to retry) [default: 524288]
    #[arg(long, env = "GRAYSCOPE_STORE_QUEUE_SPANS", value_name = "N")]
    pub store_queue_spans: Option<usize>,
    /// Where findings, edge counters and traces are kept: a directory (SQLite, one process), or
    /// postgres://user:password@host:port/db (shared by several instances) [default: ./grayscope-data]
    #[arg(long, env = "GRAYSCOPE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A finding is written to the store within this long of being produced [default: 1s]
    #[arg(long, env = "GRAYSCOPE_FLUSH_INTERVAL", value_name = "DURATION")]
    pub flush_interval: Option<Dur>,
    /// Stored data older than this is deleted [default: 7d]
    #[arg(long, env = "GRAYSCOPE_RETENTION", value_name = "DURATION")]
    pub retention: Option<Dur>,
    /// Past this size the store deletes its oldest data first [default: 10GiB]
    #[arg(long, env = "GRAYSCOPE_MAX_STORE_BYTES", value_name = "SIZE")]
    pub max_store_bytes: Option<ByteSize>,
    /// Share of clean traces whose spans are stored (traces with findings always are) [default: 0.01]
    #[arg(long, env = "GRAYSCOPE_SAMPLE_CLEAN", value_name = "RATIO")]
    pub sample_clean: Option<f64>,
    /// Distinct values per label of the verdict metrics; later ones are counted as `other`
    /// [default: 500]
    #[arg(long, env = "GRAYSCOPE_MAX_LABEL_VALUES", value_name = "N")]
    pub max_label_values: Option<usize>,
    /// Resource attribute key whose value groups services on the dashboard
    /// [default: service.namespace]
    #[arg(long, env = "GRAYSCOPE_GROUP_KEY", value_name = "KEY")]
    pub group_key: Option<String>,
    /// At SIGINT/SIGTERM, how long the whole stop may take: in-flight requests, finalising and the
    /// store's final write; what is unwritten by then is reported lost (exit status 1) [default: 10s]
    #[arg(long, env = "GRAYSCOPE_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<Dur>,
    /// Log filter, as RUST_LOG [default: info]
    #[arg(long, env = "GRAYSCOPE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityArgs,
}

/// `serve` settings with defaults applied.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeConfig {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub otlp_http_cors_origins: Vec<String>,
    pub http: SocketAddr,
    pub max_request_bytes: usize,
    pub read_timeout: Dur,
    pub max_concurrent_requests: usize,
    pub trace_idle: Dur,
    pub max_buffered_spans: usize,
    pub orphan_wait: Dur,
    pub max_kept_spans: usize,
    pub instance_ttl: Dur,
    pub link_wait: Dur,
    pub max_link_producers: usize,
    pub max_link_waits: usize,
    pub advertise: String,
    pub heartbeat_interval: Dur,
    pub rebalance_window: Dur,
    pub workers: usize,
    pub queue_spans: usize,
    pub store_queue_spans: usize,
    pub data: Data,
    pub flush_interval: Dur,
    pub retention: Dur,
    pub max_store_bytes: u64,
    pub sample_clean: f64,
    pub max_label_values: usize,
    pub group_key: String,
    pub shutdown_grace: Dur,
    pub log: String,
    #[serde(flatten)]
    pub verify: VerifyConfig,
    #[serde(flatten)]
    pub security: SecurityConfig,
}

impl ServeArgs {
    /// Applies the config file (if any) under the flags and environment, then the built-in
    /// defaults.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        self.resolve_over(ServeArgs::default())
    }

    /// Like [`ServeArgs::resolve`], with `defaults` between the config file and the built-in
    /// defaults: flag > environment > file > `defaults` > built-in. For the defaults of a way of
    /// running, such as `serve --demo`'s short trace-idle.
    pub fn resolve_over(self, defaults: ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let a = self.or(file).or(defaults);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let positive = |option: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    option,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        let nonzero = |option: &'static str, d: Dur| {
            if d.0.is_zero() {
                Err(ConfigError::Invalid {
                    option,
                    message: "must be longer than 0".into(),
                })
            } else {
                Ok(d)
            }
        };
        let trace_idle = a.trace_idle.unwrap_or(Dur(Duration::from_secs(10)));
        if trace_idle.0.is_zero() {
            return Err(ConfigError::Invalid {
                option: "trace-idle",
                message: "must be longer than 0".into(),
            });
        }
        let http = a.http.unwrap_or(([127, 0, 0, 1], 8080).into());
        let addrs = security::Addresses {
            otlp_grpc: a.otlp_grpc.unwrap_or(([127, 0, 0, 1], 4317).into()),
            otlp_http: a.otlp_http.unwrap_or(([127, 0, 0, 1], 4318).into()),
            http,
        };
        Ok(ServeConfig {
            otlp_grpc: addrs.otlp_grpc,
            otlp_http: addrs.otlp_http,
            otlp_http_cors_origins: cors_origins(a.otlp_http_cors_origins.unwrap_or_default())?,
            http,
            max_request_bytes: positive(
                "max-request-bytes",
                a.max_request_bytes
                    .map_or(16 << 20, |b| b.as_u64().min(usize::MAX as u64) as usize),
            )?,
            read_timeout: match a.read_timeout {
                Some(d) if d.0.is_zero() => {
                    return Err(ConfigError::Invalid {
                        option: "read-timeout",
                        message: "must be longer than 0".into(),
                    });
                }
                d => d.unwrap_or(Dur(Duration::from_secs(30))),
            },
            trace_idle,
            max_buffered_spans: positive(
                "max-buffered-spans",
                a.max_buffered_spans.unwrap_or(2_000_000),
            )?,
            orphan_wait: a.orphan_wait.unwrap_or(Dur(Duration::from_secs(2 * 60))),
            max_kept_spans: positive("max-kept-spans", a.max_kept_spans.unwrap_or(1_000_000))?,
            instance_ttl: a.instance_ttl.unwrap_or(Dur(Duration::from_secs(15 * 60))),
            link_wait: nonzero(
                "link-wait",
                a.link_wait.unwrap_or(Dur(Duration::from_secs(5 * 60))),
            )?,
            max_link_producers: positive(
                "max-link-producers",
                a.max_link_producers.unwrap_or(200_000),
            )?,
            max_link_waits: positive("max-link-waits", a.max_link_waits.unwrap_or(100_000))?,
            advertise: a.advertise.unwrap_or_else(|| http.to_string()),
            heartbeat_interval: nonzero(
                "heartbeat-interval",
                a.heartbeat_interval.unwrap_or(Dur(Duration::from_secs(2))),
            )?,
            rebalance_window: a
                .rebalance_window
                .unwrap_or(Dur(trace_idle.0 + Duration::from_secs(10))),
            workers: positive("workers", a.workers.unwrap_or(cpus))?,
            max_concurrent_requests: positive(
                "max-concurrent-requests",
                a.max_concurrent_requests
                    .unwrap_or_else(|| (2 * a.workers.unwrap_or(cpus)).max(4)),
            )?,
            queue_spans: positive("queue-spans", a.queue_spans.unwrap_or(262_144))?,
            store_queue_spans: positive(
                "store-queue-spans",
                a.store_queue_spans.unwrap_or(STORE_QUEUE_SPANS),
            )?,
            data: Data::of(a.data.unwrap_or_else(|| PathBuf::from("grayscope-data"))),
            flush_interval: nonzero(
                "flush-interval",
                a.flush_interval.unwrap_or(Dur(Duration::from_secs(1))),
            )?,
            retention: nonzero(
                "retention",
                a.retention
                    .unwrap_or(Dur(Duration::from_secs(7 * 24 * 3600))),
            )?,
            max_store_bytes: a
                .max_store_bytes
                .map_or(10 << 30, |b| b.as_u64())
                .max(1 << 20),
            max_label_values: positive("max-label-values", a.max_label_values.unwrap_or(500))?,
            sample_clean: match a.sample_clean.unwrap_or(0.01) {
                r if (0.0..=1.0).contains(&r) => r,
                r => {
                    return Err(ConfigError::Invalid {
                        option: "sample-clean",
                        message: format!("{r} is not a ratio from 0 to 1"),
                    });
                }
            },
            group_key: match a.group_key {
                Some(k) if k.is_empty() => {
                    return Err(ConfigError::Invalid {
                        option: "group-key",
                        message: "needs a resource attribute key".into(),
                    });
                }
                k => k.unwrap_or_else(|| crate::instances::DEFAULT_GROUP_KEY.into()),
            },
            shutdown_grace: a.shutdown_grace.unwrap_or(Dur(Duration::from_secs(10))),
            log: a.log.unwrap_or_else(|| "info".into()),
            verify: a.verify.resolve()?,
            security: a.security.resolve(&addrs)?,
        })
    }

    fn or(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            print_config: self.print_config,
            otlp_grpc: self.otlp_grpc.or(file.otlp_grpc),
            otlp_http: self.otlp_http.or(file.otlp_http),
            otlp_http_cors_origins: self.otlp_http_cors_origins.or(file.otlp_http_cors_origins),
            http: self.http.or(file.http),
            max_request_bytes: self.max_request_bytes.or(file.max_request_bytes),
            read_timeout: self.read_timeout.or(file.read_timeout),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests),
            trace_idle: self.trace_idle.or(file.trace_idle),
            max_buffered_spans: self.max_buffered_spans.or(file.max_buffered_spans),
            orphan_wait: self.orphan_wait.or(file.orphan_wait),
            max_kept_spans: self.max_kept_spans.or(file.max_kept_spans),
            instance_ttl: self.instance_ttl.or(file.instance_ttl),
            link_wait: self.link_wait.or(file.link_wait),
            max_link_producers: self.max_link_producers.or(file.max_link_producers),
            max_link_waits: self.max_link_waits.or(file.max_link_waits),
            advertise: self.advertise.or(file.advertise),
            heartbeat_interval: self.heartbeat_interval.or(file.heartbeat_interval),
            rebalance_window: self.rebalance_window.or(file.rebalance_window),
            workers: self.workers.or(file.workers),
            queue_spans: self.queue_spans.or(file.queue_spans),
            store_queue_spans: self.store_queue_spans.or(file.store_queue_spans),
            data: self.data.or(file.data),
            flush_interval: self.flush_interval.or(file.flush_interval),
            retention: self.retention.or(file.retention),
            max_store_bytes: self.max_store_bytes.or(file.max_store_bytes),
            sample_clean: self.sample_clean.or(file.sample_clean),
            max_label_values: self.max_label_values.or(file.max_label_values),
            group_key: self.group_key.or(file.group_key),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            log: self.log.or(file.log),
            verify: self.verify.or(file.verify),
            security: self.security.or(file.security),
        }
    }
}

/// Web origins as a browser sends them (`scheme://host[:port]`, no path), or `*`.
fn cors_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for o in &origins {
        let valid = o == "*"
            || url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.query().is_none()
            });
        if !valid {
            return Err(ConfigError::Invalid {
                option: "otlp-http-cors-origins",
                message: format!(
                    "'{o}' is not a web origin like https://shop.example.com or http://127.0.0.1:3000 (scheme, host and port, no path), or *"
                ),
            });
        }
    }
    Ok(origins)
}

/// The flags of [`ServeArgs`], to check file keys and environment variables against.
fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("serve"))
}

/// Reads a config file, rejecting keys that are not `serve` flags.
fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let serve = serve_command();
    for key in table.keys() {
        let known = serve
            .get_arguments()
            .any(|a| a.get_long() == Some(key.as_str()) && !NOT_FILE_KEYS.contains(&key.as_str()));
        if !known {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            });
        }
    }
    ServeArgs::deserialize(table).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
