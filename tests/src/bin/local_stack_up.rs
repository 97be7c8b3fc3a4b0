//! `scripts/stack up`'s background process: provisions and starts the local stack of
//! `scripts/demo` (moto, the Snowflake stand-in, the three functions under `cargo lambda watch`,
//! the async-invoke shim; all on 127.0.0.1), writes where everything is, and keeps it running
//! until it is told to stop.
//!
//! In STATE_DIR it writes `pid` (its own) at once, the processes' logs under `logs/`, then
//! `endpoints.txt` (for a person, with curl calls) and last `endpoints.json` (the stack is
//! ready when that file exists). SIGTERM, SIGINT or SIGHUP, a `pid` file that is gone or names
//! another process, or `SLUICE_STACK_HOURS` (default 24) running stop it: the stack is dropped,
//! so every child process is killed, and those files are removed.
//!
//! Usage: local_stack_up CONFIG.yaml BIN_DIR STATE_DIR
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use sluice_tests::stack::{LocalStack, real_shape_batch_id, start_and_print};

/// Writes `path` whole or not at all (a reader never sees half a file).
fn write_atomically(path: &Path, contents: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents).expect("cannot write in the state directory");
    std::fs::rename(&partial, path).expect("cannot write in the state directory");
}

/// The endpoints for a person: the summary, then Snowflake's external-function call as curl.
fn endpoints_text(stack: &LocalStack) -> String {
    let batch = real_shape_batch_id();
    let ingest = stack.trigger_url("ingest");
    let headers = "-H 'sf-external-function-format: json' \\\n    \
                   -H 'sf-external-function-format-version: 1.0' \\\n    ";
    format!(
        "{summary}\n\
         \n\
         SELECT sluice.ingest('shop', 'public.orders'), as Snowflake's external function sends it\n\
         (202; another batch id starts another run):\n\
         \n  \
         curl -i -X POST '{ingest}' \\\n    \
         {headers}-H 'sf-external-function-query-batch-id: {batch}' \\\n    \
         -H 'content-type: application/json' \\\n    \
         -d '{{\"data\":[[0,\"shop\",\"public.orders\"]]}}'\n\
         \n\
         Snowflake's poll, with the same batch id (202 while the run goes on, then 200 with it):\n\
         \n  \
         curl -i '{ingest}' \\\n    \
         {headers}-H 'sf-external-function-query-batch-id: {batch}'\n",
        summary = stack.summary(),
    )
}

/// Whether `pid_file` still names this process (`scripts/stack down` may have removed it).
fn still_ours(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .is_ok_and(|text| text.trim() == std::process::id().to_string())
}

#[tokio::main]
async fn main() {
    // Before anything starts: a stop asked for while the stack comes up is kept, not lost.
    let mut stops = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ]
    .map(|kind| signal(kind).expect("cannot listen for signals"));
    let args: Vec<String> = std::env::args().collect();
    let [_, config_path, bin_dir, state_dir] = args.as_slice() else {
        eprintln!("usage: local_stack_up CONFIG.yaml BIN_DIR STATE_DIR");
        std::process::exit(2);
    };
    let hours: u64 = std::env::var("SLUICE_STACK_HOURS")
        .ok()
        .map(|h| {
            h.parse()
                .expect("SLUICE_STACK_HOURS: a whole number of hours")
        })
        .unwrap_or(24);
    let state_dir = Path::new(state_dir);
    std::fs::create_dir_all(state_dir).expect("cannot create the state directory");
    let pid_file = state_dir.join("pid");
    let json_file = state_dir.join("endpoints.json");
    let text_file = state_dir.join("endpoints.txt");
    write_atomically(&pid_file, &format!("{}\n", std::process::id()));
    let log_dir = state_dir.join("logs");

    let (_config, stack) =
        start_and_print("stack", config_path, bin_dir, &log_dir.to_string_lossy()).await;
    write_atomically(&text_file, &endpoints_text(&stack));
    // Last: its presence says the stack is ready.
    write_atomically(
        &json_file,
        &serde_json::to_string_pretty(&stack.endpoints()).expect("JSON"),
    );
    println!("ready; stops on SIGTERM (scripts/stack down) or after {hours} h");

    let deadline = Instant::now() + Duration::from_secs(hours * 3600);
    let [term, int, hup] = &mut stops;
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM".to_owned(),
            _ = int.recv() => break "SIGINT".to_owned(),
            _ = hup.recv() => break "SIGHUP".to_owned(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if !still_ours(&pid_file) {
            break format!("{} no longer names this process", pid_file.display());
        }
        if Instant::now() >= deadline {
            break format!("{hours} h up (SLUICE_STACK_HOURS)");
        }
    };
    println!("stopping ({why})");
    // Kills the stand-in, cargo lambda watch, the shim and the functions; moto, the process's
    // shared server, is killed by the kernel when this process exits.
    drop(stack);
    for file in [&json_file, &text_file] {
        let _ = std::fs::remove_file(file);
    }
    if still_ours(&pid_file) {
        let _ = std::fs::remove_file(&pid_file);
    }
    println!("stopped");
}
