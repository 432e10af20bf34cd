//! The `chariot` binary: `chariot serve` (temporary entry point until the CLI lands).
mod serve;

use clap::Parser;

#[derive(Parser)]
#[command(name = "chariot", version, about = "A durable, ordered shared log")]
enum Cli {
    /// Run a single node.
    Serve(serve::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Serve(args) => serve::run(args).await,
    }
}
