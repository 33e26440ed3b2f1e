//! Logging and tracing set-up. `RUST_LOG` filters (default `info`), logs go to stderr.
//!
//! With `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) the same spans, the one per
//! consumed message included, are also exported in batches over OTLP/HTTP with protobuf
//! bodies to `<endpoint>/v1/traces`, which any OpenTelemetry collector, Jaeger or Tempo
//! accepts. The exporter's other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`) apply as usual.

use std::time::Duration;

use clap::Parser;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter, fmt};

use crate::{Error, Result};

/// The name of the runtime's span per consumed message.
pub const MESSAGE_SPAN: &str = "message";

/// How long shutting down may wait for the last batch to reach the collector: long enough
/// for a slow collector, short enough that an unreachable one does not hold up an exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go besides stderr. Global, so `driftline --otlp-endpoint .. monitor` and
/// `driftline monitor --otlp-endpoint ..` both work.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318;
    /// they are posted to <URL>/v1/traces. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the exported spans carry.
    #[arg(
        long,
        env = "OTEL_SERVICE_NAME",
        default_value = "driftline",
        global = true
    )]
    pub service_name: String,
}

impl TelemetryArgs {
    /// The settings from the environment alone, with the flags' defaults, for programs
    /// that take no telemetry flags.
    pub fn from_env() -> Result<Self> {
        #[derive(Parser)]
        struct EnvOnly {
            #[command(flatten)]
            telemetry: TelemetryArgs,
        }
        EnvOnly::try_parse_from(["driftline"])
            .map(|c| c.telemetry)
            .map_err(|e| Error::Telemetry(e.to_string()))
    }
}

/// Keeps the span exporter running; dropping it (or [`Telemetry::shutdown`]) exports the
/// spans still queued. Hold it until `main` returns: the global subscriber keeps the
/// exporter alive forever, so nothing else flushes the last batch.
#[must_use = "dropping the guard stops span export"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the queued spans and stops the exporter, reporting a failure to flush.
    pub fn shutdown(mut self) -> Result<()> {
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        match self.provider.take() {
            Some(provider) => provider
                .shutdown_with_timeout(FLUSH_TIMEOUT)
                .map_err(|e| Error::Telemetry(format!("flushing spans: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "spans lost at exit");
        }
    }
}

/// Installs the global subscriber: logs to stderr, and spans to the OTLP endpoint if one
/// is set.
pub fn init(args: &TelemetryArgs) -> Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    // The log lines leave out the span per consumed message: formatting its fields for
    // every message cost about a microsecond, a sixth of the predictor's work. They carry
    // the batch's span instead, and a dead letter says its own position.
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter::filter_fn(|meta| {
            !(meta.is_span() && meta.name() == MESSAGE_SPAN)
        }));
    let provider = args
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| tracer_provider(endpoint, &args.service_name))
        .transpose()?;
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("driftline")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
    // A subscriber set earlier (a test harness, an embedding program) keeps its place; that
    // is only worth failing for when spans were asked for and would silently go nowhere.
    if let (Err(e), Some(_)) = (installed, &provider) {
        return Err(Error::Telemetry(format!(
            "cannot install the span exporter: {e}"
        )));
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        tracing::info!(%endpoint, service = %args.service_name, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

/// [`init`] with [`TelemetryArgs::from_env`].
pub fn init_from_env() -> Result<Telemetry> {
    init(&TelemetryArgs::from_env()?)
}

fn tracer_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider> {
    // The standard variable names the collector's base URL; each signal has its own path.
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| Error::Telemetry(format!("OTLP exporter for {endpoint}: {e}")))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build())
}
