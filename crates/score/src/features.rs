//! Hashed features for the statistical model: words and bigrams of the
//! subject and body, header names and tokens of their values, URL parts,
//! attachment types, the names of the symbols that fired, and a few
//! shape buckets. Each token is hashed (xxh3) into a fixed space, so the
//! model has a fixed size and no per-token lookups elsewhere.

use xxhash_rust::xxh3::xxh3_64;

use crate::{
    mail::{domain_of, registrable, Mail},
    text,
};

/// Body words considered (a linear bound on work per message).
const MAX_BODY_WORDS: usize = 4000;
/// Tokens taken from one header value.
const MAX_HEADER_TOKENS: usize = 24;
const MAX_TOKEN_CHARS: usize = 24;

/// Headers whose values are noise for a content model (unique per
/// message, or handled structurally elsewhere).
const SKIP_VALUE_TOKENS: &[&str] = &[
    "date",
    "message-id",
    "received",
    "dkim-signature",
    "domainkey-signature",
    "x-google-dkim-signature",
    "arc-seal",
    "arc-message-signature",
    "references",
    "in-reply-to",
    "content-length",
    "lines",
    "return-path",
];

/// Headers every well-formed message carries: their presence says nothing
/// (their absence is a symbol of its own, such as MISSING_TO), and a model
/// that weighs it learns which corpus mailboxes stripped them. A nuisance
/// (see [`Purpose`]), like the two lists below.
const EVERY_MESSAGE_HAS: &[&str] = &["received", "to", "from", "subject", "date", "message-id"];

/// Headers the receiving side adds (its MTA, filters, mail store): they
/// describe the mailbox, not the sender, and a model that learns them
/// learns one corpus's plumbing, not mail.
const RECEIVER_SIDE: &[&str] = &[
    "delivered-to",
    "delivery-date",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
    "x-virus-scanned",
    "x-virus-status",
    "x-scanned-by",
    "x-filtered-by",
    "x-status",
    "x-keywords",
    "x-uid",
    "x-uidl",
    "status",
    "x-mime-autoconverted",
    "x-reject",
    "x-pyzor",
    "x-dcc-",
    "x-razor",
    "x-spam-",
    "x-mailscanner",
    "x-amavis",
    "x-antivirus",
    "x-sieve",
    "x-quarantine",
];

/// Distinct hashed features of one message, with the token text kept in an
/// arena so a report can say which words drove the model.
#[derive(Debug, Default, Clone)]
pub struct FeatureSet {
    arena: String,
    entries: Vec<(u32, u32, u32)>, // (index, token start, token end)
    bits: u8,
}

impl FeatureSet {
    pub fn new(bits: u8) -> Self {
        Self {
            arena: String::with_capacity(16 * 1024),
            entries: Vec::with_capacity(1024),
            bits,
        }
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    fn push(&mut self, prefix: &str, token: &str) {
        let start = self.arena.len();
        self.arena.push_str(prefix);
        self.arena.push_str(token);
        let end = self.arena.len();
        let hash = xxh3_64(&self.arena.as_bytes()[start..end]);
        let index = (hash & ((1u64 << self.bits) - 1)) as u32;
        self.entries.push((index, start as u32, end as u32));
    }

    /// Sorts and removes repeats: features are binary (present or not),
    /// which keeps long messages from outvoting short ones.
    fn finish(&mut self) {
        // Sorting one u64 per entry (index, then position) is several times
        // cheaper than sorting the entries themselves.
        let mut keys: Vec<u64> = self
            .entries
            .iter()
            .enumerate()
            .map(|(position, e)| (u64::from(e.0) << 32) | position as u64)
            .collect();
        keys.sort_unstable();
        let mut sorted = Vec::with_capacity(keys.len());
        let mut last = None;
        for key in keys {
            let index = (key >> 32) as u32;
            if last != Some(index) {
                last = Some(index);
                sorted.push(self.entries[(key & 0xffff_ffff) as usize]);
            }
        }
        self.entries = sorted;
    }

    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|e| e.0)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token text of the feature at `position` (in index order).
    pub fn token(&self, position: usize) -> &str {
        self.entries
            .get(position)
            .and_then(|&(_, s, e)| self.arena.get(s as usize..e as usize))
            .unwrap_or("")
    }

    pub fn entries(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.entries
            .iter()
            .map(|&(i, s, e)| (i, self.arena.get(s as usize..e as usize).unwrap_or("")))
    }
}

