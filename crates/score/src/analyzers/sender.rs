//! Tells of bulk-mailing software rather than a person's mail client: a
//! header set that claims Outlook but was not written by it, a free mail
//! sender that never passed through its provider, raw 8-bit or needlessly
//! base64 subjects, over-long quoted-printable lines, hidden recipient
//! lists, subjects stamped with a per-recipient id. Each is a
//! classic rule of rspamd or SpamAssassin. (Two other classics were tried
//! and left out: "Re: without In-Reply-To" and "Outlook X-Mailer with a
//! Message-ID not in Outlook's `$` form" fire on ham nearly as often as on
//! spam in the training corpus: old clients and relays that rewrite ids;
//! so does "Message-ID host without a dot", on half the hard ham, and a
//! title before the sender's name (Dr., Mr.), on 1.5% of the ham.)

use mail_parser::{Encoding, HeaderName, Host};

use super::{Ctx, Hits};
use crate::{
    mail::{domain_of, is_within, registrable},
    symbols::*,
};

/// Free mail providers and the names their own relays carry in Received
/// headers: mail that claims one of them in From but never passed through
/// it was forged by bulk software.
const FREEMAIL_RELAYS: &[(&str, &[&str])] = &[
    ("hotmail.com", &["hotmail.com", "msn.com", "outlook.com"]),
    ("msn.com", &["hotmail.com", "msn.com", "outlook.com"]),
    (
        "outlook.com",
        &["hotmail.com", "outlook.com", "protection.outlook.com"],
    ),
    ("yahoo.com", &["yahoo.com", "yahoo.net", "yahoodns.net"]),
    ("aol.com", &["aol.com", "aol.net"]),
    ("gmail.com", &["google.com", "gmail.com"]),
];

/// Spaces that pad a subject before a per-recipient id
/// ("Lower your rate          38273").
const ID_PADDING: usize = 3;

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let mail = ctx.mail;
    let Some(message) = mail.message.as_ref() else {
        return;
    };

    // Outlook sets X-MSMail-Priority together with X-MimeOLE.
    if mail.has_header("X-MSMail-Priority") && !mail.has_header("X-MimeOLE") {
        hits.add(MISSING_MIMEOLE, vec![]);
    }

    if let Some(subject) = mail.subject() {
        if let Some(id) = padded_id(subject) {
            hits.add(SUBJ_HAS_UNIQ_ID, vec![id.to_string()]);
        }
    }

    // Raw 8-bit bytes in Subject: RFC 2047 encoding skipped, as mail
    // clients never do.
    let raw = message.raw_message();
    let eight_bit = message
        .headers()
        .iter()
        .find(|h| h.name == HeaderName::Subject)
        .and_then(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
        .is_some_and(|bytes| bytes.iter().any(|b| !b.is_ascii()));
    if eight_bit {
        hits.add(SUBJ_ILLEGAL_CHARS, vec![]);
    }
    // Base64 for a plain ASCII subject hides its words from filters;
    // mail clients only encode what needs it.
    let subject_raw = mail.header_raw("Subject").unwrap_or("");
    if subject_raw.to_ascii_lowercase().contains("?b?")
        && mail.subject().is_some_and(|s| s.is_ascii() && s.len() >= 4)
    {
        hits.add(SUBJ_EXCESS_BASE64, vec![subject_raw.to_string()]);
    }
    // RFC 2045 caps encoded lines at 76 characters; mail software
    // keeps to it, spamware often does not. Flagged beyond 78, so that
    // an encoder that is off by a character or two is not.
    let long_qp = message.parts.iter().take(64).any(|part| {
        part.encoding == Encoding::QuotedPrintable
            && raw
                .get(part.offset_body as usize..part.offset_end as usize)
                .is_some_and(|body| {
                    body.split(|&b| b == b'\n')
                        .any(|line| line.strip_suffix(b"\r").unwrap_or(line).len() > 78)
                })
    });
    if long_qp {
        hits.add(MIME_QP_LONG_LINE, vec![]);
    }

    let from_domain = mail
        .from()
        .and_then(|(_, address)| address)
        .and_then(|a| domain_of(&a).map(|d| registrable(d).to_string()));
    let relays = from_domain.as_deref().and_then(freemail_relays);
    // A list regenerates the Received chain of what it relays.
    if let (false, Some(relays), Some(domain)) =
        (mail.is_list_mail(), relays, from_domain.as_deref())
    {
        // Only the hops' host names count (from, its reverse DNS, by):
        // "envelope-from <x@gmail.com>" or "helo=gmail.com" in a hop's
        // text is the forger's own claim.
        let mut hops = message.received_all().take(20).peekable();
        let any_hop = hops.peek().is_some();
        let through_provider = hops.any(|hop| {
            let names = [
                host_name(hop.from.as_ref()),
                hop.from_iprev.as_deref(),
                host_name(hop.by.as_ref()),
            ];
            names
                .into_iter()
                .flatten()
                .any(|name| relays.iter().any(|r| is_within(name, r)))
        });
        if any_hop && !through_provider {
            hits.add(
                FORGED_FREEMAIL_RCVD,
                vec![format!("From {domain}, no {domain} relay")],
            );
        }
    }

    let to = mail.header_raw("To").unwrap_or("");
    if to.to_ascii_lowercase().contains("undisclosed") {
        hits.add(R_UNDISC_RCPT, vec![to.to_string()]);
    }
}

fn host_name<'h>(host: Option<&'h Host<'_>>) -> Option<&'h str> {
    match host {
        Some(Host::Name(name)) => Some(name.as_ref()),
        _ => None,
    }
}

/// The relays of a free mail provider, if `domain` is one.
fn freemail_relays(domain: &str) -> Option<&'static [&'static str]> {
    FREEMAIL_RELAYS
        .iter()
        .find(|(provider, _)| *provider == domain)
        .map(|(_, relays)| *relays)
}

/// A free mail provider: its addresses belong to anyone.
pub(crate) fn is_freemail(domain: &str) -> bool {
    freemail_relays(domain).is_some()
}

/// The id at the end of a subject padded with spaces before it: a last
/// word with a digit, after at least [`ID_PADDING`] spaces.
fn padded_id(subject: &str) -> Option<&str> {
    let subject = subject.trim_end();
    let (head, last) = subject.rsplit_once(' ')?;
    let padding = head.len() - head.trim_end_matches(' ').len() + 1;
    let id = last.trim_matches(|c: char| "[]()#-:".contains(c));
    (padding >= ID_PADDING
        && !head.trim().is_empty()
        && id.len() >= 3
        && id.chars().any(|c| c.is_ascii_digit())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    .then_some(last)
}

#[cfg(test)]
mod tests {
    use super::padded_id;

    #[test]
    fn relays_match_whole_labels() {
        use crate::mail::is_within;
        assert!(is_within("mx4.hotmail.com", "hotmail.com"));
        assert!(is_within("HOTMAIL.COM.", "hotmail.com"));
        assert!(!is_within("nothotmail.com", "hotmail.com"));
        assert!(!is_within("hotmail.com.evil.example", "hotmail.com"));
        assert!(!is_within("ü", "hotmail.com"));
    }

    #[test]
    fn padded_ids_are_found_and_ordinary_subjects_are_not() {
        assert_eq!(padded_id("Lower your rate          38273"), Some("38273"));
        assert_eq!(padded_id("Free offer    [ab12c]"), Some("[ab12c]"));
        assert_eq!(padded_id("Invoice 12345"), None);
        assert_eq!(padded_id("Meeting at 10  am"), None);
        assert_eq!(padded_id("       12345"), None);
    }
}
