//! Connecting and logging in: TCP, then TLS (implicit, or STARTTLS before
//! the login), with the public web roots plus an optional CA file.

use std::{fmt::Debug, path::Path, sync::Arc, time::Duration};

use async_imap::{Client, Session};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{
    rustls::{pki_types::ServerName, ClientConfig, RootCertStore},
    TlsConnector,
};

use crate::{Account, ImapError, Security};

/// Any byte stream a session runs over (plain TCP or TLS).
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> ImapStream for T {}

pub type ImapSession = Session<Box<dyn ImapStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The TLS client configuration: web PKI roots, plus `ca_file`'s
/// certificates (a private CA, a self-signed server).
pub fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, ImapError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| ImapError::Config(format!("imap.ca_file {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert
                .map_err(|e| ImapError::Config(format!("imap.ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| ImapError::Config(format!("imap.ca_file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(ImapError::Config(format!(
                "imap.ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn connect_error(account: &Account, reason: impl ToString) -> ImapError {
    ImapError::Connect {
        server: format!("{}:{}", account.host, account.port),
        reason: reason.to_string(),
    }
}

async fn tls(
    account: &Account,
    config: &Arc<ClientConfig>,
    tcp: TcpStream,
) -> Result<Box<dyn ImapStream>, ImapError> {
    let name = ServerName::try_from(account.host.clone())
        .map_err(|e| connect_error(account, format!("server name: {e}")))?;
    let stream = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| connect_error(account, format!("TLS: {e}")))?;
    Ok(Box::new(stream))
}

/// A logged-in session.
pub async fn connect(
    account: &Account,
    config: &Arc<ClientConfig>,
) -> Result<ImapSession, ImapError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((account.host.as_str(), account.port)),
    )
    .await
    .map_err(|_| connect_error(account, "timed out"))?
    .map_err(|e| connect_error(account, e))?;
    let _ = tcp.set_nodelay(true);
    let client = match account.security {
        Security::Implicit => {
            let mut client = Client::new(tls(account, config, tcp).await?);
            greeting(account, &mut client).await?;
            client
        }
        Security::None => {
            let mut client = Client::new(Box::new(tcp) as Box<dyn ImapStream>);
            greeting(account, &mut client).await?;
            client
        }
        Security::StartTls => {
            let mut plain = Client::new(tcp);
            greeting(account, &mut plain).await?;
            plain
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| connect_error(account, format!("STARTTLS: {e}")))?;
            // No greeting after STARTTLS.
            Client::new(tls(account, config, plain.into_inner()).await?)
        }
    };
    client
        .login(&account.user, account.password.expose())
        .await
        .map_err(|(e, _)| ImapError::Login {
            user: account.user.clone(),
            reason: e.to_string(),
        })
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin + Send + Debug>(
    account: &Account,
    client: &mut Client<T>,
) -> Result<(), ImapError> {
    tokio::time::timeout(CONNECT_TIMEOUT, client.read_response())
        .await
        .map_err(|_| connect_error(account, "no greeting"))?
        .map_err(|e| connect_error(account, e))?
        .ok_or_else(|| connect_error(account, "closed before the greeting"))?;
    Ok(())
}
