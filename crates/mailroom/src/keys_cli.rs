//! `mailroom keys …`: API keys and data keys from the command line, on the
//! same database and configuration as `serve`.

use std::{io::Write, path::Path, time::Duration};

use anyhow::Context;
use mailroom_app::{reseal_all, Actor, AuditLog, KeyInfo, KeyService};
use mailroom_security::{parse_duration, DataKey, Scopes};
use mailroom_store::Store;

use crate::config::{Config, DataKeySource};

/// The key service over `store` for one CLI command.
pub fn service(store: &Store, config: &Config) -> KeyService {
    KeyService::new(
        store.clone(),
        AuditLog::start(store.clone()),
        config.security.api_keys.clone(),
    )
}

/// `keys create`: the key alone on stdout (so `KEY=$(mailroom keys create …)`
/// works), what it is on stderr.
pub async fn create(
    keys: &KeyService,
    name: &str,
    scopes: &str,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let scopes: Scopes = scopes.parse().context("--scopes")?;
    let expires = expires
        .map(parse_duration)
        .transpose()
        .context("--expires")?;
    let issued = keys.create(name, scopes, expires, &Actor::cli()).await?;
    println!("{}", issued.secret.expose());
    eprintln!(
        "created key `{}` ({}, scopes {}, expires {}); it is shown only this once",
        issued.info.name,
        issued.info.prefix,
        issued.info.scopes,
        when(issued.info.expires_at_ms)
    );
    Ok(())
}

pub async fn list(keys: &KeyService, json: bool) -> anyhow::Result<()> {
    let all = keys.list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<17} {:<9} {:<20} {:<20} LAST USED",
        "NAME", "PREFIX", "SCOPES", "STATUS", "CREATED", "EXPIRES"
    );
    for k in &all {
        println!(
            "{:<24} {:<12} {:<17} {:<9} {:<20} {:<20} {}",
            k.name,
            k.prefix,
            k.scopes.to_string(),
            k.status,
            if k.source == "configuration" {
                "configuration".to_string()
            } else {
                when(Some(k.created_at_ms))
            },
            when(k.expires_at_ms),
            when(k.last_used_at_ms)
        );
    }
    Ok(())
}

pub async fn revoke(keys: &KeyService, selector: &str) -> anyhow::Result<()> {
    let revoked = keys.revoke(selector, &Actor::cli()).await?;
    for k in &revoked {
        eprintln!("revoked `{}` ({})", k.name, k.prefix);
    }
    eprintln!(
        "servers stop accepting it within {} s",
        mailroom_app::CACHE_TTL.as_secs()
    );
    Ok(())
}

pub async fn rotate(keys: &KeyService, selector: &str, overlap: &str) -> anyhow::Result<()> {
    let overlap = parse_duration(overlap).context("--overlap")?;
    let (issued, old): (_, KeyInfo) = keys.rotate(selector, overlap, &Actor::cli()).await?;
    println!("{}", issued.secret.expose());
    eprintln!(
        "rotated `{}`: new key {} (shown only this once); the old key {} works until {}",
        issued.info.name,
        issued.info.prefix,
        old.prefix,
        when(old.expires_at_ms)
    );
    Ok(())
}

/// `keys generate-data-key`: a fresh AES-256 key (base64) for
/// `MAILROOM_DATA_KEY` or a key file.
pub fn generate_data_key() {
    let (key, material) = DataKey::generate();
    println!("{material}");
    eprintln!("data key {} (its id); keep it secret and backed up: mail sealed with it cannot be read without it", key.id());
}

