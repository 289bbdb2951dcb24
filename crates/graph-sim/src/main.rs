//! `mailroom-graph-sim`: runs the Graph simulator as a standalone server so
//! a person (or a mailroom instance) can be pointed at it and drive it
//! through the `/_sim/...` control endpoints.

use std::net::SocketAddr;

use clap::Parser;
use mailroom_graph_sim::{GraphSim, SimConfig};

#[derive(Parser, Debug)]
#[command(
    name = "mailroom-graph-sim",
    about = "Local Microsoft Graph simulator for mailroom"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8990")]
    listen: SocketAddr,
    #[arg(long, default_value = "sim-tenant")]
    tenant: String,
    #[arg(long, default_value = "sim-client")]
    client_id: String,
    #[arg(long, default_value = "sim-secret")]
    client_secret: String,
    /// Mailbox UPN; repeat for several.
    #[arg(long = "mailbox", required = true)]
    mailboxes: Vec<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime_secs: u64,
    /// Longest subscription lifetime accepted, in minutes.
    #[arg(long, default_value_t = 10080)]
    max_subscription_minutes: i64,
    /// Delta page size without `Prefer: odata.maxpagesize`.
    #[arg(long, default_value_t = 10)]
    delta_page_size: usize,
    /// Service account for delegated tokens, as USER:PASSWORD.
    #[arg(long)]
    service_account: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let service_account = match args.service_account.as_deref() {
        None => None,
        Some(s) => match s.split_once(':') {
            Some((u, p)) => Some((u.to_string(), p.to_string())),
            None => {
                eprintln!("--service-account must be USER:PASSWORD");
                std::process::exit(2);
            }
        },
    };
    let sim = GraphSim::start(SimConfig {
        tenant_id: args.tenant,
        client_id: args.client_id,
        client_secret: args.client_secret,
        mailboxes: args.mailboxes,
        token_lifetime_secs: args.token_lifetime_secs,
        max_subscription_minutes: args.max_subscription_minutes,
        delta_page_size: args.delta_page_size,
        service_account,
        listen: args.listen,
        ..SimConfig::default()
    })
    .await?;
    println!("graph base url: {}", sim.base_url());
    println!("login url:      {}", sim.login_url());
    println!(
        "token endpoint: {}/{}/oauth2/v2.0/token",
        sim.login_url(),
        sim.config().tenant_id
    );
    for mb in &sim.config().mailboxes {
        println!(
            "mailbox:        {mb} = {}",
            sim.user_id(mb).unwrap_or_default()
        );
    }
    println!("control:        {}/_sim/stats", sim.login_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}
