//! What each subcommand does, from parsed arguments to printed output:
//! `run` in [`crate::serve`] (it takes its stop triggers as futures so tests
//! can stop it), the one-off operator commands in [`oneoff`].

mod oneoff;
mod tables;

use crate::config::cli::Command;
use crate::error::Result;
use crate::serve::shutdown;
use crate::serve::{self, Stops};

pub async fn execute(command: Command) -> Result<()> {
    match command {
        Command::Migrate(args) => oneoff::migrate(args).await,
        Command::Run(args) => {
            let signal = |which: &'static str| async move {
                match shutdown::signal().await {
                    Ok(name) => tracing::info!(signal = name, "{which}"),
                    Err(error) => tracing::error!(%error, "cannot listen for signals"),
                }
            };
            // The second signal is listened for only once the first came.
            let stops = Stops {
                graceful: signal("shutdown requested"),
                forced: || signal("second signal: exiting now"),
            };
            serve::run(*args, stops).await
        }
        Command::Config(args) => oneoff::config(args).await,
        Command::Status(args) => oneoff::status(args).await,
        Command::Dead(args) => oneoff::dead(args).await,
        Command::Requeue(args) => oneoff::requeue(args).await,
        Command::Prune(args) => oneoff::prune(args).await,
        Command::Completions { shell } => {
            oneoff::completions(shell);
            Ok(())
        }
        Command::Man => oneoff::man(),
    }
}
