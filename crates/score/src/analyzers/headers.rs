//! Header checks: Date, Message-ID, From/Reply-To/Return-Path consistency,
//! display-name and protected-domain spoofing, bulk markers, subject shape.

use super::{sender::is_freemail, Ctx, Hits};
use crate::{
    mail::{domain_of, is_within, registrable},
    symbols::*,
    text::skeleton,
};

const FUTURE_SECS: i64 = 6 * 3600;
const PAST_SECS: i64 = 7 * 24 * 3600;

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let mail = ctx.mail;
    let Some(message) = mail.message.as_ref() else {
        hits.add(MISSING_FROM, vec![]);
        hits.add(MISSING_DATE, vec![]);
        hits.add(MISSING_MID, vec![]);
        return;
    };

    // Date, against the time the receiving MTA stamped on the top hop.
    match mail.header_raw("Date") {
        None => hits.add(MISSING_DATE, vec![]),
        Some(raw) => match message.date().filter(|d| d.is_valid()) {
            None => hits.add(INVALID_DATE, vec![raw.to_string()]),
            Some(date) => {
                let sent = date.to_timestamp();
                let reference = message
                    .received()
                    .and_then(|r| r.date.as_ref())
                    .filter(|d| d.is_valid())
                    .map(|d| d.to_timestamp())
                    .unwrap_or(ctx.now_unix);
                if sent - reference > FUTURE_SECS {
                    hits.add(
                        DATE_IN_FUTURE,
                        vec![format!("{} h ahead", (sent - reference) / 3600)],
                    );
                } else if reference - sent > PAST_SECS {
                    hits.add(
                        DATE_IN_PAST,
                        vec![format!("{} days before", (reference - sent) / 86_400)],
                    );
                }
            }
        },
    }

    match mail.header_raw("Message-ID") {
        None => hits.add(MISSING_MID, vec![]),
        Some(raw) => {
            let id = raw.trim();
            let inner = id.trim_start_matches('<').trim_end_matches('>');
            let well_formed = id.starts_with('<')
                && id.ends_with('>')
                && inner
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !inner.contains(char::is_whitespace);
            if !well_formed {
                hits.add(INVALID_MSGID, vec![raw.to_string()]);
            }
        }
    }

    if message.to().is_none() && message.cc().is_none() {
        hits.add(MISSING_TO, vec![]);
    }

    match mail.subject().map(str::trim) {
        None | Some("") => hits.add(MISSING_SUBJECT, vec![]),
        Some(subject) => {
            let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
            let upper = letters.iter().filter(|c| c.is_uppercase()).count();
            if letters.len() >= 10 && upper * 10 >= letters.len() * 9 {
                hits.add(SUBJ_ALL_CAPS, vec![]);
            }
        }
    }

    let from = mail.from();
    let from_address = from.as_ref().and_then(|(_, a)| a.clone());
    let from_domain = from_address.as_deref().and_then(domain_of).map(registrable);
    if from.is_none() {
        hits.add(MISSING_FROM, vec![]);
    }

    // A mailing list relays posts with its own bounce address and often
    // points Reply-To at the list (RFC 2369): neither mismatch says anything
    // about the author there, as rspamd's *_MAILLIST exemptions also hold.
    let list_mail = mail.is_list_mail();
    if let (false, Some(fd), Some(reply)) = (list_mail, from_domain, mail.reply_to()) {
        if let Some(rd) = domain_of(&reply).map(registrable) {
            if rd != fd {
                hits.add(REPLYTO_DOM_NEQ_FROM_DOM, vec![format!("{fd} → {rd}")]);
            }
        }
    }
    if let (false, Some(fd), Some(rp)) = (list_mail, from_domain, mail.return_path()) {
        if let Some(rd) = domain_of(&rp).map(registrable) {
            if rd != fd {
                hits.add(FROM_NEQ_RETURN_PATH, vec![format!("{fd} ≠ {rd}")]);
            }
        }
    }

    if let Some((Some(name), address)) = &from {
        let name_lower = name.to_ascii_lowercase();
        // A display name that is itself an address must be at the sender's
        // domain: "news@example.com" <subscriber@example.com> hides nothing.
        // At a free mail provider anyone has an address, so there it must
        // be the sender's own.
        if let Some(shown) = name_lower
            .split(|c: char| {
                c.is_whitespace() || c == '<' || c == '>' || c == '"' || c == '(' || c == ')'
            })
            .map(|w| w.trim_matches(|c: char| matches!(c, '\'' | ',' | ';' | '.' | ':')))
            .find(|w| w.contains('@') && w.contains('.'))
        {
            let shown_domain = domain_of(shown).map(registrable);
            let same = match shown_domain {
                Some(d) if is_freemail(d) => address.as_deref() == Some(shown),
                Some(d) => Some(d) == from_domain,
                None => false,
            };
            if !same {
                hits.add(
                    DISPLAY_NAME_SPOOF,
                    vec![format!(
                        "shows {shown}, sent from {}",
                        address.as_deref().unwrap_or("nothing")
                    )],
                );
            }
        }
        let actual = address.as_deref().and_then(domain_of).unwrap_or("");
        for protected in &ctx.config.protected_domains {
            let p = protected.to_ascii_lowercase();
            if !is_within(actual, &p) && name_lower.contains(&p) {
                hits.add(
                    PROTECTED_DOMAIN_SPOOF,
                    vec![format!("display name claims {p}, sent from {actual}")],
                );
            }
        }
    }
    // A From domain that looks like a protected one but is not it.
    if let Some(fd) = from_domain {
        for protected in &ctx.config.protected_domains {
            let p = protected.to_ascii_lowercase();
            if fd != p && skeleton(fd) == skeleton(&p) {
                hits.add(PROTECTED_DOMAIN_SPOOF, vec![format!("{fd} imitates {p}")]);
            }
        }
    }

    let mut bulk = Vec::new();
    for name in [
        "List-Unsubscribe",
        "List-Id",
        "Feedback-ID",
        "X-Campaign",
        "X-Mailgun-Tag",
    ] {
        if mail.has_header(name) {
            bulk.push(name.to_string());
        }
    }
    if let Some(p) = mail.header_raw("Precedence") {
        let p = p.to_ascii_lowercase();
        if p.contains("bulk") || p.contains("list") || p.contains("junk") {
            bulk.push(format!("Precedence: {p}"));
        }
    }
    if !bulk.is_empty() {
        hits.add(BULK_HEADER, bulk);
    }
}
