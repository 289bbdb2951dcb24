//! `mailroom`: the one binary. Parses the command line, resolves the
//! configuration and hands over to the library; nothing else.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use mailroom::{
    config::{Config, Layers, KEYS},
    import, server,
};
use mailroom_app::IngestService;

#[derive(Debug, Parser)]
#[command(
    name = "mailroom",
    version,
    about = "Email triage server: ingest, process, store and query a mailbox's mail"
)]
struct Cli {
    /// Configuration file (TOML). Default: ./mailroom.toml when it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Database URL (env DATABASE_URL / MAILROOM_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Log format: json or pretty (env MAILROOM_LOG_FORMAT).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server and the processing workers.
    Serve {
        /// Listen address (env MAILROOM_BIND; default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR:PORT")]
        bind: Option<String>,
        /// Worker count (env WORKERS / MAILROOM_WORKERS; default: cores).
        #[arg(long, value_name = "N")]
        workers: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Import .eml files, directories (recursive), mbox files and Maildir folders.
    Import {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// No progress bar, only the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check the configuration (file + environment) and print every problem.
    Validate,
    /// List every setting with its environment variable and default.
    Keys,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut layers = Layers::load(config_path(&cli).as_deref(), &|name| {
        std::env::var(name).ok()
    });
    layers.set_flag("database_url", "--database-url", cli.database_url.clone());
    layers.set_flag("log_format", "--log-format", cli.log_format.clone());
    if let Command::Serve { bind, workers } = &cli.command {
        layers.set_flag("bind", "--bind", bind.clone());
        layers.set_flag("workers", "--workers", workers.clone());
    }

    if let Command::Config { command } = &cli.command {
        return match command {
            ConfigCommand::Validate => validate(&layers),
            ConfigCommand::Keys => {
                for key in KEYS {
                    println!(
                        "{:<28} {:<34} default {:<28} {}",
                        key.name,
                        mailroom::config::env_name(key.name),
                        key.default.unwrap_or("-"),
                        key.help
                    );
                }
                ExitCode::SUCCESS
            }
        };
    }

    let config = match layers.resolve() {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("invalid configuration:");
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    if let Err(e) = mailroom_telemetry::init_tracing(&config.log_level, config.log_format) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--config`, else `./mailroom.toml` when present.
fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config.clone().or_else(|| {
        let default = PathBuf::from("mailroom.toml");
        default.is_file().then_some(default)
    })
}

fn validate(layers: &Layers) -> ExitCode {
    match layers.resolve() {
        Ok(c) => {
            println!("configuration is valid");
            println!("  bind = {}", c.bind);
            println!(
                "  database_url = {}",
                mailroom_store_redacted(&c.database_url)
            );
            println!("  workers = {}", c.workers);
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{} problem(s) found:", problems.len());
            for p in problems {
                println!("  {p}");
            }
            ExitCode::from(1)
        }
    }
}

fn mailroom_store_redacted(url: &str) -> String {
    mailroom_store::redact(url)
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { .. } => {
            let app = server::Application::build(config).await?;
            app.run_until_stopped(server::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = server::open_store(&config).await?;
            store.close().await;
            println!("migrations applied ({})", store.backend().as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { paths, quiet } => {
            let store = server::open_store(&config).await?;
            let ingest = IngestService::new(
                store.clone(),
                config.max_message_bytes,
                config.max_inflight_bytes,
                Arc::new(tokio::sync::Notify::new()),
            );
            let summary = import::import(&ingest, &paths, quiet).await;
            store.close().await;
            print!("{}", summary.render());
            Ok(
                if summary.imported + summary.duplicates == 0 && summary.rejected_total() > 0 {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Config { .. } => Ok(ExitCode::SUCCESS),
    }
}
