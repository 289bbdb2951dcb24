//! Mail Score: explainable spam scoring.
//!
//! Raw message (and optional SMTP envelope) in, [`ScoreReport`] out: a
//! total score, the action it maps to, and every symbol that fired with its
//! points and evidence. Rules are small analyzers (`analyzers/*`, one file
//! per signal family); a logistic-regression model over hashed features,
//! trained with FTRL-Proximal, reads the content and the fired symbols and
//! adds its own symbol (`MODEL_SPAM` / `MODEL_HAM`) with the words that
//! moved it.
//!
//! Invariant: no I/O. Models are loaded from and saved to bytes; the
//! caller owns files, locks and time.

pub mod analyzers;
pub mod config;
pub mod features;
pub mod html;
pub mod mail;
pub mod model;
pub mod symbols;
pub mod text;

use std::time::Instant;

pub use config::{Actions, Lists, ModelPoints, Profile, ScoreConfig};
pub use features::{FeatureSet, Purpose};
pub use mail::{Envelope, Mail};
pub use mailroom_domain::{Action, ModelVerdict, ScoreReport, Symbol};
pub use model::{FtrlParams, Label, Model, ModelInfo};

use analyzers::{Ctx, Hits};
use mailroom_domain::round2;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("unknown settings profile `{0}`")]
    UnknownProfile(String),
    #[error("invalid scoring configuration: {0}")]
    Config(String),
    #[error("invalid model: {0}")]
    Model(String),
}

/// Tokens named in a report's model evidence.
const MODEL_EVIDENCE: usize = 6;

/// What the analyzers found, before the model: reused by learning, which
/// needs the same features the scorer saw.
pub struct Analysis<'a> {
    pub mail: Mail<'a>,
    hits: Hits,
    profile: config::Resolved,
}

impl Analysis<'_> {
    pub fn fired_symbols(&self) -> impl Iterator<Item = &str> {
        self.hits.list.iter().map(|(n, _)| *n)
    }
}

/// The scorer: configuration checked once, then shared by every thread.
#[derive(Debug, Clone)]
pub struct Scorer {
    config: ScoreConfig,
}

impl Scorer {
    pub fn new(config: ScoreConfig) -> Result<Self, ScoreError> {
        config.validate()?;
        for name in config
            .weights
            .keys()
            .chain(config.profiles.values().flat_map(|p| p.weights.keys()))
        {
            if symbols::lookup(name).is_none() {
                return Err(ScoreError::Config(format!(
                    "score.weights: there is no symbol named `{name}`"
                )));
            }
        }
        Ok(Self { config })
    }

    pub fn config(&self) -> &ScoreConfig {
        &self.config
    }

