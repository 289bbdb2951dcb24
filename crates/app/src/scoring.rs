//! Scoring as a service: the configured [`Scorer`], the live model shared
//! by every request and worker, online learning, and the model file.
//!
//! The model file is the source of truth between processes: a learn takes
//! an exclusive lock on `<model>.lock`, reloads the file if another process
//! changed it, applies the update, and writes the file atomically (temp
//! file + rename) before it answers. So `mailroom learn` and
//! `POST /api/v1/learn/*` on several servers sharing the file never lose
//! each other's updates; servers pick up changes within a second
//! ([`ScoreService::reload_if_changed`]).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Instant, SystemTime},
};

use mailroom_domain::ScoreReport;
use mailroom_score::{Analysis, Envelope, Label, Model, ScoreConfig, ScoreError, Scorer};

/// Messages up to this size are scored on the async worker that read
/// them (measured: under 1 ms at the 99th percentile of the TEST split,
/// whose median message is 4 KB).
const INLINE_SCORE_BYTES: usize = 32 * 1024;

/// The model compiled into the binary (trained by
/// `scripts/train-default-model.sh` on the TRAIN split).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/default.mrmodel");

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("model file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("scoring task failed: {0}")]
    Task(String),
}

/// Where the live model is kept, and the version on disk we last saw.
#[derive(Debug)]
struct ModelFile {
    path: PathBuf,
    seen: Mutex<Option<(SystemTime, u64)>>,
}

