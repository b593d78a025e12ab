//! `tandem-load`: a load generator for any y-websocket (or hocuspocus) server.
//!
//! D documents × W writers × K readers. Writers insert short strings into the Y.Text
//! `content` at a fixed rate and send them as sync Update messages; readers measure the
//! end-to-end latency (writer send → reader receive) of every update, matched by the writer's
//! (client id, clock). Everything runs in one process, so no clock synchronisation is needed.
//! Optionally measures the cold load of a large document first (`--cold-load-bytes`).
//!
//! For memory measurements, `--rate 0` makes every client idle (connect, sync, hold, close) and
//! `--fill-bytes N` has each writer load its document with N bytes of text before the run. The
//! line `tandem-load: holding` on stderr marks the start of the measured window, when every
//! client is set up.
//!
//! `--protocol hocuspocus` speaks the `@hocuspocus/server` framing instead: one endpoint for all
//! documents, every message prefixed with the document name and a hocuspocus message type, and
//! an Auth message before the sync.
//!
//! Prints a human-readable summary and then one JSON line with stable keys.
//!
//! # Layout
//! - `cli`: the options and their checks.
//! - `protocol`: framing for y-websocket and hocuspocus, and decoding the server's frames.
//! - `client`: one connection's set-up, keepalives, confirmed pushes and close.
//! - `state`: what the coordinator and the client tasks share.
//! - `reader`, `writer`: the two kinds of client task.
//! - `cold`: the cold load of a large document.
//! - `run`: the coordinator: spawns the clients, drives the phases, drains and collects.
//! - `report`: the human-readable summary and the JSON line.

mod cli;
mod client;
mod cold;
mod protocol;
mod reader;
mod report;
mod run;
mod state;
mod writer;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(msg) = args.problem() {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    let clients = args.docs * (args.writers + args.readers);
    // Every client holds a socket, and the usual soft limit (1024) is far below the 10,000
    // connections of a memory measurement: raise it as far as the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        // Sockets, plus a margin for the runtime's own descriptors.
        Ok(limit) if limit < clients as u64 + 64 => eprintln!(
            "tandem-load: warning: the open-file limit ({limit}) is below the {clients} connections asked for"
        ),
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run::run(args));
    ExitCode::SUCCESS
}