    /// Runs every analyzer of the profile on a message.
    pub fn analyze<'a>(
        &self,
        raw: &'a [u8],
        envelope: &Envelope,
        profile: Option<&str>,
        now_unix: i64,
    ) -> Result<Analysis<'a>, ScoreError> {
        let profile = self.config.resolve(profile)?;
        let mail = Mail::parse(raw);
        let mut hits = Hits::default();
        {
            let ctx = Ctx {
                mail: &mail,
                envelope,
                config: &self.config,
                now_unix,
            };
            analyzers::run_all(&ctx, &mut hits);
        }
        hits.list
            .retain(|(name, _)| !profile.disabled.iter().any(|d| d == name));
        Ok(Analysis {
            mail,
            hits,
            profile,
        })
    }

    /// The features a model learns from, for an analysed message.
    pub fn training_features(&self, analysis: &Analysis<'_>, bits: u8) -> FeatureSet {
        features::extract(
            &analysis.mail,
            analysis.fired_symbols(),
            bits,
            Purpose::Training,
        )
    }

    /// Scores a raw message. `now_unix` is only used for messages without
    /// a Received timestamp; `model` None scores with the rules alone.
    pub fn score(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        profile: Option<&str>,
        model: Option<&Model>,
        now_unix: i64,
    ) -> Result<ScoreReport, ScoreError> {
        let started = Instant::now();
        let analysis = self.analyze(raw, envelope, profile, now_unix)?;
        let mut report = self.report(&analysis, model);
        report.scan_time_us = started.elapsed().as_micros() as u64;
        Ok(report)
    }

    /// Turns an analysis into a report: rule points, model points, action.
    pub fn report(&self, analysis: &Analysis<'_>, model: Option<&Model>) -> ScoreReport {
        let profile = &analysis.profile;
        let mut symbols: Vec<Symbol> = analysis
            .hits
            .list
            .iter()
            .map(|(name, options)| {
                let def = symbols::lookup(name);
                let weight = profile
                    .weights
                    .get(*name)
                    .copied()
                    .or(def.map(|d| d.weight))
                    .unwrap_or(0.0);
                Symbol {
                    name: (*name).to_string(),
                    score: round2(weight),
                    description: def.map(|d| d.description).unwrap_or("").to_string(),
                    options: options.clone(),
                }
            })
            .collect();

        let mut verdict = None;
        let points = &self.config.model;
        if let (Some(model), true) = (model, points.enabled) {
            let features = features::extract(
                &analysis.mail,
                analysis.fired_symbols(),
                model.bits(),
                Purpose::Scoring,
            );
            let logit = model.logit(&features);
            let probability = sigmoid(logit);
            let known = features.indices().filter(|&i| model.knows(i)).count();
            let score = round2(
                (points.scale * logit + points.offset).clamp(points.min_points, points.max_points),
            );
            let (name, toward_spam) = if score >= 0.0 {
                (symbols::MODEL_SPAM, true)
            } else {
                (symbols::MODEL_HAM, false)
            };
            if !profile.disabled.iter().any(|d| d == name) {
                let mut options = vec![format!("p(spam)={probability:.3}")];
                options.extend(top_tokens(model, &features, toward_spam));
                let def = symbols::lookup(name);
                symbols.push(Symbol {
                    name: name.to_string(),
                    score,
                    description: def.map(|d| d.description).unwrap_or("").to_string(),
                    options,
                });
            }
            verdict = Some(ModelVerdict {
                probability,
                logit,
                version: model.info().version.clone(),
                features: features.len() as u32,
                known_features: known as u32,
            });
        }

        let score = round2(symbols.iter().map(|s| s.score).sum());
        let actions = &profile.actions;
        let action = actions.action_for(score);
        let subject = (action == Action::RewriteSubject).then(|| {
            actions
                .subject_template
                .replace("%s", analysis.mail.subject().unwrap_or(""))
        });
        ScoreReport {
            score,
            required_score: actions.required_score(),
            action,
            is_spam: score >= actions.spam_score(),
            profile: profile.name.clone(),
            symbols,
            model: verdict,
            subject,
            scan_time_us: 0,
        }
    }
}

pub use model::sigmoid;

/// The tokens that pushed the model hardest toward its verdict, as
/// `token (+weight)`.
fn top_tokens(model: &Model, features: &FeatureSet, toward_spam: bool) -> Vec<String> {
    let mut weighted: Vec<(f64, &str)> = features
        .entries()
        .map(|(i, token)| (model.weight(i), token))
        .filter(|(w, _)| if toward_spam { *w > 0.0 } else { *w < 0.0 })
        .collect();
    let strongest = |a: &(f64, &str), b: &(f64, &str)| b.0.abs().total_cmp(&a.0.abs());
    // Only the strongest few are shown: select them, then sort just those.
    if weighted.len() > MODEL_EVIDENCE {
        weighted.select_nth_unstable_by(MODEL_EVIDENCE, strongest);
        weighted.truncate(MODEL_EVIDENCE);
    }
    weighted.sort_by(strongest);
    weighted
        .into_iter()
        .map(|(w, t)| format!("{t} ({w:+.2})"))
        .collect()
}

/// Trains a fresh model: `epochs` shuffled passes over the samples, spam
/// weighted by `spam_weight` (class balance). `progress` is called after
/// each sample with (done, total).
pub fn train(
    samples: &[(FeatureSet, Label)],
    bits: u8,
    params: FtrlParams,
    epochs: u32,
    spam_weight: f64,
    version: &str,
    mut progress: impl FnMut(usize, usize),
) -> Model {
    let mut model = Model::new(bits, params, version);
    for (_, label) in samples {
        model.count_trained(*label);
    }
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let total = samples.len() * epochs as usize;
    let mut done = 0;
    for epoch in 0..epochs {
        model::shuffle(&mut order, 0x5eed + epoch as u64);
        for &i in &order {
            let (features, label) = &samples[i];
            let importance = if *label == Label::Spam {
                spam_weight
            } else {
                1.0
            };
            model.update(features, *label, importance);
            done += 1;
            progress(done, total);
        }
    }
    model
}
