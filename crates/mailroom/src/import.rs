//! `mailroom import PATH...`: .eml files, directories of them (recursive),
//! mbox files and Maildir folders, through the same ingest service as the
//! API. Idempotent: content already stored counts as a duplicate.

use std::{
    collections::BTreeMap,
    fs,
    io::BufReader,
    path::{Path, PathBuf},
    time::Instant,
};

use indicatif::{ProgressBar, ProgressStyle};
use mailroom_app::{IngestError, IngestService, Source};
use tokio::task::JoinSet;
use walkdir::WalkDir;

/// Files that live inside mail folders but are not messages (Dovecot and
/// Courier indexes, Maildir++ markers).
fn is_mail_store_metadata(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.starts_with("dovecot")
        || name.starts_with("courier")
        || matches!(name, "maildirfolder" | "subscriptions" | ".DS_Store")
        || in_maildir_tmp(path)
}

/// Maildir writers deliver into `tmp/` and rename into `new/`: what is still
/// in `tmp/` is half-written.
fn in_maildir_tmp(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    dir.file_name().is_some_and(|n| n == "tmp")
        && dir
            .parent()
            .is_some_and(|root| root.join("cur").is_dir() && root.join("new").is_dir())
}

/// Counts and reasons of one import run.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub imported: u64,
    pub duplicates: u64,
    /// Reason -> (count, a few example locations).
    pub rejected: BTreeMap<String, (u64, Vec<String>)>,
    pub bytes: u64,
    pub seconds: f64,
}

impl ImportSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|(n, _)| n).sum()
    }

    fn reject(&mut self, reason: String, location: String) {
        let entry = self.rejected.entry(reason).or_default();
        entry.0 += 1;
        if entry.1.len() < 5 {
            entry.1.push(location);
        }
    }

    pub fn render(&self) -> String {
        let total = self.imported + self.duplicates + self.rejected_total();
        let rate = if self.seconds > 0.0 {
            total as f64 / self.seconds
        } else {
            0.0
        };
        let mut out = format!(
            "imported {}, duplicates {}, rejected {} ({} messages in {:.2}s, {:.0}/s)\n",
            self.imported,
            self.duplicates,
            self.rejected_total(),
            total,
            self.seconds,
            rate
        );
        for (reason, (count, examples)) in &self.rejected {
            out.push_str(&format!("  rejected {count}: {reason}\n"));
            for e in examples {
                out.push_str(&format!("    {e}\n"));
            }
        }
        out
    }
}

/// One unit of input found on disk.
pub(crate) enum Input {
    Eml(PathBuf),
    Mbox(PathBuf),
}

/// What a walk over the inputs finds, in order.
pub(crate) enum Found {
    /// An input and its size in bytes.
    Input(Input, u64),
    /// A path that cannot be read: (reason, location).
    Rejected(String, String),
}

/// Walks the given paths, handing each find to `visit` as soon as it is
/// found (so work can start before a large tree is walked); `visit`
/// returns false to stop.
pub(crate) fn walk(paths: &[PathBuf], mut visit: impl FnMut(Found) -> bool) {
    for root in paths {
        if !root.exists() {
            let found = Found::Rejected("path does not exist".into(), root.display().to_string());
            if !visit(found) {
                return;
            }
            continue;
        }
        for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
            let found = match entry {
                Err(e) => Found::Rejected(
                    format!(
                        "unreadable: {}",
                        e.io_error()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "loop".into())
                    ),
                    e.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
                Ok(entry) => {
                    if !entry.file_type().is_file() || is_mail_store_metadata(entry.path()) {
                        continue;
                    }
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    let path = entry.into_path();
                    if looks_like_mbox(&path) {
                        Found::Input(Input::Mbox(path), size)
                    } else {
                        Found::Input(Input::Eml(path), size)
                    }
                }
            };
            if !visit(found) {
                return;
            }
        }
    }
}

/// Walks the given paths into inputs, with their total size for progress.
pub(crate) fn discover(paths: &[PathBuf], summary: &mut ImportSummary) -> (Vec<Input>, u64) {
    let mut inputs = Vec::new();
    let mut total = 0;
    walk(paths, |found| {
        match found {
            Found::Input(input, size) => {
                total += size;
                inputs.push(input);
            }
            Found::Rejected(reason, location) => summary.reject(reason, location),
        }
        true
    });
    (inputs, total)
}

/// An mbox starts with a `From ` separator line.
fn looks_like_mbox(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 5];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"From ")
        .unwrap_or(false)
}

