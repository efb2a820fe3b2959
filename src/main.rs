//! The `outbox-relay` binary: parse the command line, set up logging, run the
//! command, and turn any error into one line on stderr and a non-zero exit.

use std::io::IsTerminal;
use std::process::ExitCode;

use outbox_relay::config::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    if let Err(message) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(outbox_relay::commands::execute(cli.command));
    // Background tasks (metrics server, probes) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = anyhow::Error::from(error);
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Libraries whose noise the relay reports itself, once, quieted unless
/// `--log-level` names them: (the name to look for, the directive).
const QUIETED_LIBRARIES: [(&str, &str); 3] = [
    // rust-rdkafka warns about every broker error event it does not route;
    // the relay reports outages itself.
    ("rdkafka", "rdkafka::producer::base_producer=error"),
    // "Connection could not be recycled" on every pooled connection during
    // an outage.
    ("deadpool", "deadpool.postgres=error"),
    // lapin logs every channel the server closes at error level, among them
    // the passive declares that find a queue missing.
    ("lapin", "lapin=off"),
];

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    // A bare level ("debug") is about the relay; libraries stay at warn.
    let directives = if level.contains(['=', ',']) {
        level.to_owned()
    } else {
        format!("warn,outbox_relay={level}")
    };
    let mut filter = EnvFilter::try_new(&directives)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}; try `info` or `debug`"))?;
    for (library, directive) in QUIETED_LIBRARIES {
        if !level.contains(library) {
            filter = filter.add_directive(directive.parse().expect("a valid directive"));
        }
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // `message` and the event's fields at the top level: the shape Loki,
        // ECS and Datadog parse without a pipeline stage; the table a line is
        // about in `span.table`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
