//! Settings: every variable has a command-line flag, read by clap from the
//! environment. A bad value stops start-up with one line naming the variable.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use url::Url;

/// Where templates are looked for when TEMPLATES_DIR is not set: the path a
/// packager fixes at build time, else this checkout's `templates/`.
pub const DEFAULT_TEMPLATES_DIR: &str = match option_env!("MICROSERVICE_TEMPLATES_DIR") {
    Some(dir) => dir,
    None => concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
};

const SDK_VARIABLES: &str = "\
Also read by the OpenTelemetry SDK from the environment:
  OTEL_EXPORTER_OTLP_{TRACES,LOGS,METRICS}_ENDPOINT
                                       used exactly as given (overrides --otlp-endpoint)
  OTEL_EXPORTER_OTLP_[<SIGNAL>_]HEADERS, _TIMEOUT (10000 ms), _COMPRESSION
  OTEL_RESOURCE_ATTRIBUTES             extra resource attributes (key=value,...)
  OTEL_BSP_SCHEDULE_DELAY (5000 ms), OTEL_BSP_MAX_QUEUE_SIZE (2048),
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE (128 here; the SDK says 512), OTEL_BSP_EXPORT_TIMEOUT
  OTEL_BLRP_SCHEDULE_DELAY (1000 ms), OTEL_BLRP_MAX_QUEUE_SIZE (2048),
  OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (128 here too), ...: the same for log records
  OTEL_METRIC_EXPORT_TIMEOUT (30000 ms)
  RUST_LOG                             log filter (default: info)";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "microservice",
    version,
    about = "One hop of a traced microservice chain: waits, calls the next hop(s), renders its part and exports OpenTelemetry spans.",
    after_help = SDK_VARIABLES
)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HTTP_HOST", default_value = "127.0.0.1")]
    pub http_host: String,

    /// Port to listen on; 0 picks a free port (logged at start-up).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080, value_parser = parse_port, allow_negative_numbers = true)]
    pub http_port: u16,

    /// The service.name of this hop's spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "microservice", value_parser = non_empty)]
    pub service_name: String,

    /// What the page shows for this hop [default: the service name].
    #[arg(long, env = "TITLE")]
    pub title: Option<String>,

    /// A sentence about this hop, shown under its title and in its JSON report.
    #[arg(long, env = "DESCRIPTION")]
    pub description: Option<String>,

    /// Simulated work before calling the next hop, in milliseconds.
    #[arg(long, env = "RESPONSE_TIME", default_value_t = 0, value_parser = parse_millis, allow_negative_numbers = true)]
    pub response_time: u64,

    /// Uniform jitter around RESPONSE_TIME, ± milliseconds.
    #[arg(long, env = "RESPONSE_TIME_JITTER", default_value_t = 0, value_parser = parse_millis, allow_negative_numbers = true)]
    pub response_time_jitter: u64,

    /// Next hop(s): http URLs, comma-separated for fan-out.
    #[arg(long, env = "EXTERNAL_CALL_URL", value_parser = parse_call_urls, default_value = "")]
    pub external_call_url: CallUrls,

    /// How several next hops are called.
    #[arg(long, env = "EXTERNAL_CALL_MODE", value_enum, ignore_case = true, default_value_t = CallMode::Sequential)]
    pub external_call_mode: CallMode,

    /// HTTP method of the calls to the next hop(s).
    #[arg(long, env = "EXTERNAL_CALL_METHOD", value_enum, ignore_case = true, default_value_t = CallMethod::Get)]
    pub external_call_method: CallMethod,

    /// Timeout of each call to a next hop, in milliseconds.
    #[arg(long, env = "EXTERNAL_CALL_TIMEOUT", default_value_t = 10_000, value_parser = parse_timeout, allow_negative_numbers = true)]
    pub external_call_timeout: u64,

    /// Retries of a call to a next hop that failed in a way worth retrying (no
    /// answer, a timeout, 5xx but 508, 408, 429), each with a CLIENT span of
    /// its own; 0–10.
    #[arg(long, env = "EXTERNAL_CALL_RETRIES", default_value_t = 0, value_parser = parse_retries, allow_negative_numbers = true)]
    pub external_call_retries: u32,

    /// Whether calls to the next hop(s) carry the trace context (W3C
    /// traceparent and baggage). `none` plays an uninstrumented client: the
    /// next hop starts a trace of its own.
    #[arg(long, env = "PROPAGATION", value_enum, ignore_case = true, default_value_t = Propagation::W3c)]
    pub propagation: Propagation,

    /// Entries this hop adds to the W3C baggage it passes on, `key=value,...`.
    #[arg(long, env = "BAGGAGE", value_parser = parse_baggage, default_value = "")]
    pub baggage: BaggageEntries,

    /// Share of requests that fail on purpose (500) after doing their work, 0.0–1.0.
    #[arg(long, env = "ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate, allow_negative_numbers = true)]
    pub error_rate: f64,

    /// Refuse (508) a request that has already passed this many hops.
    #[arg(long, env = "MAX_HOPS", default_value_t = 16, value_parser = parse_max_hops, allow_negative_numbers = true)]
    pub max_hops: u32,

    /// Directory holding page.html and part.html.
    #[arg(long, env = "TEMPLATES_DIR", default_value = DEFAULT_TEMPLATES_DIR)]
    pub templates_dir: PathBuf,

    /// Link to a trace viewer; `{trace_id}` is replaced by the trace id.
    #[arg(long, env = "TRACE_LINK", value_parser = parse_trace_link)]
    pub trace_link: Option<String>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where spans go: OTLP, human-readable lines on stderr, or nowhere.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_enum, default_value_t = Exporter::Otlp)]
    pub traces_exporter: Exporter,

    /// Where log events go besides stdout, each with the trace and span id of
    /// its request: OTLP, lines on stderr, or nowhere.
    #[arg(long, env = "OTEL_LOGS_EXPORTER", value_enum, default_value_t = Exporter::Otlp)]
    pub logs_exporter: Exporter,

    /// Where request metrics (HTTP durations, injected failures) go: OTLP,
    /// lines on stderr, or nowhere.
    #[arg(long, env = "OTEL_METRICS_EXPORTER", value_enum, default_value_t = Exporter::Otlp)]
    pub metrics_exporter: Exporter,

    /// Time between two metric exports, in milliseconds.
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60_000, value_parser = parse_timeout, allow_negative_numbers = true)]
    pub metric_export_interval: u64,

    /// Turn OpenTelemetry off entirely (trace context is still passed on).
    #[arg(long, env = "OTEL_SDK_DISABLED", value_parser = parse_bool, default_value = "false")]
    pub sdk_disabled: bool,

    /// OTLP collector base URL [default: http://localhost:4318, or :4317 for grpc].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<Url>,

    /// OTLP transport for all signals.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL")]
    pub otlp_protocol: Option<OtlpProtocol>,

    /// OTLP transport for traces (overrides --otlp-protocol).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")]
    pub otlp_traces_protocol: Option<OtlpProtocol>,

    /// OTLP transport for logs (overrides --otlp-protocol).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")]
    pub otlp_logs_protocol: Option<OtlpProtocol>,

    /// OTLP transport for metrics (overrides --otlp-protocol).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")]
    pub otlp_metrics_protocol: Option<OtlpProtocol>,

    /// Sampler [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum)]
    pub traces_sampler: Option<SamplerKind>,

    /// Ratio for the traceidratio samplers, 0.0–1.0.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_rate, allow_negative_numbers = true)]
    pub traces_sampler_arg: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallUrls(pub Vec<Url>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallMode {
    Sequential,
    Parallel,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaggageEntries(pub Vec<(String, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Propagation {
    /// W3C Trace Context and Baggage.
    W3c,
    /// Nothing: calls carry no trace context.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallMethod {
    #[value(name = "GET")]
    Get,
    #[value(name = "POST")]
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A signal's exporter, as OTEL_{TRACES,LOGS,METRICS}_EXPORTER name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Exporter {
    Otlp,
    Console,
    #[value(name = "none")]
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

/// The three OpenTelemetry signals, each exported on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

/// A configuration error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

/// What the command line asked for besides running.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Settings>),
    /// `--help` or `--version`: print this text and exit 0.
    Print(String),
}

impl Settings {
    /// Parses flags and environment. A value error names the flag when
    /// the value came from one, else the variable.
    pub fn parse_from<I, T>(args: I) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Settings::command();
        let matches = match command.try_get_matches_from_mut(&args) {
            Ok(matches) => matches,
            Err(error) => return help_or_error(&command, &args, error),
        };
        let settings = Settings::from_arg_matches(&matches)
            .map_err(|error| describe_clap_error(&command, &args, error))?;
        settings.check_combinations()?;
        Ok(Invocation::Run(Box::new(settings)))
    }

    pub fn title(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.service_name)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.external_call_timeout)
    }

    /// The transport of one signal: its own setting, else the common one,
    /// else the OpenTelemetry specification's default.
    pub fn otlp_protocol(&self, signal: Signal) -> OtlpProtocol {
        let own = match signal {
            Signal::Traces => self.otlp_traces_protocol,
            Signal::Logs => self.otlp_logs_protocol,
            Signal::Metrics => self.otlp_metrics_protocol,
        };
        own.or(self.otlp_protocol)
            .unwrap_or(OtlpProtocol::HttpProtobuf)
    }

    pub fn metric_export_interval(&self) -> Duration {
        Duration::from_millis(self.metric_export_interval)
    }

    fn check_combinations(&self) -> Result<(), ConfigError> {
        let needs_ratio = matches!(
            self.traces_sampler,
            Some(SamplerKind::Traceidratio | SamplerKind::ParentbasedTraceidratio)
        );
        if needs_ratio && self.traces_sampler_arg.is_none() {
            return Err(ConfigError {
                variable: "OTEL_TRACES_SAMPLER_ARG".into(),
                value: String::new(),
                reason: "a ratio between 0.0 and 1.0 is needed by the traceidratio samplers".into(),
            });
        }
        Ok(())
    }
}

fn help_or_error(
    command: &clap::Command,
    args: &[OsString],
    error: clap::Error,
) -> Result<Invocation, ConfigError> {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            Ok(Invocation::Print(error.render().to_string()))
        }
        _ => Err(describe_clap_error(command, args, error)),
    }
}

