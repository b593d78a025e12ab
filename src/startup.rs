//! Building and running the application: store, writer, registry, HTTP server, and the order in
//! which they shut down.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use actix::Actor;
use std::rc::Rc;

use actix_http::body::MessageBody;
use actix_http::{HttpService, KeepAlive};
use actix_service::{IntoServiceFactory, map_config};
use actix_web::dev::{
    AppConfig, Server, ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse, fn_factory,
    fn_service,
};
use actix_web::{App, web};
use anyhow::Context;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::client_addr::TrustedProxies;
use crate::collab::Registry;
use crate::collab::document::DocSettings;
use crate::collab::peers::{RegistrySink, WatchNow};
use crate::collab::registry::ShutdownAll;
use crate::config::Settings;
use crate::domain::HostRule;
use crate::persist::PersistHandle;
use crate::routes;
use crate::state::AppState;
use crate::store;
use crate::webhooks::Webhooks;
use crate::ws::limits::ConnectionLimits;
use crate::ws::outbound::OpenSockets;

/// How long open HTTP connections get to finish once documents are flushed.
const HTTP_SHUTDOWN_TIMEOUT: u64 = 5;

/// Asks a running application to shut down as SIGTERM would.
#[derive(Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// A built, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    writer: tokio::task::JoinHandle<()>,
    persist: PersistHandle,
    shutdown: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl Application {
    /// Connects the store (migrating it), starts the writer and the registry, and binds the port
    /// (port 0 picks a free one). Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        refuse_open_to_the_network(&settings)?;
        let store = store::connect(&settings.database_url)
            .await
            .with_context(|| {
                format!(
                    "Failed to open the store at {}",
                    store::redact(&settings.database_url)
                )
            })?;
        let auth = Arc::new(Auth::from_settings(&settings, store.clone()).await?);
        if !auth.enabled() {
            tracing::warn!(
                "access control is off: anyone who can reach {} can read and edit every document",
                settings.bind
            );
        }
        let limits = ConnectionLimits::new(
            settings.max_connections,
            settings.max_connections_per_doc,
            settings.max_connections_per_ip,
        );
        if !settings.webhook_urls.is_empty() && settings.webhook_secret.is_none() {
            tracing::warn!("webhooks are sent unsigned: set --webhook-secret");
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let webhooks = Webhooks::new(
            settings.webhook_urls.clone(),
            settings.webhook_secret.clone(),
            settings.webhook_max_backlog,
            store.clone(),
            metrics.clone(),
        );
        crate::webhooks::spawn_dispatcher(webhooks.clone());
        let bus =
            Bus::for_settings(settings.redis_url.as_deref(), store.as_ref(), &metrics).await?;
        let tap = bus
            .clone()
            .map(|bus| Arc::new(bus) as Arc<dyn crate::persist::CommitTap>);
        let (persist, writer) =
            PersistHandle::start(store.clone(), webhooks.clone(), metrics.clone(), tap);
        let registry = Registry::new(
            store.clone(),
            persist.clone(),
            webhooks.clone(),
            DocSettings {
                idle_unload_delay: settings.idle_unload_delay,
                compact_after_updates: settings.compact_after_updates.max(1),
                compact_after_bytes: settings.compact_after_bytes.max(1),
                awareness_timeout: settings.awareness_timeout,
                auto_version_after: settings.auto_version_after,
                auto_version_retention: settings.auto_version_retention,
                max_document_size: settings.max_document_size,
                max_presence_states: settings.max_presence_states,
                update_cost_budget: settings.update_cost_budget,
                webhooks: webhooks.enabled(),
                shared_log: store.shares_log(),
            },
            metrics.clone(),
            bus.clone(),
        )
        .start();
        if store.shares_log() {
            crate::auth::revocation_watch::spawn(auth.clone(), registry.clone());
        }
        if let Some(bus) = &bus {
            let watch = registry.clone();
            bus.listen(
                Arc::new(RegistrySink(registry.clone())),
                Arc::new(move || watch.do_send(WatchNow)),
            );
        }
        let listener =
            bind(settings.bind).with_context(|| format!("Failed to bind {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let proxies = TrustedProxies::from_args(&settings.trusted_proxies);
        let hosts = HostRule::new(&settings.public_hosts, auth.enabled());
        if hosts.enforced() && !settings.bind.ip().is_loopback() {
            tracing::info!(
                public_hosts = ?settings.public_hosts,
                "requests are answered under loopback names, IP addresses and --public-host \
                 names only"
            );
        }
        let state = web::Data::new(AppState {
            registry,
            store,
            webhooks,
            settings: Arc::new(settings),
            auth,
            limits,
            store_health: persist.health().clone(),
            metrics,
            sockets: Arc::new(OpenSockets::default()),
            proxies,
            hosts,
            bus,
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        });
        let server = serve(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
            writer,
            persist,
            shutdown: watch::channel(false),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that shuts the application down like SIGTERM (for embedding and tests).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.shutdown.0.clone())
    }

    /// Serves until SIGTERM, SIGINT or the trigger; then stops accepting, closes sessions with
    /// 1001, flushes and compacts every document, and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            state,
            writer,
            persist,
            shutdown: (_keep_sender, mut trigger),
            ..
        } = self;
        let handle = server.handle();
        let serving = actix_web::rt::spawn(server);
        tokio::select! {
            reason = wait_for_signal() => tracing::info!(signal = reason, "shutting down"),
            _ = trigger.wait_for(|stop| *stop) => tracing::info!("shutdown requested"),
        }
        stop(handle, &state, persist, writer).await;
        serving.await.context("Failed to join the HTTP server")??;
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The HTTP application: every route, with its middleware.
fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_limit = state.settings.max_body_size;
    let origins = state.settings.allowed_origins.clone();
    App::new()
        .wrap(cors(&origins))
        // Before CORS answers a preflight, and inside the logger so that refusals are logged.
        .wrap(actix_web::middleware::from_fn(crate::guard::guard))
        .wrap(tracing_actix_web::TracingLogger::<
            crate::telemetry::RedactedRootSpan,
        >::new())
        .app_data(state)
        .service(routes::health::healthz)
        .service(routes::health::readyz)
        .service(routes::health::metrics)
        .app_data(json_config(body_limit))
        .app_data(query_config())
        .app_data(path_config())
        .app_data(web::PayloadConfig::default().limit(body_limit))
        .service(crate::ws::upgrade::connect_hocuspocus)
        .service(crate::ws::upgrade::connect)
        .service(routes::access::issue)
        .service(routes::access::check)
        .service(routes::access::disconnect)
        .service(routes::docs::list)
        .service(routes::docs::create)
        .service(routes::docs::remove)
        .service(routes::docs::get_one)
        .service(routes::updates::get_update)
        .service(routes::updates::get_content)
        .service(routes::rich::put_content)
        .service(routes::updates::post_text)
        .service(routes::versions::list)
        .service(routes::versions::create)
        .service(routes::versions::get_one)
        .service(routes::versions::restore)
        .service(routes::openapi::spec)
        .service(routes::openapi::reference())
        .service(routes::updates::post_update)
        .service(routes::static_files::index)
        .service(routes::static_files::editor)
        .service(
            web::scope("/assets")
                .wrap(actix_web::middleware::Compress::default())
                .service(routes::static_files::asset),
        )
}

/// The HTTP server on `listener`, one application per worker thread. WebSocket handshakes go to
/// the upgrade service ([`crate::ws::upgrade::upgrade`]), which answers them with a second instance of
/// the same application and keeps the socket of those it accepts.
fn serve(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let local = listener.local_addr()?;
    Ok(Server::build()
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_TIMEOUT)
        .listen("tandem", listener, move || {
            let upgrade_state = state.clone();
            let upgrade = fn_factory(move || {
                let factory = app(upgrade_state.clone()).into_factory();
                let state = upgrade_state.clone();
                async move {
                    let app = Rc::new(factory.new_service(AppConfig::default()).await?);
                    Ok::<_, ()>(fn_service(move |(request, framed)| {
                        crate::ws::upgrade::upgrade(app.clone(), state.clone(), request, framed)
                    }))
                }
            });
            HttpService::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(local)
                // Updates are small and latency matters; writes are batched by the server.
                .tcp_nodelay(true)
                .upgrade(upgrade)
                .finish(map_config(app(state.clone()), |_| AppConfig::default()))
                .tcp()
        })?
        .run())
}