/// Imports every message under `paths`, showing a progress bar unless
/// `quiet` (non-interactive runs get a final summary only).
pub async fn import(ingest: &IngestService, paths: &[PathBuf], quiet: bool) -> ImportSummary {
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let (inputs, total_bytes) = discover(paths, &mut summary);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_bytes)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut submitter = Submitter {
        ingest: ingest.clone(),
        inflight: JoinSet::new(),
        summary,
        bar,
        started,
    };
    for input in inputs {
        match input {
            Input::Eml(path) => {
                let location = path.display().to_string();
                let limit = ingest.max_bytes();
                match fs::metadata(&path).map(|m| m.len()) {
                    // Refused from its size alone: never read into memory.
                    Ok(size) if size > limit as u64 => {
                        submitter.summary.reject(too_large(limit), location);
                        continue;
                    }
                    _ => {}
                }
                match fs::read(&path) {
                    Ok(raw) => submitter.submit(raw, location).await,
                    Err(e) => submitter
                        .summary
                        .reject(format!("unreadable: {e}"), location),
                }
            }
            Input::Mbox(path) => {
                let file = match fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        submitter
                            .summary
                            .reject(format!("unreadable: {e}"), path.display().to_string());
                        continue;
                    }
                };
                let reader = BufReader::with_capacity(256 * 1024, file);
                let limit = ingest.max_bytes();
                for (n, entry) in MboxReader::new(reader, limit).enumerate() {
                    let location = format!("{} (message {})", path.display(), n + 1);
                    match entry {
                        Ok(MboxEntry::Message(raw)) => submitter.submit(raw, location).await,
                        Ok(MboxEntry::TooLarge) => {
                            submitter.summary.reject(too_large(limit), location)
                        }
                        Err(e) => {
                            submitter
                                .summary
                                .reject(format!("unreadable mbox: {e}"), location);
                            break;
                        }
                    }
                }
            }
        }
    }
    submitter.finish().await
}

/// Messages in flight at once: enough for the ingest writer to commit them
/// in groups, few enough to bound memory (64 x the message size limit).
const IMPORT_IN_FLIGHT: usize = 64;

type Outcome = (String, Result<mailroom_app::IngestReceipt, IngestError>);

/// Feeds messages to the ingest service with bounded concurrency and keeps
/// the summary and progress bar current.
struct Submitter {
    ingest: IngestService,
    inflight: JoinSet<Outcome>,
    summary: ImportSummary,
    bar: ProgressBar,
    started: Instant,
}

impl Submitter {
    async fn submit(&mut self, raw: Vec<u8>, location: String) {
        while self.inflight.len() >= IMPORT_IN_FLIGHT {
            self.collect_one().await;
        }
        self.bar.inc(raw.len() as u64);
        self.summary.bytes += raw.len() as u64;
        let ingest = self.ingest.clone();
        self.inflight.spawn(async move {
            let result = match ingest.reserve(raw.len()).await {
                Ok(_reservation) => ingest.ingest(raw, Source::Import).await,
                Err(e) => Err(e),
            };
            (location, result)
        });
    }

    async fn collect_one(&mut self) {
        match self.inflight.join_next().await {
            Some(Ok((location, result))) => record(result, location, &mut self.summary),
            Some(Err(e)) => self
                .summary
                .reject(format!("import task failed: {e}"), String::new()),
            None => return,
        }
        let s = &self.summary;
        let done = s.imported + s.duplicates + s.rejected_total();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} new, {} dup, {} rejected, {rate:.0} msg/s",
            s.imported,
            s.duplicates,
            s.rejected_total()
        ));
    }

    async fn finish(mut self) -> ImportSummary {
        while !self.inflight.is_empty() {
            self.collect_one().await;
        }
        self.bar.finish_and_clear();
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary
    }
}

fn record(
    result: Result<mailroom_app::IngestReceipt, IngestError>,
    location: String,
    summary: &mut ImportSummary,
) {
    match result {
        Ok(r) if r.duplicate => summary.duplicates += 1,
        Ok(_) => summary.imported += 1,
        Err(e) => summary.reject(reason(&e), location),
    }
}

fn too_large(limit: usize) -> String {
    format!("larger than the {limit}-byte limit")
}

/// Groups rejections by kind (not by the exact byte counts).
fn reason(e: &IngestError) -> String {
    match e {
        IngestError::TooLarge { limit, .. } => too_large(*limit),
        IngestError::Rejected(r) => r.to_string(),
        IngestError::Store(s) => format!("database error: {s}"),
        IngestError::Busy => e.to_string(),
    }
}