/// Lower-cases and bounds one token; returns false for tokens not worth
/// keeping (single characters, pure punctuation).
fn normalize(word: &str, out: &mut String) -> bool {
    out.clear();
    let trimmed = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '$' && c != '!');
    if trimmed.is_ascii() {
        // Most tokens: no invisible characters, one byte per character.
        let kept = &trimmed[..trimmed.len().min(MAX_TOKEN_CHARS)];
        out.push_str(kept);
        out.make_ascii_lowercase();
        if kept.len() < trimmed.len() {
            out.push('…');
        }
        return kept.len() >= 2 || kept.contains(['$', '!']);
    }
    let mut chars = 0;
    for c in trimmed.chars() {
        if text::is_invisible(c) {
            continue;
        }
        if chars == MAX_TOKEN_CHARS {
            out.push('…');
            break;
        }
        for l in c.to_lowercase() {
            out.push(l);
        }
        chars += 1;
    }
    chars >= 2 || out.chars().any(|c| c == '$' || c == '!')
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '[' | ']' | '"' | '<' | '>' | '{' | '}' | '|' | '*' | '='
            )
    })
    .filter(|w| !w.is_empty())
}

fn add_text(set: &mut FeatureSet, prefix: &str, bigram_prefix: &str, s: &str, limit: usize) {
    let mut prev = String::new();
    let mut cur = String::new();
    let mut pair = String::new();
    for word in words(s).take(limit) {
        if !normalize(word, &mut cur) {
            continue;
        }
        set.push(prefix, &cur);
        if !prev.is_empty() {
            pair.clear();
            pair.push_str(&prev);
            pair.push(' ');
            pair.push_str(&cur);
            set.push(bigram_prefix, &pair);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
}

/// Headers a mailing-list server adds when it relays a post (RFC 2369 and
/// 2919 fields, Mailman's and Yahoo Groups' own): they name the channel, not
/// the author, so spam relayed by a list carries the same ones as the list's
/// real posts. Bulk mail as such is a symbol (BULK_HEADER), which the model
/// still sees.
const LIST_SERVER: &[&str] = &[
    "list-",
    "mailing-list",
    "x-list",
    "x-beenthere",
    "x-mailman-version",
    "x-loop",
    "precedence",
    "errors-to",
    "sender",
    "x-original-sender",
    "x-egroups-return",
    "x-yahoo-profile",
    "x-apparently-to",
];

/// Whether `name` is listed in `family`; an entry also covers its family:
/// `x-spam-` and `x-mailscanner` cover `x-spam-status` and
/// `x-mailscanner-from`.
fn in_family(family: &[&str], name: &str) -> bool {
    family.iter().any(|r| {
        name.strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || r.ends_with('-') || rest.starts_with('-'))
    })
}

fn bucket(n: usize) -> String {
    // 0, 1, 2-3, 4-7, ... as the bit length.
    (usize::BITS - n.leading_zeros()).to_string()
}

/// What the features are for. Training also sees the nuisance headers
/// (ubiquitous ones, the receiving side's, a list server's), so that the
/// model has somewhere to put what they carry about the training corpus's
/// mailboxes; scoring leaves them out, so that none of it reaches a
/// verdict. Without them in training, that signal would leak into the
/// content words that co-occur with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Training,
    Scoring,
}

