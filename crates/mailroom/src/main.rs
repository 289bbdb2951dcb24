//! `mailroom`: the one binary. Parses the command line, resolves the
//! configuration and hands over to the library; nothing else.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use mailroom::{
    config::{Config, Layers, KEYS},
    import, keys_cli, score_cli, server,
};
use mailroom_app::IngestService;
use mailroom_score::FtrlParams;

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
        /// Serve every route without an API key. Never on a shared network.
        #[arg(long)]
        insecure_no_auth: bool,
        #[command(flatten)]
        mcp: McpFlags,
    },
    /// Serve MCP on stdin/stdout (for AI agents that start mailroom themselves).
    Mcp {
        #[command(flatten)]
        mcp: McpFlags,
    },
    /// API keys (create, list, revoke, rotate) and data keys (generate, rotate).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
    /// Score messages (.eml files, directories, mbox, Maildir): one JSON line each.
    Score {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// A human-readable table of every symbol and its evidence instead of JSON.
        #[arg(long)]
        explain: bool,
        /// Model file to score with (default: score.model_path, else the built-in model).
        #[arg(long, value_name = "MODEL")]
        model: Option<PathBuf>,
        /// Settings profile (default: score.profile).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// No summary line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Train a fresh scoring model from labelled ham and spam.
    Train {
        #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
        ham: Vec<PathBuf>,
        #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
        spam: Vec<PathBuf>,
        /// Where to write the model (default: score.model_path).
        #[arg(long, value_name = "MODEL")]
        out: Option<PathBuf>,
        /// Passes over the training set.
        #[arg(long, default_value_t = 4)]
        epochs: u32,
        /// Hashed feature space: 2^bits weights.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(12..=24))]
        bits: u8,
        /// Weight of one spam example relative to one ham (default: balances the classes).
        #[arg(long, value_name = "W")]
        spam_weight: Option<f64>,
        /// FTRL-Proximal learning rate (alpha).
        #[arg(long, default_value_t = FtrlParams::default().alpha)]
        alpha: f64,
        /// FTRL-Proximal L1 strength: higher keeps fewer, stronger weights.
        #[arg(long, default_value_t = FtrlParams::default().l1)]
        l1: f64,
        /// FTRL-Proximal L2 strength.
        #[arg(long, default_value_t = FtrlParams::default().l2)]
        l2: f64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Teach the live model (score.model_path) that messages are ham or spam.
    Learn {
        #[arg(long, num_args = 1.., value_name = "PATH", conflicts_with = "spam", required_unless_present = "spam")]
        ham: Vec<PathBuf>,
        #[arg(long, num_args = 1.., value_name = "PATH")]
        spam: Vec<PathBuf>,
        /// No progress display.
        #[arg(long)]
        quiet: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// The MCP tools offered (over `/mcp` with `serve`, on stdio with `mcp`).
#[derive(Debug, clap::Args)]
struct McpFlags {
    /// MCP toolsets: all, or a comma-separated list (email, score) (env MAILROOM_TOOLSETS).
    #[arg(long, value_name = "LIST")]
    toolsets: Option<String>,
    /// Offer only the MCP tools that change nothing.
    #[arg(long)]
    read_only: bool,
}

impl McpFlags {
    fn apply(&self, layers: &mut Layers) {
        layers.set_flag("mcp.toolsets", "--toolsets", self.toolsets.clone());
        if self.read_only {
            layers.set_flag("mcp.read_only", "--read-only", Some("true".into()));
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issue a key; prints it once on stdout (its description on stderr).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, admin (admin includes read and write).
        #[arg(long, value_name = "SCOPES")]
        scopes: String,
        /// Lifetime such as 90d, 12h (default: never expires).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// Every key: name, prefix, scopes, status, created, expires, last used.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke at once, by id, prefix or name (a name revokes every live key of that name).
    Revoke {
        #[arg(value_name = "ID|PREFIX|NAME")]
        key: String,
    },
    /// Issue a successor; the old key keeps working for the overlap.
    Rotate {
        #[arg(value_name = "ID|PREFIX|NAME")]
        key: String,
        /// How long the old key keeps working (default 24h).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        overlap: String,
    },
    /// Print a fresh AES-256 data key (base64) for MAILROOM_DATA_KEY or a key file.
    GenerateDataKey,
    /// Re-encrypt all stored mail under the current data key, while servers run.
    RotateDataKey {
        /// First add a new key to the key file (it becomes current).
        #[arg(long)]
        new_key: bool,
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
    if let Command::Mcp { mcp } = &cli.command {
        mcp.apply(&mut layers);
    }
    if let Command::Serve {
        bind,
        workers,
        insecure_no_auth,
        mcp,
    } = &cli.command
    {
        mcp.apply(&mut layers);
        layers.set_flag("bind", "--bind", bind.clone());
        layers.set_flag("workers", "--workers", workers.clone());
        if *insecure_no_auth {
            layers.set_flag(
                "auth.insecure_no_auth",
                "--insecure-no-auth",
                Some("true".into()),
            );
        }
    }
    if let Command::Keys {
        command: KeysCommand::GenerateDataKey,
    } = &cli.command
    {
        keys_cli::generate_data_key();
        return ExitCode::SUCCESS;
    }

    if let Command::Config { command } = &cli.command {
        return match command {
            ConfigCommand::Validate => validate(&layers),
            ConfigCommand::Keys => {
                for key in KEYS {
                    let mut env = mailroom::config::env_name(key.name);
                    if let Some(alias) = key.aliases.iter().find(|a| a.starts_with("MAILROOM_")) {
                        env = format!("{alias} | {env}");
                    }
                    println!(
                        "{:<28} {:<34} default {:<12} {}",
                        key.name,
                        env,
                        key.default.filter(|d| !d.is_empty()).unwrap_or("-"),
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
    // Scoring commands work on files: no runtime, no database.
    match cli.command {
        Command::Score {
            paths,
            explain,
            model,
            profile,
            quiet,
        } => {
            let options = score_cli::ScoreOptions {
                explain,
                model,
                profile,
                quiet,
            };
            return exit(
                score_cli::score(&config.score, config.max_message_bytes, &paths, options).map(
                    |all| {
                        if all {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    },
                ),
            );
        }
        Command::Train {
            ham,
            spam,
            out,
            epochs,
            bits,
            spam_weight,
            alpha,
            l1,
            l2,
            quiet,
        } => {
            let options = score_cli::TrainOptions {
                out: out.unwrap_or_else(|| config.score.model_path.clone()),
                ham,
                spam,
                epochs,
                bits,
                spam_weight,
                params: FtrlParams {
                    alpha,
                    l1,
                    l2,
                    ..FtrlParams::default()
                },
                quiet,
            };
            return exit(
                score_cli::train(&config.score, config.max_message_bytes, options)
                    .map(|()| ExitCode::SUCCESS),
            );
        }
        Command::Learn { ham, spam, quiet } => {
            let (paths, label) = if ham.is_empty() {
                (spam, mailroom_score::Label::Spam)
            } else {
                (ham, mailroom_score::Label::Ham)
            };
            return exit(
                score_cli::learn(
                    &config.score,
                    config.max_message_bytes,
                    &paths,
                    label,
                    quiet,
                )
                .map(|()| ExitCode::SUCCESS),
            );
        }
        _ => {}
    }
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

fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
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
            let s = &c.security;
            println!(
                "  auth = {}",
                if s.insecure_no_auth {
                    "DISABLED (--insecure-no-auth)".to_string()
                } else {
                    format!(
                        "api keys ({} provisioned in configuration)",
                        s.api_keys.len()
                    )
                }
            );
            println!(
                "  rate_limit = {}",
                match (&s.rate_limit, &s.redis_url) {
                    (None, _) => "off".to_string(),
                    (Some(r), None) => format!(
                        "memory (key {}/s burst {}, ip {}/s burst {})",
                        r.key.per_second, r.key.burst, r.ip.per_second, r.ip.burst
                    ),
                    (Some(r), Some(_)) => format!(
                        "redis, {} (key {}/s burst {}, ip {}/s burst {})",
                        r.on_redis_failure.as_str(),
                        r.key.per_second,
                        r.key.burst,
                        r.ip.per_second,
                        r.ip.burst
                    ),
                }
            );
            println!(
                "  encryption = {}",
                match &s.data_keys {
                    mailroom::config::DataKeySource::None => "DISABLED (no data key)".to_string(),
                    mailroom::config::DataKeySource::Inline { previous, .. } => format!(
                        "AES-256-GCM, key from MAILROOM_DATA_KEY ({} previous)",
                        previous.len()
                    ),
                    mailroom::config::DataKeySource::File(p) =>
                        format!("AES-256-GCM, keys from {}", p.display()),
                }
            );
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
        Command::Mcp { .. } => {
            server::run_stdio(config).await?;
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
        Command::Keys { command } => {
            let store = server::open_store(&config).await?;
            let keys = keys_cli::service(&store, &config);
            let result = match command {
                KeysCommand::Create {
                    name,
                    scopes,
                    expires,
                } => keys_cli::create(&keys, &name, &scopes, expires.as_deref()).await,
                KeysCommand::List { json } => keys_cli::list(&keys, json).await,
                KeysCommand::Revoke { key } => keys_cli::revoke(&keys, &key).await,
                KeysCommand::Rotate { key, overlap } => {
                    keys_cli::rotate(&keys, &key, &overlap).await
                }
                KeysCommand::RotateDataKey { new_key } => {
                    keys_cli::rotate_data_key(&store, &config, new_key).await
                }
                KeysCommand::GenerateDataKey => Ok(()),
            };
            store.close().await;
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::Config { .. }
        | Command::Score { .. }
        | Command::Train { .. }
        | Command::Learn { .. } => Ok(ExitCode::SUCCESS),
    }
}