/// `keys rotate-data-key [--new-key]`: optionally adds a new current key to
/// the key file, then re-encrypts everything under the current key with a
/// progress bar, while servers keep running.
pub async fn rotate_data_key(store: &Store, config: &Config, new_key: bool) -> anyhow::Result<()> {
    if new_key {
        let DataKeySource::File(path) = &config.security.data_keys else {
            anyhow::bail!(
                "--new-key needs a key file (encryption.key_file). With MAILROOM_DATA_KEY, generate a key with \
                 `mailroom keys generate-data-key`, set it as MAILROOM_DATA_KEY with the old one in \
                 MAILROOM_DATA_KEYS_PREVIOUS, restart the servers, then run `mailroom keys rotate-data-key`"
            );
        };
        let id = append_key(path)?;
        store
            .reload_keyring()
            .context("reloading the key file after adding the key")?;
        eprintln!(
            "added data key {id} to {}; running servers pick it up within a second",
            path.display()
        );
    }
    let Some(ring) = store.keyring() else {
        anyhow::bail!(
            "no data key is configured: set MAILROOM_DATA_KEY or encryption.key_file first"
        );
    };
    eprintln!(
        "re-encrypting stored mail under data key {}",
        ring.current_id()
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} pass {msg} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut pass_start = 0;
    let mut current_pass = 0;
    let summary = reseal_all(store, &mut |p| {
        if p.pass != current_pass {
            current_pass = p.pass;
            pass_start = p.resealed;
            bar.set_length(p.pass_total);
            bar.set_position(0);
        }
        bar.set_message(if p.servers_behind > 0 {
            format!(
                "{} (waiting for {} server(s) to load the key)",
                p.pass, p.servers_behind
            )
        } else {
            p.pass.to_string()
        });
        bar.set_position(p.resealed - pass_start);
    })
    .await?;
    bar.finish_and_clear();
    let audit = AuditLog::start(store.clone());
    audit
        .record(AuditLog::event(
            &Actor::cli(),
            mailroom_app::actions::DATA_KEY_RESEAL,
            if summary.remaining.total() == 0 && summary.servers_behind == 0 && summary.unreadable.is_empty() { "success" } else { "failure" },
            Some(ring.current_id().as_str()),
            Some(serde_json::json!({"resealed": summary.resealed, "passes": summary.passes, "remaining": summary.remaining.total(), "unreadable": summary.unreadable.len()})),
        ))
        .await?;
    if !summary.unreadable.is_empty() {
        let examples: Vec<String> = summary
            .unreadable
            .iter()
            .take(5)
            .map(|(record, why)| format!("{record}: {why}"))
            .collect();
        anyhow::bail!(
            "{} records cannot be opened with the configured data keys and were left as they are \
             (configure the key that sealed them and run this again); for example:\n  {}",
            summary.unreadable.len(),
            examples.join("\n  ")
        );
    }
    if summary.servers_behind > 0 || summary.remaining.total() > 0 {
        anyhow::bail!(
            "{} records are still under other keys and {} running server(s) still seal with another key after {} passes. \
             Give every server the current key (a key file is reloaded within a second; MAILROOM_DATA_KEY needs a restart) \
             and run this again; keep the old keys configured until it succeeds",
            summary.remaining.total(),
            summary.servers_behind,
            summary.passes
        );
    }
    eprintln!(
        "done: {} records re-encrypted in {} pass(es); every record is under data key {}. Keep older keys configured until backups made before now have expired",
        summary.resealed,
        summary.passes,
        ring.current_id()
    );
    Ok(())
}

/// Appends a new key to the key file (written beside it and renamed over
/// it, so a reader never sees half a file) and returns its id.
fn append_key(path: &Path) -> anyhow::Result<String> {
    let existing = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let (key, material) = DataKey::generate();
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# added {} by `mailroom keys rotate-data-key`\n{material}\n",
        chrono_now()
    ));
    let tmp = path.with_extension("tmp");
    let original = std::fs::metadata(path)?;
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        // The servers must still be able to read it: same mode, and the
        // same owner and group where this user may set them.
        file.set_permissions(original.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()));
        }
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(key.id().to_string())
}

fn chrono_now() -> String {
    when(Some(mailroom_app::now_ms()))
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
        .unwrap_or_else(|| "never".into())
}
