//! `mailroom score`, `mailroom train` and `mailroom learn`: the scoring
//! engine on files, without a server or a database.
//!
//! Inputs are what `import` reads (eml files, directories, mbox, Maildir).
//! Scoring runs on every core: a reader thread walks the inputs and hands
//! out work in chunks (file paths are read by the workers, so reading is
//! parallel too); results are printed in input order.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, Write},
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::Instant,
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use mailroom_app::{load_model, now_unix, save_model, ScoreService};
use mailroom_score::{Envelope, FeatureSet, FtrlParams, Label, Model, ScoreReport, Scorer};
use serde::Serialize;

use crate::{
    config::ScoreSettings,
    import::{walk, Found, Input, MboxEntry, MboxReader},
};

/// Messages per unit of work handed to a thread: large enough that the
/// channel is not the bottleneck, small enough to balance two cores.
const CHUNK: usize = 32;

/// One message to process: a file the worker reads, or bytes already read
/// from an mbox.
enum Source {
    File(PathBuf),
    Bytes(String, Vec<u8>),
}

impl Source {
    fn read(self, limit: usize) -> (String, Result<Vec<u8>, String>) {
        match self {
            Source::Bytes(l, b) => (l, Ok(b)),
            Source::File(p) => {
                let location = p.display().to_string();
                (location, read_bounded(&p, limit))
            }
        }
    }
}