/// Turns clap's multi-line message into `VARIABLE="value": reason`, or
/// `--flag="value": reason` when the value was given as that flag.
fn describe_clap_error(
    command: &clap::Command,
    args: &[OsString],
    error: clap::Error,
) -> ConfigError {
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => String::new(),
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let long = flag.split_whitespace().next().unwrap_or_default();
    let typed = args.iter().skip(1).any(|arg| {
        arg.to_str().is_some_and(|arg| {
            arg == long
                || arg
                    .strip_prefix(long)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    });
    let variable = command
        .get_arguments()
        .find(|arg| arg.get_long().is_some_and(|l| long == format!("--{l}")))
        .and_then(|arg| arg.get_env())
        .filter(|_| !typed)
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            if long.is_empty() {
                flag.clone()
            } else {
                long.to_string()
            }
        });
    let reason = match (error.kind(), error.get(ContextKind::ValidValue)) {
        (_, Some(ContextValue::Strings(valid))) if !valid.is_empty() => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_else(|| first_line(&error.render().to_string())),
    };
    ConfigError {
        variable,
        value,
        reason,
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_string())
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err("must be a number from 0.0 to 1.0".into()),
    }
}

/// A whole number from `min` to `max`; `unit` says what it counts.
/// Whatever is wrong with the value (a sign, a fraction, a word, too many
/// digits), the message says what is allowed.
fn whole(value: &str, unit: &str, min: u64, max: u64) -> Result<u64, String> {
    let counted = if unit.is_empty() {
        "a whole number".to_string()
    } else {
        format!("a whole number of {unit}")
    };
    let allowed = if max >= u64::from(u32::MAX) {
        format!("must be {counted}, {min} or more")
    } else {
        format!("must be {counted} from {min} to {max}")
    };
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(allowed);
    }
    match value.parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        Ok(number) if number < min || max < u64::from(u32::MAX) => Err(allowed),
        _ => Err(format!("{allowed}, at most {max}")),
    }
}

