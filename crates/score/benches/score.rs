//! Scoring cost in process: one typical message with the shipped model,
//! and messages of growing size (time must grow linearly with size).
//! Run: `cargo bench -p mailroom-score`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mailroom_score::{Envelope, Model, ScoreConfig, Scorer};

const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/default.mrmodel");
const NOW: i64 = 1_795_428_300;

fn typical() -> String {
    let mut body = String::new();
    for n in 0..40 {
        body.push_str(&format!(
            "Line {n} of the quarterly update: revenue, hiring and the roadmap. See https://intranet.example/doc/{n}\r\n"
        ));
    }
    format!(
        "Received: from mx.partner.example (mx.partner.example [192.0.2.10]) by mx.example.org; Mon, 23 Nov 2026 10:00:05 +0000\r\nFrom: Ann Lee <ann@partner.example>\r\nTo: bob@example.org\r\nSubject: Quarterly update\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <q1@partner.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

fn sized(kib: usize) -> String {
    let mut html = String::new();
    let mut n = 0;
    while html.len() < kib * 1024 {
        html.push_str(&format!(
            "<p>Offer {n}: <a href=\"http://shop{n}.example/item?id={n}\">buy now</a> limited stock</p>\r\n"
        ));
        n += 1;
    }
    format!("From: promo@shop.example\r\nTo: bob@example.org\r\nSubject: Sale\r\nContent-Type: text/html\r\n\r\n{html}")
}

fn bench(c: &mut Criterion) {
    let scorer = Scorer::new(ScoreConfig::default()).expect("config");
    let model = Model::from_bytes(DEFAULT_MODEL).expect("model");
    let envelope = Envelope::default();
    let raw = typical();
    c.bench_function("score/typical_4k_message", |b| {
        b.iter(|| scorer.score(raw.as_bytes(), &envelope, None, Some(&model), NOW))
    });
    let mut group = c.benchmark_group("score/size");
    for kib in [4, 16, 64, 256, 1024] {
        let raw = sized(kib);
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{kib}KiB")),
            &raw,
            |b, raw| b.iter(|| scorer.score(raw.as_bytes(), &envelope, None, Some(&model), NOW)),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