/// One entry of an mbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MboxEntry {
    Message(Vec<u8>),
    /// Larger than the limit: skipped to the next separator, never held.
    TooLarge,
}

/// Reads an mbox (mboxrd: `>From ` quoting undone) holding at most `limit`
/// bytes of one message plus one 64 KiB line chunk in memory, whatever the
/// file holds.
pub(crate) struct MboxReader<R> {
    reader: R,
    limit: usize,
    chunk: Vec<u8>,
    /// The next chunk starts a line (only there can a separator begin).
    at_line_start: bool,
    /// A separator was read that opens the next message.
    in_message: bool,
    done: bool,
}

const MBOX_CHUNK: u64 = 64 * 1024;

impl<R: std::io::BufRead> MboxReader<R> {
    pub(crate) fn new(reader: R, limit: usize) -> Self {
        Self {
            reader,
            limit,
            chunk: Vec::new(),
            at_line_start: true,
            in_message: false,
            done: false,
        }
    }
}

impl<R: std::io::BufRead> Iterator for MboxReader<R> {
    type Item = std::io::Result<MboxEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::{BufRead, Read};
        if self.done {
            return None;
        }
        let mut message = Vec::new();
        let mut size = 0usize;
        let mut has_content = false;
        loop {
            self.chunk.clear();
            let read = (&mut self.reader)
                .take(MBOX_CHUNK)
                .read_until(b'\n', &mut self.chunk);
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if n == 0 {
                self.done = true;
                break;
            }
            let line_start = self.at_line_start;
            self.at_line_start = self.chunk.ends_with(b"\n");
            if line_start && self.chunk.starts_with(b"From ") {
                if self.in_message {
                    return Some(Ok(entry(message, size, self.limit)));
                }
                self.in_message = true;
                continue;
            }
            if !self.in_message {
                continue; // text before the first separator
            }
            let quoted = line_start
                && self
                    .chunk
                    .iter()
                    .position(|&b| b != b'>')
                    .is_some_and(|i| i > 0 && self.chunk[i..].starts_with(b"From "));
            let content = if quoted {
                &self.chunk[1..]
            } else {
                &self.chunk[..]
            };
            has_content = true;
            size += content.len();
            if size <= self.limit {
                message.extend_from_slice(content);
            } else if !message.is_empty() {
                message = Vec::new();
            }
        }
        (self.in_message && has_content).then(|| Ok(entry(message, size, self.limit)))
    }
}

fn entry(message: Vec<u8>, size: usize, limit: usize) -> MboxEntry {
    if size > limit {
        MboxEntry::TooLarge
    } else {
        MboxEntry::Message(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], limit: usize) -> Vec<MboxEntry> {
        MboxReader::new(data, limit)
            .map(|e| e.expect("readable"))
            .collect()
    }

    #[test]
    fn splits_and_unquotes() {
        let mbox = b"preamble\nFrom a@x Mon\nSubject: 1\n\n>From here\n>>From there\n\nFrom b@x Tue\nSubject: 2\n\nbody";
        assert_eq!(
            read_all(mbox, 1000),
            vec![
                MboxEntry::Message(b"Subject: 1\n\nFrom here\n>From there\n\n".to_vec()),
                MboxEntry::Message(b"Subject: 2\n\nbody".to_vec()),
            ]
        );
    }

    #[test]
    fn skips_oversized_messages_without_holding_them() {
        let mut mbox = b"From a@x\nSubject: big\n\n".to_vec();
        mbox.extend(std::iter::repeat_n(b'x', 300_000)); // one huge line, no newline
        mbox.extend_from_slice(b"\nFrom b@x\nSubject: small\n\nok\n");
        let entries = read_all(&mbox, 1000);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], MboxEntry::TooLarge);
        assert_eq!(
            entries[1],
            MboxEntry::Message(b"Subject: small\n\nok\n".to_vec())
        );
    }

    #[test]
    fn a_from_inside_a_long_line_is_not_a_separator() {
        let mut mbox = b"From a@x\nSubject: s\n\n".to_vec();
        mbox.extend(std::iter::repeat_n(b'y', MBOX_CHUNK as usize - 1));
        mbox.extend_from_slice(b"From not-a-separator\n");
        let entries = read_all(&mbox, 1 << 20);
        assert_eq!(entries.len(), 1);
    }
}
