use mailroom_security::Secret;

use crate::ImapError;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`imaps://`, port 993).
    Implicit,
    /// Plain connection upgraded with STARTTLS before login
    /// (`imap+starttls://`, port 143).
    StartTls,
    /// No TLS (`imap://`): only for loopback and tests.
    None,
}

/// One mailbox to watch, parsed from a URL:
/// `imaps://USER:PASSWORD@HOST[:PORT][/MAILBOX]` (the mailbox defaults to
/// INBOX; user and password are percent-decoded).
#[derive(Debug, Clone)]
pub struct Account {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: String,
    pub password: Secret<String>,
    pub mailbox: String,
}

impl Account {
    pub fn parse(raw: &str) -> Result<Self, ImapError> {
        let url = url::Url::parse(raw.trim()).map_err(|e| {
            ImapError::Config(format!(
                "not a URL ({e}); expected imaps://USER:PASSWORD@HOST/MAILBOX"
            ))
        })?;
        let (security, default_port) = match url.scheme() {
            "imaps" => (Security::Implicit, 993),
            "imap+starttls" => (Security::StartTls, 143),
            "imap" => (Security::None, 143),
            other => {
                return Err(ImapError::Config(format!(
                    "scheme `{other}`: expected imaps, imap+starttls or imap"
                )))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ImapError::Config("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                ImapError::Config("user or password is not valid UTF-8 once decoded".into())
            })
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err(ImapError::Config("no user".into()));
        }
        let password = decode(url.password().unwrap_or_default())?;
        let mailbox = decode(url.path().trim_start_matches('/'))?;
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            user,
            password: Secret::new(password),
            mailbox: if mailbox.is_empty() {
                "INBOX".into()
            } else {
                mailbox
            },
        })
    }

    /// The account's name in state and logs: never the password.
    pub fn key(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.mailbox)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        let a =
            Account::parse("imaps://alice%40corp.example:p%40ss%2Fword@mail.example.com/Support")
                .expect("parses");
        assert_eq!((a.security, a.port), (Security::Implicit, 993));
        assert_eq!(a.user, "alice@corp.example");
        assert_eq!(a.password.expose(), "p@ss/word");
        assert_eq!(a.mailbox, "Support");
        assert_eq!(a.key(), "alice@corp.example@mail.example.com:993/Support");
        let b = Account::parse("imap+starttls://bob:x@127.0.0.1:1143").expect("parses");
        assert_eq!(
            (b.security, b.port, b.mailbox.as_str()),
            (Security::StartTls, 1143, "INBOX")
        );
        let c = Account::parse("imap://carol:y@[::1]:10143/INBOX").expect("parses");
        assert_eq!((c.security, c.host.as_str()), (Security::None, "::1"));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in ["pop3://a:b@h", "imaps://h", "not a url", "imaps://a:%ff@h"] {
            assert!(Account::parse(bad).is_err(), "{bad}");
        }
        // The error never carries the password.
        let e = Account::parse("smtp://a:hunter2@h")
            .expect_err("bad scheme")
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