/// Without an operator secret every document is open to whoever can connect: allowed on a
/// loopback address (a developer's machine), and elsewhere only when explicitly asked for.
fn refuse_open_to_the_network(settings: &Settings) -> anyhow::Result<()> {
    let has_secret = settings
        .auth_secret
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty())
        || settings.auth_secret_file.is_some();
    if !has_secret && !settings.bind.ip().is_loopback() && !settings.insecure_no_auth {
        anyhow::bail!(
            "refusing to serve {} without access control: anyone reaching it could read and \
             edit every document. Set --auth-secret (TANDEM_AUTH_SECRET) and --api-key, bind a \
             loopback address, or pass --insecure-no-auth if a proxy in front authenticates",
            settings.bind
        );
    }
    Ok(())
}

/// CORS for the REST API: browsers on the allowed origins may call it (and send an API key).
fn cors(allowed: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
        ])
        .max_age(3600);
    for origin in allowed {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin.trim_end_matches('/'))
        };
    }
    cors
}

/// Malformed or oversized JSON bodies are answered with problem JSON like every other error.
/// A JSON body may be as large as a WebSocket message (it can carry a document's text).
fn json_config(limit: usize) -> web::JsonConfig {
    use actix_web::error::JsonPayloadError;
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _| match error {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                crate::error::ApiError::TooLarge(limit).into()
            }
            other => crate::error::ApiError::BadRequest(other.to_string()).into(),
        })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|error, _| crate::error::ApiError::BadRequest(error.to_string()).into())
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|error, _| crate::error::ApiError::BadRequest(error.to_string()).into())
}

