//! One small analyzer per signal family. Each reads the shared [`Ctx`] and
//! records the symbols it fires, with their evidence, in [`Hits`].

pub mod attachments;
pub mod auth;
pub mod body;
pub mod headers;
pub mod lists;
pub mod received;
pub mod sender;
pub mod urls;

use crate::{config::ScoreConfig, mail::Envelope, Mail};

pub(crate) struct Ctx<'m, 'a> {
    pub mail: &'m Mail<'a>,
    pub envelope: &'m Envelope,
    pub config: &'m ScoreConfig,
    /// Scan time (seconds since the epoch), used when the message carries no
    /// Received timestamp to compare its Date with.
    pub now_unix: i64,
}

/// Fired symbols, in the order the analyzers found them.
#[derive(Default)]
pub(crate) struct Hits {
    pub list: Vec<(&'static str, Vec<String>)>,
}

/// Evidence strings are cut to this many characters.
const MAX_OPTION_CHARS: usize = 120;
/// Evidence items kept per symbol.
const MAX_OPTIONS: usize = 5;

impl Hits {
    pub fn add(&mut self, name: &'static str, options: Vec<String>) {
        let options: Vec<String> = options
            .into_iter()
            .take(MAX_OPTIONS)
            .map(|o| {
                if o.chars().count() > MAX_OPTION_CHARS {
                    o.chars().take(MAX_OPTION_CHARS).collect::<String>() + "…"
                } else {
                    o
                }
            })
            .collect();
        if let Some((_, existing)) = self.list.iter_mut().find(|(n, _)| *n == name) {
            for o in options {
                if existing.len() < MAX_OPTIONS && !existing.contains(&o) {
                    existing.push(o);
                }
            }
            return;
        }
        self.list.push((name, options));
    }
}

pub(crate) fn run_all(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    headers::analyze(ctx, hits);
    received::analyze(ctx, hits);
    sender::analyze(ctx, hits);
    auth::analyze(ctx, hits);
    body::analyze(ctx, hits);
    urls::analyze(ctx, hits);
    attachments::analyze(ctx, hits);
    lists::analyze(ctx, hits);
}
