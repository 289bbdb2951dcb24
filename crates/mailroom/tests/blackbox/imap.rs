//! The IMAP source against a real Dovecot (Debian's `dovecot-imapd`,
//! which `.ci/run` installs): a private instance per test on loopback
//! ports, TLS from a throwaway CA, mail delivered into its Maildir the way
//! an MTA's local delivery does. Skipped with a notice when Dovecot is not
//! installed (`MAILROOM_TEST_DOVECOT` names the binary; default
//! `/usr/sbin/dovecot`); CI installs it, so there it always runs.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::backend_test;
use crate::support::*;

const USER: &str = "alice";
/// Characters a URL must percent-encode (a passwd-file cannot hold `:`).
const PASSWORD: &str = "s3cret,with%odd@chars/x";

struct Dovecot {
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// The master process, in the foreground (`-F`): a daemonised one
    /// would keep the test's pipes open and outlive a failed test.
    master: Option<std::process::Child>,
    plain_port: u16,
    tls_port: u16,
    delivered: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Dovecot {
    /// A private Dovecot, or `None` (with a notice) when it is not installed.
    fn start(idle: bool) -> Option<Self> {
        let binary = PathBuf::from(
            std::env::var("MAILROOM_TEST_DOVECOT").unwrap_or_else(|_| "/usr/sbin/dovecot".into()),
        );
        if !binary.exists() {
            eprintln!("NOTICE: Dovecot not found at {}; IMAP tests skipped (apt-get install dovecot-imapd)", binary.display());
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        // A CA and a server certificate for localhost signed by it (rustls
        // refuses a CA certificate used as the server's own).
        let sh = format!(
            "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=mailroom-test-ca 2>/dev/null \
             && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null \
             && printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext \
             && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null",
            d = d.display()
        );
        run(Command::new("sh").arg("-c").arg(sh));
        let (plain_port, tls_port) = (free_port(), free_port());
        let capability = if idle {
            String::new()
        } else {
            // A server without IDLE: the source must poll.
            "imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS\n"
                .into()
        };
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\n\
             ssl = yes\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nshutdown_clients = yes\ndefault_internal_user = dovecot\ndefault_login_user = dovenull\nfirst_valid_uid = 1\n\
             {capability}\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/home/%u\n}}\n\
             mail_location = maildir:~/Maildir\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {plain_port}\n  }}\n\
               inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n\
             service anvil {{\n  chroot =\n}}\n",
            d = d.display()
        );
        std::fs::write(d.join("dovecot.conf"), conf).expect("conf");
        std::fs::write(d.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).expect("users");
        let maildir = d.join("home").join(USER).join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        run(Command::new("chown")
            .arg("-R")
            .arg("dovecot:dovecot")
            .arg(d.join("home")));
        run(Command::new("chmod").arg("755").arg(d));
        let mut dovecot = Self {
            dir,
            binary,
            master: None,
            plain_port,
            tls_port,
            delivered: 0,
        };
        dovecot.launch();
        Some(dovecot)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        // Its own process group: stopping kills the master and every
        // child (an IMAP process serving a session outlives a master that
        // is told to stop).
        let child = Command::new(&self.binary)
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(self.conf())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dovecot");
        self.master = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.tls_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Dovecot did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut master) = self.master.take() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{}", master.id()))
                .status();
            let _ = master.kill();
            let _ = master.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.tls_port)).is_ok() {
            assert!(Instant::now() < deadline, "Dovecot did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Local delivery: written in tmp/, renamed into new/ (the Maildir rule).
    fn deliver(&mut self, subject: &str) {
        self.delivered += 1;
        let raw = email(
            9000 + self.delivered,
            "sender@partner.test",
            subject,
            "Delivered by the MTA.",
        );
        let maildir = self.dir.path().join("home").join(USER).join("Maildir");
        let name = format!(
            "{}.M{}P{}.test",
            self.delivered,
            uuid::Uuid::now_v7().simple(),
            std::process::id()
        );
        let tmp = maildir.join("tmp").join(&name);
        std::fs::write(&tmp, raw).expect("write");
        run(Command::new("chown").arg("dovecot:dovecot").arg(&tmp));
        std::fs::rename(&tmp, maildir.join("new").join(&name)).expect("rename");
    }

    fn url(&self, scheme: &str) -> String {
        let password = PASSWORD
            .replace('%', "%25")
            .replace(',', "%2C")
            .replace('@', "%40")
            .replace('/', "%2F");
        let port = if scheme == "imaps" {
            self.tls_port
        } else {
            self.plain_port
        };
        format!("{scheme}://{USER}:{password}@localhost:{port}/INBOX")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn spawn(db: &TestDb, dovecot: &Dovecot, scheme: &str) -> TestApp {
    let url = dovecot.url(scheme);
    let ca = dovecot.ca().display().to_string();
    TestApp::spawn_with(
        db,
        &[
            ("imap.accounts", url.as_str()),
            ("imap.ca_file", ca.as_str()),
            ("imap.poll_seconds", "1"),
        ],
    )
    .await
}

async fn messages(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/api/v1/messages?limit=500").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until exactly `n` messages are stored and processed, then checks
/// nothing more arrives.
async fn expect_processed(app: &TestApp, n: usize, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let items = messages(app).await;
        if items.len() >= n && items.iter().all(|m| m["status"] == "processed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages; Dovecot log:\n{}",
            items.len(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = messages(app).await;
    assert_eq!(items.len(), n, "exactly {n} messages, none twice");
    assert!(items.iter().all(|m| m["source"] == "imap"), "{items:?}");
}

backend_test!(
    imap_over_tls_with_idle_survives_restarts_and_outages,
    |db| async move {
        let Some(mut dovecot) = Dovecot::start(true) else {
            return;
        };
        // Mail that was there before mailroom ever ran.
        for n in 0..3 {
            dovecot.deliver(&format!("before {n}"));
        }
        let app = spawn(&db, &dovecot, "imaps").await;
        expect_processed(&app, 3, &|| dovecot.log()).await;

        // While running: IDLE reports it.
        dovecot.deliver("while running");
        expect_processed(&app, 4, &|| dovecot.log()).await;

        // mailroom down: everything delivered meanwhile arrives after restart.
        app.stop().await;
        for n in 0..4 {
            dovecot.deliver(&format!("while down {n}"));
        }
        let app = spawn(&db, &dovecot, "imaps").await;
        expect_processed(&app, 8, &|| dovecot.log()).await;

        // The server goes away and comes back: the source reconnects.
        dovecot.stop();
        dovecot.deliver("during the outage");
        tokio::time::sleep(Duration::from_millis(500)).await;
        dovecot.launch();
        expect_processed(&app, 9, &|| dovecot.log()).await;
        let subjects: Vec<String> = messages(&app)
            .await
            .iter()
            .filter_map(|m| m["subject"].as_str().map(String::from))
            .collect();
        assert!(
            subjects.contains(&"during the outage".to_string()),
            "{subjects:?}"
        );
        app.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_polls_a_server_without_idle_over_starttls() {
    let Some(mut dovecot) = Dovecot::start(false) else {
        return;
    };
    let db = TestDb::sqlite();
    dovecot.deliver("first");
    let app = spawn(&db, &dovecot, "imap+starttls").await;
    expect_processed(&app, 1, &|| dovecot.log()).await;
    dovecot.deliver("second");
    expect_processed(&app, 2, &|| dovecot.log()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_retried_and_never_logged() {
    let Some(dovecot) = Dovecot::start(true) else {
        return;
    };
    let db = TestDb::sqlite();
    let url = dovecot.url("imaps").replace("s3cret", "wrong");
    let ca = dovecot.ca().display().to_string();
    let app = TestApp::spawn_with(
        &db,
        &[
            ("imap.accounts", url.as_str()),
            ("imap.ca_file", ca.as_str()),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = app.metrics_text().await;
        let ours = format!("localhost:{}/INBOX", dovecot.tls_port);
        if metrics
            .lines()
            .any(|l| l.starts_with("imap_errors_total") && l.contains(&ours))
        {
            assert!(
                !metrics.contains("wrong"),
                "the password leaked into metrics"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed session counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(messages(&app).await.is_empty());
    app.stop().await;
}
