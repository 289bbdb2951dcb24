//! Body and HTML: HTML-only mail, hidden and tiny text, image-only bodies,
//! shouting, words spelled out to dodge filters, invisible characters,
//! mixed scripts, broken encodings.

use super::{Ctx, Hits};
use crate::{symbols::*, text};

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let mail = ctx.mail;
    if mail.message.is_none() {
        return;
    }
    if mail.has_html_part && !mail.has_text_part {
        hits.add(MIME_HTML_ONLY, vec![]);
    }
    let html = &mail.html;
    if let Some(message) = mail.message.as_ref() {
        // Mail clients send plain text as such; base64 for an ASCII text
        // part hides its words from simple filters.
        let hidden_text = message.parts.iter().take(64).any(|part| {
            part.encoding == mail_parser::Encoding::Base64
                && matches!(&part.body, mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) if t.is_ascii() && t.len() >= 64)
        });
        if hidden_text {
            hits.add(MIME_BASE64_TEXT, vec![]);
        }
    }
    if mail.has_html_part && !html.html_tag {
        hits.add(HTML_MIME_NO_HTML_TAG, vec![]);
    }
    if html.hidden_chars >= 20 {
        hits.add(
            HTML_HIDDEN_TEXT,
            vec![format!(
                "{} hidden characters: {}",
                html.hidden_chars,
                html.hidden_example.as_deref().unwrap_or("")
            )],
        );
    }
    if html.tiny_chars >= 20 {
        hits.add(
            HTML_TINY_TEXT,
            vec![format!(
                "{} characters in tiny fonts: {}",
                html.tiny_chars,
                html.tiny_example.as_deref().unwrap_or("")
            )],
        );
    }
    let body = mail.body_text();
    if html.images > 0 && body.split_whitespace().take(30).count() < 30 {
        hits.add(HTML_IMAGE_ONLY, vec![format!("{} images", html.images)]);
    }
    if body.trim().is_empty() && mail.attachments.is_empty() {
        hits.add(EMPTY_BODY, vec![]);
    }
    if mail.encoding_problems > 0 {
        hits.add(
            BROKEN_ENCODING,
            vec![format!("{} parts", mail.encoding_problems)],
        );
    }

    let mut letters = 0usize;
    let mut upper = 0usize;
    let mut invisible = 0usize;
    let mut mixed: Vec<String> = Vec::new();
    let mut obfuscated: Vec<String> = Vec::new();
    let mut single_run = 0usize;
    let mut run_start: Option<&str> = None;
    for word in body.split_whitespace() {
        let mut latin = false;
        let mut other = false;
        let mut word_letters = 0usize;
        for c in word.chars() {
            if c.is_alphabetic() {
                letters += 1;
                word_letters += 1;
                if c.is_uppercase() {
                    upper += 1;
                }
                if c.is_ascii_alphabetic() {
                    latin = true;
                } else if text::is_cyrillic_or_greek(c) {
                    other = true;
                }
            } else if text::is_invisible(c) {
                invisible += 1;
            }
        }
        if latin && other && mixed.len() < 5 {
            mixed.push(word.chars().take(40).collect());
        }
        // "v-i-a-g-r-a" as one word: letters alternating with one separator.
        if word_letters >= 4 && is_spelled_out(word) && obfuscated.len() < 5 {
            obfuscated.push(word.chars().take(40).collect());
        }
        // "V I A G R A" as single-letter words in a row.
        let single = word.chars().count() == 1 && word_letters == 1;
        if single {
            if single_run == 0 {
                run_start = Some(word);
            }
            single_run += 1;
            if single_run == 5 && obfuscated.len() < 5 {
                obfuscated.push(format!("{}…", run_start.unwrap_or("")));
            }
        } else {
            single_run = 0;
        }
    }
    if letters >= 200 && upper * 2 >= letters {
        hits.add(
            BODY_EXCESS_CAPS,
            vec![format!("{}% capitals", upper * 100 / letters.max(1))],
        );
    }
    if invisible >= 3 {
        hits.add(INVISIBLE_CHARS, vec![format!("{invisible} characters")]);
    }
    if mixed.len() >= 2 {
        hits.add(MIXED_SCRIPT_WORDS, mixed);
    }
    if !obfuscated.is_empty() {
        hits.add(OBFUSCATED_WORDS, obfuscated);
    }
}

/// Letters separated by a single repeated punctuation mark: `v.i.a.g.r.a`.
fn is_spelled_out(word: &str) -> bool {
    let mut chars = word.chars();
    let (Some(first), Some(sep)) = (chars.next(), chars.next()) else {
        return false;
    };
    if !first.is_alphabetic() || !matches!(sep, '-' | '.' | '_' | '*' | '|' | '/' | '~') {
        return false;
    }
    let mut len: usize = 2;
    for (i, c) in chars.take(62).enumerate() {
        let ok = if i % 2 == 0 {
            c.is_alphabetic()
        } else {
            c == sep
        };
        if !ok {
            return false;
        }
        len += 1;
    }
    // Up to four dotted letters are an acronym (U.S.A., T.I.P.S., C.E.O.s),
    // not a disguised word.
    let acronym = sep == '.' && len.div_ceil(2) <= 4;
    len >= 7 && !acronym
}

#[cfg(test)]
mod tests {
    #[test]
    fn spelled_out_words() {
        assert!(super::is_spelled_out("v-i-a-g-r-a"));
        assert!(super::is_spelled_out("F.R.E.E.S"));
        assert!(!super::is_spelled_out("e-mail"));
        assert!(!super::is_spelled_out("a.b.c"));
        assert!(!super::is_spelled_out("2002-08-22"));
        assert!(!super::is_spelled_out("T.I.P.S."));
        assert!(super::is_spelled_out("V.I.A.G.R.A"));
    }
}
