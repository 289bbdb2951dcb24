//! What a scoring run returns: the total, the verdict, and every symbol
//! that contributed, with its evidence.

use serde::{Deserialize, Serialize};

/// One action per message, in rspamd's vocabulary and order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub enum Action {
    #[serde(rename = "no action")]
    NoAction,
    #[serde(rename = "greylist")]
    Greylist,
    #[serde(rename = "add header")]
    AddHeader,
    #[serde(rename = "rewrite subject")]
    RewriteSubject,
    #[serde(rename = "reject")]
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::Reject => "reject",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that fired: its points and the evidence (which URL, which header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: String,
    pub score: f64,
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The statistical model's view of the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVerdict {
    /// Probability that the message is spam, 0..1.
    pub probability: f64,
    /// The model's log-odds before it is turned into points.
    pub logit: f64,
    /// Model version (training run) that produced the verdict.
    pub version: String,
    /// Features seen in the message, and how many the model knew.
    pub features: u32,
    pub known_features: u32,
}

/// The full, explainable result. `score` is exactly the sum of the
/// symbols' scores (rounded to 2 decimals each), so every point is
/// traceable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    pub score: f64,
    pub required_score: f64,
    pub action: Action,
    /// Score at or above the profile's `spam_score` (the "add header" line by
    /// default): what a mail client would file as junk.
    pub is_spam: bool,
    pub profile: String,
    pub symbols: Vec<Symbol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelVerdict>,
    /// The subject to set when the action is `rewrite subject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Time spent scoring, in microseconds (parsing included).
    pub scan_time_us: u64,
}

impl ScoreReport {
    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }
}

/// Scores are reported to two decimals, so the parts add up to the total.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