fn parse_millis(value: &str) -> Result<u64, String> {
    whole(value, "milliseconds", 0, u64::MAX)
}

fn parse_timeout(value: &str) -> Result<u64, String> {
    whole(value, "milliseconds", 1, u64::MAX)
}

fn parse_retries(value: &str) -> Result<u32, String> {
    whole(value, "", 0, 10).map(|n| n as u32)
}

fn parse_max_hops(value: &str) -> Result<u32, String> {
    whole(value, "hops", 0, u64::from(u32::MAX)).map(|n| n as u32)
}

fn parse_port(value: &str) -> Result<u16, String> {
    whole(value, "", 0, u64::from(u16::MAX))
        .map(|n| n as u16)
        .map_err(|reason| format!("{reason} (0 picks a free port)"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_call_urls(value: &str) -> Result<CallUrls, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let url = Url::parse(part).map_err(|e| format!("{part:?} is not a URL ({e})"))?;
            match url.scheme() {
                "http" => Ok(url),
                "https" => Err(format!(
                    "{part:?}: https is not supported (this build has no TLS; use http)"
                )),
                other => Err(format!("{part:?}: scheme {other:?} is not http")),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CallUrls)
}

/// `key=value,...` as in a W3C `baggage` header, without properties and
/// percent-encoding: keys are tokens, values plain text without `,;=`.
fn parse_baggage(value: &str) -> Result<BaggageEntries, String> {
    let is_key = |key: &str| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let is_value = |value: &str| {
        !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_graphic() && !",;=\\\"".contains(c))
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if is_key(key.trim()) && is_value(value.trim()) => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(format!(
                "{entry:?} is not key=value (key of letters, digits, . _ -; value of printable ASCII without , ; = \\ \")"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(BaggageEntries)
}

fn parse_endpoint(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() == "http" {
        Ok(url)
    } else {
        Err(format!(
            "scheme {:?} is not supported (http only; this build has no TLS)",
            url.scheme()
        ))
    }
}

fn parse_trace_link(value: &str) -> Result<String, String> {
    if !value.contains("{trace_id}") {
        return Err("must contain {trace_id}".into());
    }
    let probe = value.replace("{trace_id}", "0");
    match Url::parse(&probe) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(value.to_string()),
        Ok(url) => Err(format!("scheme {:?} is not http or https", url.scheme())),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}
