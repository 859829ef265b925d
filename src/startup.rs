//! Start-up: checks the templates, installs telemetry, binds the listener
//! and serves until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use poem::Server;
use poem::http::HeaderValue;
use poem::listener::{Acceptor as _, AcceptorExt as _, BoxAcceptor, Listener as _, TcpListener};

use crate::configuration::{ConfigError, Settings};
use crate::delay::SimulatedWork;
use crate::downstream::Downstream;
use crate::templates::Templates;
use crate::{routes, shutdown, telemetry};

/// What every request handler shares.
pub struct AppState {
    pub service: String,
    pub title: String,
    pub description: Option<String>,
    pub work: SimulatedWork,
    pub downstream: Downstream,
    pub templates: Templates,
    pub error_rate: f64,
    pub max_hops: u32,
    pub trace_link: Option<String>,
    /// BAGGAGE: entries this hop adds to the baggage it passes on.
    pub baggage: Arc<[(String, String)]>,
    /// Marks answers as parts of the chain; the value names this hop.
    pub part_header: HeaderValue,
}

impl AppState {
    pub fn new(settings: &Settings, templates: Templates) -> anyhow::Result<Self> {
        Ok(Self {
            service: settings.service_name.clone(),
            title: settings.title().to_string(),
            description: settings.description.clone(),
            work: SimulatedWork {
                response_time_ms: settings.response_time,
                jitter_ms: settings.response_time_jitter,
            },
            downstream: Downstream::new(settings).context("cannot build the HTTP client")?,
            templates,
            error_rate: settings.error_rate,
            max_hops: settings.max_hops,
            trace_link: settings.trace_link.clone(),
            baggage: settings.baggage.0.clone().into(),
            part_header: HeaderValue::from_str(&settings.service_name)
                .unwrap_or_else(|_| HeaderValue::from_static("microservice")),
        })
    }
}

/// Why the service did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad setting: exit code 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn run(settings: Settings) -> Result<(), StartError> {
    let templates = Templates::open(&settings.templates_dir).map_err(|error| ConfigError {
        variable: "TEMPLATES_DIR".into(),
        value: settings.templates_dir.display().to_string(),
        reason: crate::templates::describe(&error),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(settings, templates))?;
    Ok(())
}

async fn serve(settings: Settings, templates: Templates) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&settings)?;
    // Before anyone can know the port: a SIGTERM from then on stops gracefully.
    let stop = shutdown::listen();
    let application = Application::bind(&settings, templates).await?;
    tracing::info!(
        url = %format!("http://{}/", application.local_addr()),
        service = %settings.service_name,
        next = ?settings.external_call_url.0.iter().map(url::Url::as_str).collect::<Vec<_>>(),
        "listening"
    );
    let served = application.run_until_stopped(stop).await;
    telemetry.shutdown(shutdown::FLUSH_TIMEOUT).await;
    served.context("the HTTP server failed")
}

/// The bound listener and the state it serves.
pub struct Application {
    acceptor: BoxAcceptor,
    local_addr: SocketAddr,
    state: Arc<AppState>,
}

impl Application {
    pub async fn bind(settings: &Settings, templates: Templates) -> anyhow::Result<Self> {
        let state = Arc::new(AppState::new(settings, templates)?);
        let (host, port) = (settings.http_host.as_str(), settings.http_port);
        let acceptor = TcpListener::bind((host, port))
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {host}:{port} (HTTP_HOST, HTTP_PORT)"))?;
        let local_addr = acceptor
            .local_addr()
            .iter()
            .find_map(|addr| addr.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        Ok(Self {
            acceptor: acceptor.boxed(),
            local_addr,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `signal`, then drains requests in flight.
    pub async fn run_until_stopped(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(
                routes::router(self.state),
                signal,
                Some(shutdown::DRAIN_TIMEOUT),
            )
            .await
    }
}
