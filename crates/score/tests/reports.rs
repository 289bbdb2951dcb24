//! Explainability and robustness of the scorer as a whole.
//!
//! Snapshots: a dozen representative messages, each report pinned with
//! every symbol and its evidence (a change of rules, weights or the shipped
//! model shows up in review). Properties: random and mutated MIME never
//! panics and every point of a score is a symbol's.

use mailroom_score::{Envelope, Model, ScoreConfig, ScoreReport, Scorer};
use proptest::prelude::*;

const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/default.mrmodel");
/// 2026-11-23 10:05:00 UTC: "now" for messages without Received headers.
const NOW: i64 = 1_795_428_300;

fn scorer() -> Scorer {
    let config = ScoreConfig {
        protected_domains: vec!["example.org".into()],
        ..ScoreConfig::default()
    };
    Scorer::new(config).expect("default configuration is valid")
}

fn report(raw: &str) -> ScoreReport {
    let model = Model::from_bytes(DEFAULT_MODEL).expect("shipped model loads");
    let mut report = scorer()
        .score(
            raw.as_bytes(),
            &Envelope::default(),
            None,
            Some(&model),
            NOW,
        )
        .expect("scores");
    report.scan_time_us = 0;
    if let Some(m) = report.model.as_mut() {
        m.version = "[model]".into();
    }
    report
}

fn message(headers: &str, body: &str) -> String {
    format!("{headers}\r\nMIME-Version: 1.0\r\n\r\n{body}\r\n")
        .replace("\n", "\r\n")
        .replace("\r\r", "\r")
}

const BASE: &str = "From: Ann Lee <ann@partner.example>\nTo: bob@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <m1@partner.example>";

fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("plain_business_mail", message(&format!("{BASE}\nSubject: Q4 planning\nContent-Type: text/plain"), "Hi Bob,\nattached are the notes from Tuesday. Can we meet Thursday at 10?\nAnn")),
        ("mailing_list_newsletter", message(&format!("{BASE}\nSubject: Weekly digest\nList-Id: <news.partner.example>\nList-Unsubscribe: <mailto:leave@partner.example>\nPrecedence: bulk\nContent-Type: text/plain"), "This week: three articles on build systems.")),
        ("missing_headers", "Subject: hello\r\n\r\nno from, no date, no message-id\r\n".to_string()),
        ("ip_link_behind_bank_text", message(&format!("{BASE}\nSubject: Account locked\nContent-Type: text/html"), "<p>Unlock: <a href=\"http://192.0.2.7/login\">https://www.mybank.com/login</a></p>")),
        ("brand_lookalike_and_shortener", message(&format!("{BASE}\nSubject: Payment issue\nContent-Type: text/plain"), "Confirm at https://paypa1-secure.com/verify or https://bit.ly/3xyz")),
        ("punycode_and_userinfo", message(&format!("{BASE}\nSubject: Invoice\nContent-Type: text/plain"), "See https://xn--pple-43d.com/id and https://bank.com@evil.example/x")),
        ("executable_double_extension", message(&format!("{BASE}\nSubject: Invoice attached\nContent-Type: multipart/mixed; boundary=\"b\""), "--b\nContent-Type: text/plain\n\nPlease see the invoice.\n--b\nContent-Type: application/pdf; name=\"invoice.pdf.exe\"\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\n--b--")),
        ("macro_office_document", message(&format!("{BASE}\nSubject: Order form\nContent-Type: multipart/mixed; boundary=\"b\""), "--b\nContent-Type: text/plain\n\nForm attached, enable content.\n--b\nContent-Type: application/vnd.ms-word.document.macroEnabled.12; name=\"order.docm\"\nContent-Disposition: attachment; filename=\"order.docm\"\nContent-Transfer-Encoding: base64\n\nUEsDBBQAAAAIAA==\n--b--")),
        ("hidden_and_tiny_html_text", message(&format!("{BASE}\nSubject: News\nContent-Type: text/html"), "<p>Great offer inside</p><div style=\"display:none\">lorem ipsum dolor bayes poison words</div><span style=\"font-size:1px\">more hidden words here</span>")),
        ("image_only_html", message(&format!("{BASE}\nSubject: SALE\nContent-Type: text/html"), "<html><body><a href=\"http://shop.example/\"><img src=\"http://shop.example/a.png\"></a></body></html>")),
        ("obfuscation_and_invisible_characters", message(&format!("{BASE}\nSubject: FREE MONEY NOW\nContent-Type: text/plain; charset=utf-8"), "Buy v-i-a-g-r-a now. Fr\u{200b}ee pr\u{200b}ize c\u{200b}ash. Раypal аccount.")),
        ("bulk_mailer_tells", message("From: Deals <deals@cheap.example>\nTo: undisclosed-recipients:;\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <d1@cheap.example>\nSubject: Lower your rate          38273\nX-MSMail-Priority: High\nContent-Type: text/plain", "Rates are at a record low. Reply to apply.")),
        ("forged_freemail_and_raw_8bit_subject", message("Received: from mx.cheap.example (mx.cheap.example [192.0.2.44]) by mx.example.org; Mon, 23 Nov 2026 10:00:05 +0000\nFrom: Lucy <lucy.deals@hotmail.com>\nTo: bob@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <f1@cheap.example>\nSubject: Réduction exceptionnelle\nContent-Type: text/plain; charset=utf-8", "Offre limitée, répondez vite.")),
        ("spamware_encodings", message(&format!("{BASE}\nSubject: =?utf-8?B?Q2hlYXAgbWVkcyB0b2RheQ==?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable"), "Order now and save on every item in our catalogue, shipped discreetly to your door within days ok")),
        ("base64_plain_text", message(&format!("{BASE}\nSubject: Your reward\nContent-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: base64"), "RGVhciBmcmllbmQsIHRoaXMgb2ZmZXIgaXMgb25seSBmb3IgeW91LiBSZXBseSB0b2RheSB0byBjbGFpbSB5b3VyIHJld2FyZCBiZWZvcmUgRnJpZGF5Lg==")),
        ("odd_link_hosts", message(&format!("{BASE}\nSubject: Catalogue\nContent-Type: text/html"), "<html><p>See <a href=\"http://shop.example:8081/deals\">deals</a> and <a href=\"http://%77%77%77.shop.example/\">the shop</a></p></html>")),
        ("display_address_of_another_freemail_user", message("From: \"ceo.real@gmail.com\" <scam123@gmail.com>\nTo: bob@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <g1@mail.gmail.com>\nSubject: Quick favour\nContent-Type: text/plain", "Are you at your desk? I need a favour.")),
        ("display_address_at_the_senders_domain", message("From: \"news@partner.example\" <subscriber@mail.partner.example>\nTo: bob@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <n1@partner.example>\nSubject: Partner news\nContent-Type: text/plain", "Our quarterly news for partners.")),
        ("display_name_and_protected_domain_spoof", message("From: \"ceo@example.org\" <ceo@example.org.attacker.example>\nReply-To: payouts@other.example\nTo: bob@example.org\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <x1@attacker.example>\nSubject: Urgent wire transfer\nAuthentication-Results: mx.example.org; spf=fail smtp.mailfrom=attacker.example; dkim=fail; dmarc=fail (p=reject)\nContent-Type: text/plain", "Please wire 40,000 today. Keep this confidential.")),
    ]
}