/// The whole file, unless it is larger than `limit`: one open and one
/// fstat (a directory walk of small files is mostly system calls).
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| format!("unreadable: {e}");
    let too_large = || format!("larger than max_message_bytes ({limit})");
    let file = fs::File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > limit as u64 {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // Bounded even if the file grows while it is read.
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A source, or where it was and why it could not be read.
type Item = Result<Source, (String, String)>;
/// Labelled features, and the (location, reason) of messages skipped.
type Featurized = (Vec<(FeatureSet, Label)>, Vec<(String, String)>);

/// Walks `paths` and sends chunks of sources as they are found; mbox files
/// are split here. Problems with paths (missing, unreadable) come back as
/// error sources.
fn produce(paths: &[PathBuf], limit: usize, tx: mpsc::SyncSender<(usize, Vec<Item>)>) {
    let mut seq = 0;
    let mut chunk = Vec::with_capacity(CHUNK);
    // Sends the chunk when it is full (or `force`); false once the
    // workers are gone.
    let mut flush = |chunk: &mut Vec<Item>, force: bool| -> bool {
        if chunk.is_empty() || (!force && chunk.len() < CHUNK) {
            return true;
        }
        let sent = tx.send((seq, std::mem::take(chunk))).is_ok();
        seq += 1;
        sent
    };
    walk(paths, |found| {
        match found {
            Found::Rejected(reason, location) => chunk.push(Err((location, reason))),
            Found::Input(Input::Eml(path), _) => chunk.push(Ok(Source::File(path))),
            Found::Input(Input::Mbox(path), _) => {
                let shown = path.display().to_string();
                match fs::File::open(&path) {
                    Err(e) => chunk.push(Err((shown, format!("unreadable: {e}")))),
                    Ok(file) => {
                        let reader = MboxReader::new(BufReader::new(file), limit);
                        for (n, entry) in reader.enumerate() {
                            let location = format!("{shown}#{}", n + 1);
                            chunk.push(match entry {
                                Ok(MboxEntry::Message(bytes)) => Ok(Source::Bytes(location, bytes)),
                                Ok(MboxEntry::TooLarge) => Err((
                                    location,
                                    format!("larger than max_message_bytes ({limit})"),
                                )),
                                Err(e) => Err((location, format!("unreadable: {e}"))),
                            });
                            if !flush(&mut chunk, false) {
                                return false;
                            }
                        }
                    }
                }
            }
        }
        flush(&mut chunk, false)
    });
    flush(&mut chunk, true);
}

/// Runs `work` on every message of `paths` on all cores and hands the
/// results to `sink` in input order. `work` gets (location, bytes).
fn parallel_over<T: Send + 'static>(
    paths: &[PathBuf],
    limit: usize,
    threads: usize,
    work: impl Fn(&str, &[u8]) -> T + Send + Sync + 'static,
    mut sink: impl FnMut(String, Result<T, String>),
) {
    let (work_tx, work_rx) = mpsc::sync_channel(threads * 4);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::channel::<(usize, Vec<(String, Result<T, String>)>)>();
    let work = Arc::new(work);
    std::thread::scope(|scope| {
        scope.spawn(|| produce(paths, limit, work_tx));
        for _ in 0..threads {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            let work = Arc::clone(&work);
            scope.spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((seq, chunk)) = next else { break };
                let results = chunk
                    .into_iter()
                    .map(|source| match source {
                        Err((location, reason)) => (location, Err(reason)),
                        Ok(source) => {
                            let (location, bytes) = source.read(limit);
                            let result = bytes.map(|b| work(&location, &b));
                            (location, result)
                        }
                    })
                    .collect();
                if done_tx.send((seq, results)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Chunks finish out of order; print them in order.
        let mut pending = BTreeMap::new();
        let mut next = 0;
        for (seq, results) in done_rx {
            pending.insert(seq, results);
            while let Some(results) = pending.remove(&next) {
                for (location, result) in results {
                    sink(location, result);
                }
                next += 1;
            }
        }
    });
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// One line of `mailroom score` output.
#[derive(Serialize)]
struct ScoreLine<'a> {
    path: &'a str,
    score: f64,
    required_score: f64,
    action: &'a str,
    is_spam: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    symbols: BTreeMap<&'a str, f64>,
    scan_time_us: u64,
}

fn json_line(path: &str, report: &ScoreReport) -> String {
    let line = ScoreLine {
        path,
        score: report.score,
        required_score: report.required_score,
        action: report.action.as_str(),
        is_spam: report.is_spam,
        probability: report
            .model
            .as_ref()
            .map(|m| (m.probability * 10_000.0).round() / 10_000.0),
        symbols: report
            .symbols
            .iter()
            .map(|s| (s.name.as_str(), s.score))
            .collect(),
        scan_time_us: report.scan_time_us,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The `--explain` table: every point of the score with its evidence.
pub fn explain(path: &str, report: &ScoreReport) -> String {
    let mut out = format!(
        "{path}\n  score {:.2} / {:.2}  action: {}  spam: {}",
        report.score,
        report.required_score,
        report.action,
        if report.is_spam { "yes" } else { "no" }
    );
    if let Some(m) = &report.model {
        out.push_str(&format!(
            "  p(spam) {:.3}  model {}",
            m.probability, m.version
        ));
    }
    out.push('\n');
    let mut symbols: Vec<_> = report.symbols.iter().collect();
    symbols.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
    let width = symbols.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in symbols {
        out.push_str(&format!(
            "  {:>7.2}  {:<width$}  {}\n",
            s.score, s.name, s.description
        ));
        for option in &s.options {
            out.push_str(&format!("  {:>7}  {:<width$}    {option}\n", "", ""));
        }
    }
    out
}

pub struct ScoreOptions {
    pub explain: bool,
    pub model: Option<PathBuf>,
    pub profile: Option<String>,
    pub quiet: bool,
}

/// `mailroom score`. Exit status: 0 when every input was scored, 1 when
/// some could not be read.
pub fn score(
    settings: &ScoreSettings,
    limit: usize,
    paths: &[PathBuf],
    options: ScoreOptions,
) -> anyhow::Result<bool> {
    let scorer = Scorer::new(settings.rules.clone())?;
    let model_path = options.model.as_ref().unwrap_or(&settings.model_path);
    let model = if options.model.is_some() {
        Model::from_bytes(
            &fs::read(model_path).with_context(|| format!("reading {}", model_path.display()))?,
        )?
    } else {
        load_model(Some(model_path))?
    };
    let profile = options.profile.unwrap_or_else(|| settings.profile.clone());
    scorer.config().check_profile(Some(&profile))?;
    let shared = Arc::new((scorer, model, profile));
    let explain_mode = options.explain;
    let work_state = Arc::clone(&shared);
    let started = Instant::now();
    let now = now_unix();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let (mut scored, mut failed) = (0u64, 0u64);
    parallel_over(
        paths,
        limit,
        threads(),
        move |location, raw| {
            let (scorer, model, profile) = &*work_state;
            scorer
                .score(raw, &Envelope::default(), Some(profile), Some(model), now)
                .map(|report| {
                    if explain_mode {
                        explain(location, &report)
                    } else {
                        json_line(location, &report)
                    }
                })
                .map_err(|e| e.to_string())
        },
        |location, result| {
            let line = match result.and_then(|r| r) {
                Ok(line) => {
                    scored += 1;
                    line
                }
                Err(error) => {
                    failed += 1;
                    serde_json::json!({ "path": location, "error": error }).to_string()
                }
            };
            // A closed pipe (`| head`) ends the run quietly.
            let _ = writeln!(out, "{line}");
        },
    );
    let _ = out.flush();
    if !options.quiet {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "scored {scored} message(s), {failed} failed, in {seconds:.2}s ({:.0}/s, {} threads, model {})",
            scored as f64 / seconds.max(1e-9),
            threads(),
            shared.1.info().version
        );
    }
    Ok(failed == 0)
}

pub struct TrainOptions {
    pub ham: Vec<PathBuf>,
    pub spam: Vec<PathBuf>,
    pub out: PathBuf,
    pub epochs: u32,
    pub bits: u8,
    pub spam_weight: Option<f64>,
    pub params: FtrlParams,
    pub quiet: bool,
}

fn spinner(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} messages ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Reads and analyses every message of `paths` into model features.
fn featurize(
    scorer: &Arc<Scorer>,
    paths: &[PathBuf],
    limit: usize,
    bits: u8,
    label: Label,
    bar: &ProgressBar,
) -> Featurized {
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    let scorer = Arc::clone(scorer);
    let now = now_unix();
    parallel_over(
        paths,
        limit,
        threads(),
        move |_, raw| {
            scorer
                .analyze(raw, &Envelope::default(), None, now)
                .map(|a| scorer.training_features(&a, bits))
                .map_err(|e| e.to_string())
        },
        |location, result| {
            bar.inc(1);
            match result.and_then(|r| r) {
                Ok(features) => samples.push((features, label)),
                Err(e) => skipped.push((location, e)),
            }
        },
    );
    (samples, skipped)
}

/// `mailroom train`: a fresh model from labelled folders.
pub fn train(settings: &ScoreSettings, limit: usize, options: TrainOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let params = options.params;
    if !(params.alpha.is_finite() && params.alpha > 0.0) {
        anyhow::bail!("--alpha must be a positive number, got {}", params.alpha);
    }
    if !(params.l1.is_finite() && params.l1 >= 0.0 && params.l2.is_finite() && params.l2 >= 0.0) {
        anyhow::bail!(
            "--l1 and --l2 must be zero or positive, got {} and {}",
            params.l1,
            params.l2
        );
    }
    let scorer = Arc::new(Scorer::new(settings.rules.clone())?);
    let bar = spinner(options.quiet, "reading");
    let (mut samples, mut skipped) =
        featurize(&scorer, &options.ham, limit, options.bits, Label::Ham, &bar);
    let (spam, spam_skipped) = featurize(
        &scorer,
        &options.spam,
        limit,
        options.bits,
        Label::Spam,
        &bar,
    );
    bar.finish_and_clear();
    let ham_count = samples.len();
    let spam_count = spam.len();
    samples.extend(spam);
    skipped.extend(spam_skipped);
    if ham_count == 0 || spam_count == 0 {
        anyhow::bail!(
            "training needs both ham and spam: found {ham_count} ham and {spam_count} spam message(s)"
        );
    }
    // Class balance: unless told otherwise, each class weighs the same in
    // total, so a corpus with little spam does not teach "everything is ham".
    let spam_weight = options
        .spam_weight
        .unwrap_or(ham_count as f64 / spam_count as f64);
    let version = format!(
        "{}-{}h{}s",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        ham_count,
        spam_count
    );
    let total = (samples.len() * options.epochs as usize) as u64;
    let bar = if options.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "training [{bar:40}] {pos}/{len} updates ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let model = mailroom_score::train(
        &samples,
        options.bits,
        options.params,
        options.epochs,
        spam_weight,
        &version,
        |done, _| {
            if done % 256 == 0 {
                bar.set_position(done as u64);
            }
        },
    );
    bar.finish_and_clear();
    let correct = samples
        .iter()
        .filter(|(f, label)| (model.logit(f) > 0.0) == (*label == Label::Spam))
        .count();
    save_model(&options.out, &model)
        .with_context(|| format!("writing {}", options.out.display()))?;
    for (location, reason) in skipped.iter().take(10) {
        eprintln!("skipped {location}: {reason}");
    }
    println!(
        "trained model {version}: {ham_count} ham, {spam_count} spam ({} skipped), {} epochs, spam weight {spam_weight:.2}, {} non-zero weights, training accuracy {:.2}%, {:.1}s -> {}",
        skipped.len(),
        options.epochs,
        model.nonzero_weights(),
        100.0 * correct as f64 / samples.len() as f64,
        started.elapsed().as_secs_f64(),
        options.out.display()
    );
    Ok(())
}

/// `mailroom learn`: online updates of the live model, as the server's
/// `POST /api/v1/learn/{ham|spam}` does (same file, same lock).
pub fn learn(
    settings: &ScoreSettings,
    limit: usize,
    paths: &[PathBuf],
    label: Label,
    quiet: bool,
) -> anyhow::Result<()> {
    let service = ScoreService::new(settings.rules.clone(), Some(settings.model_path.clone()))?;
    let mut messages = Vec::new();
    let mut skipped = Vec::new();
    let bar = spinner(quiet, "reading");
    parallel_over(
        paths,
        limit,
        threads(),
        |_, raw| raw.to_vec(),
        |location, result| {
            bar.inc(1);
            match result {
                Ok(raw) => messages.push(raw),
                Err(e) => skipped.push((location, e)),
            }
        },
    );
    bar.finish_and_clear();
    for (location, reason) in skipped.iter().take(10) {
        eprintln!("skipped {location}: {reason}");
    }
    if messages.is_empty() {
        anyhow::bail!("no message to learn from");
    }
    let info = service.learn_many(messages.iter().map(Vec::as_slice), label)?;
    println!(
        "learned {} message(s) as {}; model {} now has {} online update(s) -> {}",
        messages.len(),
        label.as_str(),
        info.version,
        info.online_updates,
        settings.model_path.display()
    );
    Ok(())
}