impl ModelFile {
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    }

    fn io(&self, source: std::io::Error) -> ScoringError {
        ScoringError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn lock(&self) -> Result<fs::File, ScoringError> {
        let lock_path = self.path.with_extension("lock");
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }

    fn read(&self) -> Result<Option<Model>, ScoringError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(Model::from_bytes(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn write(&self, model: &Model) -> Result<(), ScoringError> {
        save_model(&self.path, model).map_err(|e| self.io(e))?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = self.stamp();
        Ok(())
    }
}

/// Writes a model atomically: a temporary file beside it, synced, renamed.
pub fn save_model(path: &Path, model: &Model) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&model.to_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Loads the model at `path`, or the built-in default when there is none.
pub fn load_model(path: Option<&Path>) -> Result<Model, ScoringError> {
    if let Some(path) = path {
        match fs::read(path) {
            Ok(bytes) => return Ok(Model::from_bytes(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ScoringError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(Model::from_bytes(DEFAULT_MODEL)?)
}

pub struct ScoreService {
    scorer: Scorer,
    model: RwLock<Model>,
    file: Option<ModelFile>,
}

impl std::fmt::Debug for ScoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreService")
            .field("model_file", &self.file.as_ref().map(|m| &m.path))
            .finish()
    }
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ScoreService {
    /// `model_path`: the live model file (created on the first learn);
    /// while it does not exist the built-in default model scores.
    pub fn new(config: ScoreConfig, model_path: Option<PathBuf>) -> Result<Self, ScoringError> {
        let scorer = Scorer::new(config)?;
        let model = load_model(model_path.as_deref())?;
        let file = model_path.map(|path| {
            let file = ModelFile {
                path,
                seen: Mutex::new(None),
            };
            *file.seen.lock().unwrap_or_else(|p| p.into_inner()) = file.stamp();
            file
        });
        Ok(Self {
            scorer,
            model: RwLock::new(model),
            file,
        })
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    pub fn model_info(&self) -> mailroom_score::ModelInfo {
        self.model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .info()
            .clone()
    }

    /// Scores on the calling thread (under 0.1 ms for the median message;
    /// async callers use [`Self::score_async`]).
    pub fn score(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        profile: Option<&str>,
    ) -> Result<ScoreReport, ScoringError> {
        let started = Instant::now();
        let analysis = self.scorer.analyze(raw, envelope, profile, now_unix())?;
        // The model is held for the report only, not for parsing.
        let model = self.model.read().unwrap_or_else(|p| p.into_inner());
        Ok(self.finish(&analysis, &model, started))
    }

    fn finish(&self, analysis: &Analysis<'_>, model: &Model, started: Instant) -> ScoreReport {
        let mut report = self.scorer.report(analysis, Some(model));
        let elapsed = started.elapsed();
        report.scan_time_us = elapsed.as_micros() as u64;
        metrics::histogram!(mailroom_telemetry::names::MAIL_SCORE_PROCESSING_TIME)
            .record(elapsed.as_secs_f64());
        report
    }

    /// Scores from async code: small messages on the calling worker, large
    /// ones on the blocking pool.
    pub async fn score_async(
        self: &Arc<Self>,
        raw: Arc<Vec<u8>>,
        envelope: Envelope,
        profile: Option<String>,
    ) -> Result<ScoreReport, ScoringError> {
        // Most mail scores in well under a millisecond: handing it to the
        // blocking pool would cost more (two thread wake-ups) than the
        // work. Only large messages, whose scoring can take milliseconds,
        // leave the async workers, and so does any message while a learn
        // holds the model (it writes the file under the lock): an async
        // worker never waits for the lock.
        if raw.len() <= INLINE_SCORE_BYTES {
            let started = Instant::now();
            let analysis = self
                .scorer
                .analyze(&raw, &envelope, profile.as_deref(), now_unix())?;
            let model = match self.model.try_read() {
                Ok(model) => Some(model),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(model) = model {
                return Ok(self.finish(&analysis, &model, started));
            }
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.score(&raw, &envelope, profile.as_deref()))
            .await
            .map_err(|e| ScoringError::Task(e.to_string()))?
    }

    /// Learns one message as ham or spam and persists the model before
    /// returning. Blocking (file lock and write): call from the blocking
    /// pool.
    pub fn learn(
        &self,
        raw: &[u8],
        label: Label,
    ) -> Result<mailroom_score::ModelInfo, ScoringError> {
        self.learn_many(std::iter::once(raw), label)
    }

    /// Learns a batch under one lock and one write.
    pub fn learn_many<'r>(
        &self,
        raws: impl IntoIterator<Item = &'r [u8]>,
        label: Label,
    ) -> Result<mailroom_score::ModelInfo, ScoringError> {
        let _lock = match &self.file {
            Some(f) => Some(f.lock()?),
            None => None,
        };
        if let Some(file) = &self.file {
            let changed = file.stamp() != *file.seen.lock().unwrap_or_else(|p| p.into_inner());
            if changed {
                if let Some(latest) = file.read()? {
                    *self.model.write().unwrap_or_else(|p| p.into_inner()) = latest;
                }
                *file.seen.lock().unwrap_or_else(|p| p.into_inner()) = file.stamp();
            }
        }
        let now = now_unix();
        let mut model = self.model.write().unwrap_or_else(|p| p.into_inner());
        for raw in raws {
            let analysis = self.scorer.analyze(raw, &Envelope::default(), None, now)?;
            let features = self.scorer.training_features(&analysis, model.bits());
            // A correction counts double: it is a human saying the model
            // was wrong, worth more than one more example of the same.
            model.update(&features, label, 2.0);
            model.count_online_update();
        }
        if let Some(file) = &self.file {
            file.write(&model)?;
        }
        Ok(model.info().clone())
    }

    /// Reloads the model file when another process changed it.
    pub fn reload_if_changed(&self) -> Result<bool, ScoringError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let stamp = file.stamp();
        if stamp.is_none() || stamp == *file.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(false);
        }
        let Some(model) = file.read()? else {
            return Ok(false);
        };
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = model;
        *file.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(true)
    }
}

/// The answer to a learn request, the same over REST and MCP.
pub fn learned_json(label: Label, info: &mailroom_score::ModelInfo) -> serde_json::Value {
    serde_json::json!({
        "learned": label.as_str(),
        "model": {
            "version": info.version,
            "trained_ham": info.trained_ham,
            "trained_spam": info.trained_spam,
            "online_updates": info.online_updates,
        }
    })
}