#[test]
fn representative_reports() {
    for (name, raw) in cases() {
        let report = report(&raw);
        let sum: f64 = report.symbols.iter().map(|s| s.score).sum();
        assert!(
            (sum - report.score).abs() < 0.011,
            "{name}: {sum} vs {}",
            report.score
        );
        insta::assert_json_snapshot!(name, report);
    }
}

/// A MIME-ish message assembled from random pieces.
fn arbitrary_mime() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just("From: a@b.example\r\n".to_string()),
        Just("Content-Type: multipart/mixed; boundary=\"x\"\r\n".to_string()),
        Just("Content-Transfer-Encoding: base64\r\n".to_string()),
        Just("Content-Type: text/html; charset=bogus-8\r\n".to_string()),
        Just("Subject: =?utf-8?B?////?=\r\n".to_string()),
        Just("Received: from [999.1.1.1] by ; Mon, 99 Foo 2026\r\n".to_string()),
        "[ -~]{0,200}\r\n",
        Just(format!("X-Long: {}\r\n", "a".repeat(20_000))),
    ];
    let part = prop_oneof![
        Just("--x\r\nContent-Type: text/html\r\n\r\n<a href=http://1.2.3.4/>x</a><div style=display:none>".to_string()),
        Just("--x\r\nContent-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBAoAAAAAAP//".to_string()),
        Just("--x\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n".to_string()),
        Just("--x--\r\n".to_string()),
        "\\PC{0,300}",
    ];
    (
        proptest::collection::vec(header, 0..12),
        proptest::collection::vec(part, 0..20),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(headers, parts, noise)| {
            let mut raw = headers.concat().into_bytes();
            raw.extend_from_slice(b"\r\n");
            raw.extend(parts.concat().into_bytes());
            raw.extend(noise);
            raw
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_mime_never_panics_and_is_explained(raw in arbitrary_mime()) {
        let model = Model::from_bytes(DEFAULT_MODEL).expect("model");
        let report = scorer().score(&raw, &Envelope::default(), None, Some(&model), NOW).expect("scores");
        let sum: f64 = report.symbols.iter().map(|s| s.score).sum();
        prop_assert!((sum - report.score).abs() < 0.011);
    }

    #[test]
    fn mutated_real_mail_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..64)) {
        let mut raw = cases()[6].1.clone().into_bytes();
        for (at, byte) in flips {
            let len = raw.len();
            raw[at % len] = byte;
        }
        let scorer = scorer();
        scorer.score(&raw, &Envelope::default(), None, None, NOW).expect("scores");
    }
}

/// Hosts in every written form a URL parser accepts (root dot, IDN,
/// punycode, IP literals) are scored, not a panic.
#[test]
fn unusual_link_hosts_are_scored() {
    for host in [
        "ü.de.",
        "paypa1.com.",
        "xn--pple-43d.com.",
        "[::1]",
        "0x7f.1",
        "a..b",
        "é.",
        ".",
    ] {
        let raw = message(
            &format!("{BASE}\nSubject: links\nContent-Type: text/html"),
            &format!("<a href=\"http://{host}/\">x</a> http://{host}/y"),
        );
        let report = report(&raw);
        assert!(report.score.is_finite(), "{host}");
    }
}

#[test]
fn deep_nesting_and_a_hundred_thousand_links() {
    let mut nested =
        String::from("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for depth in 1..200 {
        nested.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{depth}\"\r\n\r\n",
            depth - 1
        ));
    }
    assert!(report(&nested).score.is_finite());

    let mut links = String::from("From: a@b.example\r\nContent-Type: text/html\r\n\r\n");
    for n in 0..100_000 {
        links.push_str(&format!("<a href=\"http://h{n}.example/p\">x</a>"));
    }
    assert!(report(&links).score.is_finite());
}
