//! Every symbol the analyzers can emit, with its default weight and what it
//! means. Weights are rspamd's where rspamd has the same rule; the
//! statistical model also sees each fired symbol as a feature, so it learns
//! how much a rule is really worth on the training mail.

pub struct SymbolDef {
    pub name: &'static str,
    pub weight: f64,
    pub description: &'static str,
}

macro_rules! symbols {
    ($($name:ident = $weight:expr, $desc:expr;)*) => {
        $(pub const $name: &str = stringify!($name);)*
        pub const TABLE: &[SymbolDef] = &[
            $(SymbolDef { name: stringify!($name), weight: $weight, description: $desc },)*
        ];
    };
}

symbols! {
    // headers
    MISSING_DATE = 1.0, "Message has no Date header";
    INVALID_DATE = 1.5, "Date header is malformed";
    DATE_IN_FUTURE = 4.0, "Date is more than 6 hours after the message was received";
    DATE_IN_PAST = 1.0, "Date is more than 7 days before the message was received";
    MISSING_MID = 2.5, "Message has no Message-ID header";
    INVALID_MSGID = 1.7, "Message-ID is malformed";
    MISSING_FROM = 2.0, "Message has no From header";
    MISSING_TO = 2.0, "Message has no To or Cc recipients";
    MISSING_SUBJECT = 1.0, "Message has no subject";
    SUBJ_ALL_CAPS = 1.5, "Subject is written in capital letters";
    REPLYTO_DOM_NEQ_FROM_DOM = 1.0, "Reply-To domain differs from the From domain";
    FROM_NEQ_RETURN_PATH = 0.3, "Return-Path domain differs from the From domain";
    DISPLAY_NAME_SPOOF = 3.0, "Display name shows an address other than the sender's";
    PROTECTED_DOMAIN_SPOOF = 6.0, "Sender claims a protected domain it does not send from";
    BULK_HEADER = 0.0, "Bulk or mailing-list markers";
    // sender software and addressing
    MISSING_MIMEOLE = 1.0, "X-MSMail-Priority without the X-MimeOLE that Outlook adds with it";
    SUBJ_HAS_UNIQ_ID = 1.0, "Subject ends in a per-recipient id after padding";
    R_UNDISC_RCPT = 1.0, "Recipients hidden as undisclosed";
    SUBJ_EXCESS_BASE64 = 1.0, "Plain ASCII subject needlessly base64-encoded";
    MIME_QP_LONG_LINE = 1.0, "Quoted-printable line longer than RFC 2045 allows";
    SUBJ_ILLEGAL_CHARS = 1.0, "Subject has raw 8-bit characters (no RFC 2047 encoding)";
    FORGED_FREEMAIL_RCVD = 1.5, "From a free mail provider, but no Received hop passed through it";
    // Received chain
    RCVD_COUNT_ZERO = 0.2, "No Received headers";
    RCVD_HELO_IP_MISMATCH = 1.0, "HELO is an IP literal other than the connecting address";
    RCVD_DATE_BACKWARDS = 1.5, "Received chain goes back in time (forged hops)";
    RCVD_UNPARSABLE = 1.0, "A Received header does not parse";
    // Authentication-Results from the receiving MTA
    R_SPF_ALLOW = -0.2, "SPF verdict: pass";
    R_SPF_FAIL = 1.0, "SPF verdict: fail";
    R_SPF_SOFTFAIL = 0.5, "SPF verdict: softfail";
    R_DKIM_ALLOW = -0.2, "DKIM verdict: pass";
    R_DKIM_REJECT = 1.0, "DKIM verdict: fail";
    DMARC_POLICY_ALLOW = -0.5, "DMARC verdict: pass";
    DMARC_POLICY_QUARANTINE = 1.5, "DMARC verdict: fail, policy quarantine";
    DMARC_POLICY_REJECT = 2.0, "DMARC verdict: fail, policy reject";
    // body and HTML
    MIME_HTML_ONLY = 0.2, "HTML without a text alternative";
    MIME_BASE64_TEXT = 1.0, "ASCII text part needlessly base64-encoded";
    HTML_MIME_NO_HTML_TAG = 0.5, "HTML part without an <html> tag";
    HTML_HIDDEN_TEXT = 1.5, "HTML hides text (display:none, visibility:hidden)";
    HTML_TINY_TEXT = 1.0, "HTML text in tiny or zero-size font";
    HTML_IMAGE_ONLY = 2.0, "HTML with images and almost no text";
    BODY_EXCESS_CAPS = 1.5, "Body text is mostly capital letters";
    OBFUSCATED_WORDS = 2.0, "Words spelled out with separators (v-i-a-g-r-a)";
    INVISIBLE_CHARS = 2.0, "Zero-width or invisible characters inside the text";
    MIXED_SCRIPT_WORDS = 2.0, "Words mixing Latin with Cyrillic or Greek letters";
    BROKEN_ENCODING = 1.0, "A part's transfer encoding or charset is broken";
    EMPTY_BODY = 1.0, "Message has no readable text";
    // URLs
    URL_IP_HOST = 2.5, "Link to a bare IP address";
    URL_ANCHOR_MISMATCH = 3.0, "Link text shows one domain, the link goes to another";
    URL_SHORTENER = 0.5, "Link through a URL shortener";
    URL_PUNYCODE = 1.0, "Link to an internationalised (punycode) domain";
    URL_BRAND_LOOKALIKE = 5.0, "Link to a domain that imitates a known brand";
    URL_SUSPICIOUS_TLD = 1.0, "Link to a top-level domain favoured by spammers";
    URL_REDIRECT_PARAM = 1.0, "Link that redirects to another URL in its query";
    URL_WEIRD_PORT = 1.0, "Link to a web server on an unusual port";
    URL_ESCAPED_HOST = 2.0, "Link whose host name is percent-escaped";
    URL_USERINFO = 3.0, "Link with a user name before the host (https://bank.com@evil)";
    // attachments
    ATTACH_EXECUTABLE = 5.0, "Executable attachment";
    ATTACH_DOUBLE_EXT = 4.0, "Attachment with a double extension (invoice.pdf.exe)";
    ATTACH_MACRO_OFFICE = 3.0, "Macro-enabled office document";
    ATTACH_ARCHIVE_EXEC = 5.0, "Archive containing an executable";
    ATTACH_TYPE_MISMATCH = 2.0, "Attachment's content does not match its declared type or extension";
    // allow and block lists
    ALLOWLIST_FROM = -20.0, "Sender is on the allow list";
    ALLOWLIST_IP = -20.0, "Client IP is on the allow list";
    BLOCKLIST_FROM = 20.0, "Sender is on the block list";
    BLOCKLIST_IP = 20.0, "Client IP is on the block list";
    // statistical model (points computed from the model's log-odds)
    MODEL_SPAM = 0.0, "Statistical model: spam-like content";
    MODEL_HAM = 0.0, "Statistical model: ham-like content";
}

pub fn lookup(name: &str) -> Option<&'static SymbolDef> {
    TABLE.iter().find(|s| s.name == name)
}
