//! Tells of bulk-mailing software rather than a person's mail client: a
//! header set that claims Outlook but was not written by it, hidden
//! recipient lists, subjects stamped with a per-recipient id. Each is a
//! classic rule of rspamd or SpamAssassin. (Two other classics were tried
//! and left out: "Re: without In-Reply-To" and "Outlook X-Mailer with a
//! Message-ID not in Outlook's `$` form" fire on ham nearly as often as on
//! spam in the training corpus: old clients and relays that rewrite ids.)

use super::{Ctx, Hits};
use crate::symbols::*;

/// Spaces that pad a subject before a per-recipient id
/// ("Lower your rate          38273").
const ID_PADDING: usize = 3;

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let mail = ctx.mail;
    if mail.message.is_none() {
        return;
    }

    // Outlook sets X-MSMail-Priority together with X-MimeOLE.
    if mail.has_header("X-MSMail-Priority") && !mail.has_header("X-MimeOLE") {
        hits.add(MISSING_MIMEOLE, vec![]);
    }

    if let Some(subject) = mail.subject() {
        if let Some(id) = padded_id(subject) {
            hits.add(SUBJ_HAS_UNIQ_ID, vec![id.to_string()]);
        }
    }

    let to = mail.header_raw("To").unwrap_or("");
    if to.to_ascii_lowercase().contains("undisclosed") {
        hits.add(R_UNDISC_RCPT, vec![to.to_string()]);
    }
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
    fn padded_ids_are_found_and_ordinary_subjects_are_not() {
        assert_eq!(padded_id("Lower your rate          38273"), Some("38273"));
        assert_eq!(padded_id("Free offer    [ab12c]"), Some("[ab12c]"));
        assert_eq!(padded_id("Invoice 12345"), None);
        assert_eq!(padded_id("Meeting at 10  am"), None);
        assert_eq!(padded_id("       12345"), None);
    }
}
