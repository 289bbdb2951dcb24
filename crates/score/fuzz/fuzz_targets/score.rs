//! Any bytes as a message: the scorer must return a report (never panic,
//! never loop), with and without the shipped model, on every profile.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_score::{Envelope, Model, ScoreConfig, Scorer};
use std::sync::OnceLock;

fn shipped() -> &'static (Scorer, Option<Model>) {
    static SHIPPED: OnceLock<(Scorer, Option<Model>)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let scorer = Scorer::new(ScoreConfig::default()).expect("default configuration is valid");
        let model = Model::from_bytes(include_bytes!("../../../../models/default.mrmodel")).ok();
        (scorer, model)
    })
}

fuzz_target!(|raw: &[u8]| {
    let (scorer, model) = shipped();
    let envelope = Envelope::default();
    for model in [model.as_ref(), None] {
        if let Ok(report) = scorer.score(raw, &envelope, None, model, 1_700_000_000) {
            assert!(report.score.is_finite());
        }
    }
});