/// Binds with `SO_REUSEADDR`, so a restarted server can take its port back at once even while
/// connections of the previous process linger in TIME_WAIT.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn stop(
    handle: ServerHandle,
    state: &AppState,
    persist: PersistHandle,
    writer: tokio::task::JoinHandle<()>,
) {
    state.begin_shutdown();
    handle.pause().await;
    // How long each document gets to flush and compact (they do it together), and then the
    // last writes: a document not done by then is skipped and named in the log.
    let deadline = state.settings.shutdown_timeout;
    let shutdown = ShutdownAll { deadline };
    // The registry answers within the deadline (twice: each document's, then the last writes').
    let skipped = match state.registry.send(shutdown).await {
        Ok(skipped) if skipped.is_empty() => {
            tracing::info!("all documents flushed");
            0
        }
        Ok(skipped) => {
            tracing::error!(
                skipped = skipped.len(),
                "some documents were not flushed in time (each is named above)"
            );
            skipped.len()
        }
        Err(error) => {
            tracing::error!(%error, "registry unavailable at shutdown");
            1
        }
    };
    // Every session was sent its close frame: give the sockets time to write it.
    let closing = state.sockets.count();
    if tokio::time::timeout(
        Duration::from_secs(HTTP_SHUTDOWN_TIMEOUT),
        state.sockets.wait_idle(),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            closing,
            open = state.sockets.count(),
            "some WebSockets were still closing at shutdown"
        );
    }
    handle.stop(true).await;
    // With the registry and its documents stopped, this was the last handle: the writer drains
    // whatever is left and ends. A skipped document still holds one, so then the writer is only
    // given a moment for what the barrier above left.
    drop(persist);
    let writer_deadline = if skipped == 0 {
        deadline
    } else {
        Duration::from_secs(HTTP_SHUTDOWN_TIMEOUT)
    };
    if tokio::time::timeout(writer_deadline, writer).await.is_err() && skipped == 0 {
        tracing::error!("the persistence writer did not finish in time");
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
