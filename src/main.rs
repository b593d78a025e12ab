//! The `tandem` binary: parse settings, set up logging, build and run the application.

use clap::Parser;
use tandem::config::Settings;
use tandem::startup::Application;

/// Descriptors besides client sockets: the listener, the store's connections, logs, and so on.
const FD_MARGIN: u64 = 128;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    let settings = Settings::parse();
    tandem::telemetry::init(&settings);
    tracing::info!(
        bind = %settings.bind,
        database = %tandem::store::redact(&settings.database_url),
        "starting tandem"
    );
    // Each connection is a socket: raise the soft limit on open files (often 1024) as far as
    // the hard limit allows, and say so if it is still below the connection limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < settings.max_connections as u64 + FD_MARGIN => tracing::warn!(
            open_files = limit,
            max_connections = settings.max_connections,
            "the open-file limit is below --max-connections; raise it (ulimit -n) or lower that"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read or raise the open-file limit"),
    }
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "serving");
    app.run_until_stopped().await
}

/// glibc gives threads up to eight malloc arenas per core, and each arena keeps what is freed
/// into it. Documents, sessions and the store's connections allocate on many threads, so that is
/// memory held for nothing: about 4 KiB per loaded document (load 6 in BENCHMARKS.md). One arena
/// per core, unless `MALLOC_ARENA_MAX` asks for another number.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a parameter of the allocator, which it applies to arenas it
    // creates from then on; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