/// Every feature of a message, given the symbols that fired on it.
pub fn extract<'s>(
    mail: &Mail<'_>,
    symbols: impl Iterator<Item = &'s str>,
    bits: u8,
    purpose: Purpose,
) -> FeatureSet {
    let mut set = FeatureSet::new(bits);
    let mut tok = String::new();

    if let Some(subject) = mail.subject() {
        add_text(&mut set, "s:", "S:", subject, 64);
    }
    let body = mail.body_text();
    add_text(&mut set, "w:", "b:", body, MAX_BODY_WORDS);

    for (name, value) in mail.headers().take(200) {
        let name = name.to_ascii_lowercase();
        let scoring = purpose == Purpose::Scoring;
        if scoring && (in_family(RECEIVER_SIDE, &name) || in_family(LIST_SERVER, &name)) {
            continue;
        }
        if !(scoring && EVERY_MESSAGE_HAS.contains(&name.as_str())) {
            set.push("h:", &name);
        }
        if SKIP_VALUE_TOKENS.contains(&name.as_str()) {
            continue;
        }
        let prefix = format!("H{name}:");
        for word in words(value).take(MAX_HEADER_TOKENS) {
            if normalize(word, &mut tok) {
                set.push(&prefix, &tok);
            }
        }
    }
    if let Some((_, Some(address))) = mail.from() {
        if let Some(d) = domain_of(&address) {
            set.push("fd:", d);
            set.push("fr:", registrable(d));
        }
    }
    if let Some(message) = mail.message.as_ref() {
        for received in message.received_all().take(10) {
            if let Some(mail_parser::Host::Name(from)) = &received.from {
                set.push("rf:", registrable(&from.to_ascii_lowercase()));
            }
        }
        if let Some(id) = message.message_id() {
            if let Some(d) = domain_of(id) {
                set.push("mid:", registrable(&d.to_ascii_lowercase()));
            }
            let shape: String = id
                .chars()
                .take(40)
                .map(|c| match c {
                    '0'..='9' => '9',
                    'a'..='z' => 'a',
                    'A'..='Z' => 'A',
                    c => c,
                })
                .collect();
            set.push("mids:", &shape);
        }
        let to = message.to().map(|a| a.iter().count()).unwrap_or(0);
        set.push("nto:", &bucket(to));
    }

    for url in mail.urls.iter().take(200) {
        let Some(parsed) = url.parsed.as_ref() else {
            set.push("u!", "unparsed");
            continue;
        };
        if let Some(host) = parsed.host_str() {
            let host = host.to_ascii_lowercase();
            set.push("uh:", &host);
            set.push("ud:", registrable(&host));
            if let Some(tld) = host.rsplit('.').next() {
                set.push("ut:", tld);
            }
        }
        for part in parsed
            .path()
            .split(['/', '.', '-', '_', '?', '&', '='])
            .filter(|p| p.len() >= 2)
            .take(8)
        {
            if normalize(part, &mut tok) {
                set.push("up:", &tok);
            }
        }
        if parsed.query().is_some() {
            set.push("uq:", "query");
        }
    }
    set.push("nurl:", &bucket(mail.urls_total));

    for a in mail.attachments.iter().take(50) {
        set.push("act:", &a.content_type);
        if let Some(ext) = a
            .name
            .as_deref()
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, e)| e)
        {
            set.push("aext:", &ext.to_ascii_lowercase());
        }
    }

    for symbol in symbols {
        set.push("y:", symbol);
    }

    set.push("len:", &bucket(body.len()));
    set.push("raw:", &bucket(mail.raw_len));
    set.push("img:", &bucket(mail.html.images));
    set.push(
        "mime:",
        match (mail.has_text_part, mail.has_html_part) {
            (true, true) => "alternative",
            (true, false) => "text",
            (false, true) => "html",
            (false, false) => "none",
        },
    );
    set.finish();
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_cover_their_members_and_nothing_else() {
        assert!(in_family(RECEIVER_SIDE, "x-spam-status"));
        assert!(in_family(RECEIVER_SIDE, "x-mailscanner-from"));
        assert!(in_family(RECEIVER_SIDE, "delivered-to"));
        assert!(!in_family(RECEIVER_SIDE, "x-mailer"));
        assert!(!in_family(RECEIVER_SIDE, "statuses"));
        assert!(in_family(LIST_SERVER, "list-unsubscribe"));
        assert!(in_family(LIST_SERVER, "x-list-id"));
        assert!(!in_family(LIST_SERVER, "x-listening"));
        assert!(!in_family(LIST_SERVER, "senders"));
    }

    #[test]
    fn nuisance_headers_are_learned_from_but_never_scored() {
        let raw = b"Delivered-To: me@corpus.example\r\nList-Id: <talk.lists.example>\r\n\
            From: a@b.example\r\nTo: c@d.example\r\nSubject: hello there\r\n\
            X-Mailer: Mutt\r\n\r\nbody words here\r\n";
        let mail = Mail::parse(raw);
        let tokens = |purpose| {
            let set = extract(&mail, std::iter::empty(), 20, purpose);
            (0..set.len())
                .map(|i| set.token(i).to_string())
                .collect::<Vec<_>>()
        };
        let training = tokens(Purpose::Training);
        let scoring = tokens(Purpose::Scoring);
        for nuisance in ["h:delivered-to", "h:list-id", "h:to"] {
            assert!(
                training.iter().any(|t| t == nuisance),
                "{nuisance} in training"
            );
            assert!(
                !scoring.iter().any(|t| t == nuisance),
                "{nuisance} not scored"
            );
        }
        assert!(!scoring.iter().any(|t| t.starts_with("Hlist-id:")));
        // What the sender wrote is scored: its headers' values and the body.
        for kept in ["h:x-mailer", "Hx-mailer:mutt", "Hto:c@d.example", "w:words"] {
            assert!(scoring.iter().any(|t| t == kept), "{kept} scored");
        }
    }
}
