//! The message as the analyzers see it: mail-parser's parse plus what every
//! analyzer needs (decoded text, scanned HTML, URLs, attachments), computed
//! once and bounded so hostile input cannot make scoring superlinear.

use std::net::IpAddr;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

use crate::html::{self, HtmlDoc};

/// Text considered per message (plain and HTML each).
pub const MAX_TEXT_BYTES: usize = 512 * 1024;
/// URLs analysed per message.
pub const MAX_URLS: usize = 1000;
/// MIME parts looked at.
pub const MAX_PARTS: usize = 1000;

/// What the MTA knows about the SMTP session (rspamd's request headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Envelope {
    pub client_ip: Option<IpAddr>,
    pub helo: Option<String>,
    pub hostname: Option<String>,
    pub mail_from: Option<String>,
    pub rcpt: Vec<String>,
    /// Authenticated user (outbound mail).
    pub user: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: Option<String>,
    pub content_type: String,
    /// Index of the MIME part, for [`Mail::attachment_bytes`].
    pub part: usize,
    pub size: usize,
}

#[derive(Debug, Clone)]
pub struct Url {
    pub raw: String,
    pub parsed: Option<url::Url>,
}

impl Url {
    pub fn host(&self) -> Option<&str> {
        self.parsed.as_ref().and_then(|u| u.host_str())
    }
}

/// A parsed message plus the derived views the analyzers share.
pub struct Mail<'a> {
    pub message: Option<Message<'a>>,
    pub raw_len: usize,
    pub text: String,
    pub has_text_part: bool,
    pub has_html_part: bool,
    pub html: HtmlDoc,
    pub urls: Vec<Url>,
    pub urls_total: usize,
    pub attachments: Vec<Attachment>,
    pub encoding_problems: usize,
    pub parts: usize,
}

impl<'a> Mail<'a> {
    pub fn parse(raw: &'a [u8]) -> Mail<'a> {
        let message = MessageParser::default().parse(raw);
        let mut mail = Mail {
            message: None,
            raw_len: raw.len(),
            text: String::new(),
            has_text_part: false,
            has_html_part: false,
            html: HtmlDoc::default(),
            urls: Vec::new(),
            urls_total: 0,
            attachments: Vec::new(),
            encoding_problems: 0,
            parts: 0,
        };
        let Some(message) = message else {
            return mail;
        };
        mail.parts = message.parts.len();
        let mut html_src = String::new();
        for (index, part) in message.parts.iter().enumerate().take(MAX_PARTS) {
            if part.is_encoding_problem {
                mail.encoding_problems += 1;
            }
            let is_attachment = part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
                || (index != 0 && part.attachment_name().is_some() && !part.is_text());
            match &part.body {
                PartType::Text(t) if !is_attachment => {
                    mail.has_text_part = true;
                    push_bounded(&mut mail.text, t);
                }
                PartType::Html(h) if !is_attachment => {
                    mail.has_html_part = true;
                    push_bounded(&mut html_src, h);
                }
                PartType::Multipart(_) => {}
                PartType::Message(_) => {}
                body => {
                    let contents: &[u8] = match body {
                        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
                        PartType::Binary(b) | PartType::InlineBinary(b) => b,
                        _ => &[],
                    };
                    mail.attachments.push(Attachment {
                        name: part.attachment_name().map(str::to_owned),
                        content_type: mailroom_mail::content_type_of(part),
                        part: index,
                        size: contents.len(),
                    });
                }
            }
        }
        if !html_src.is_empty() {
            mail.html = html::scan(&html_src);
        }
        mail.collect_urls();
        mail.message = Some(message);
        mail
    }

    fn collect_urls(&mut self) {
        let mut seen = std::collections::HashSet::new();
        let mut add = |raw: &str, urls: &mut Vec<Url>, total: &mut usize| {
            *total += 1;
            if urls.len() >= MAX_URLS || !seen.insert(raw.to_string()) {
                return;
            }
            let parsed = url::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            urls.push(Url {
                raw: raw.to_string(),
                parsed,
            });
        };
        let mut urls = Vec::new();
        let mut total = 0usize;
        for a in &self.html.anchors {
            let href = a.href.trim();
            if href.starts_with("http://") || href.starts_with("https://") {
                add(href, &mut urls, &mut total);
            }
        }
        let finder = {
            let mut f = linkify::LinkFinder::new();
            f.kinds(&[linkify::LinkKind::Url]);
            f
        };
        for text in [&self.text, &self.html.text] {
            for link in finder.links(text) {
                let s = link.as_str();
                if s.starts_with("http://") || s.starts_with("https://") {
                    add(s, &mut urls, &mut total);
                } else if s.starts_with("www.") {
                    add(&format!("http://{s}"), &mut urls, &mut total);
                }
                if total > MAX_URLS * 100 {
                    break;
                }
            }
        }
        self.urls = urls;
        self.urls_total = total;
    }

    /// The visible text: plain parts, or the HTML's text when there are none.
    pub fn body_text(&self) -> &str {
        if self.text.trim().is_empty() {
            &self.html.text
        } else {
            &self.text
        }
    }

    /// The decoded content of an attachment.
    pub fn attachment_bytes(&self, attachment: &Attachment) -> &[u8] {
        self.message
            .as_ref()
            .and_then(|m| m.parts.get(attachment.part))
            .map(|p| p.contents())
            .unwrap_or_default()
    }

    pub fn header_raw<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        self.message.as_ref()?.header_raw(name).map(str::trim)
    }

    /// Every top-level header as (name, raw value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.message
            .as_ref()
            .into_iter()
            .flat_map(|m| m.headers_raw())
    }

    /// Relayed by a mailing list (RFC 2369/2919 fields): the list, not the
    /// author, wrote its envelope sender, its Received chain and often its
    /// Reply-To.
    pub fn is_list_mail(&self) -> bool {
        ["List-Id", "List-Post", "Mailing-List"]
            .iter()
            .any(|h| self.has_header(h))
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    pub fn subject(&self) -> Option<&str> {
        self.message.as_ref()?.subject()
    }

    /// From: (display name, lower-cased address).
    pub fn from(&self) -> Option<(Option<&str>, Option<String>)> {
        let addr = self.message.as_ref()?.from()?.first()?;
        Some((addr.name(), addr.address().map(str::to_ascii_lowercase)))
    }

    pub fn reply_to(&self) -> Option<String> {
        let addr = self.message.as_ref()?.reply_to()?.first()?;
        addr.address().map(str::to_ascii_lowercase)
    }

    pub fn return_path(&self) -> Option<String> {
        self.message
            .as_ref()?
            .return_address()
            .map(str::to_ascii_lowercase)
    }
}

fn push_bounded(out: &mut String, s: &str) {
    if out.len() >= MAX_TEXT_BYTES {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let room = MAX_TEXT_BYTES - out.len();
    if s.len() <= room {
        out.push_str(s);
    } else {
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&s[..cut]);
    }
}

/// The domain of an address (after the last '@'), lower case.
pub fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').trim())
        .filter(|d| !d.is_empty())
}

/// Whether host `name` is `domain` or one of its subdomains, ignoring case
/// and a trailing root dot (`mx4.hotmail.com` is within `hotmail.com`,
/// `nothotmail.com` is not).
pub fn is_within(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.');
    let Some(split) = name.len().checked_sub(domain.len()) else {
        return false;
    };
    name.get(split..)
        .is_some_and(|tail| tail.eq_ignore_ascii_case(domain))
        && (split == 0 || name.as_bytes()[split - 1] == b'.')
}

/// Registrable domain, approximated without a public-suffix download: the
/// last two labels, or three under common two-level suffixes (co.uk, com.au).
pub fn registrable(host: &str) -> &str {
    let host = host.trim_end_matches('.');
    let labels: Vec<&str> = host.rsplitn(4, '.').collect();
    if labels.len() < 2 {
        return host;
    }
    let second_level = matches!(
        labels[1],
        "co" | "com" | "net" | "org" | "ac" | "gov" | "edu" | "ne" | "or" | "go"
    ) && labels[0].len() == 2;
    let keep = if second_level && labels.len() >= 3 {
        3
    } else {
        2
    };
    let skip: usize = labels[..keep].iter().map(|l| l.len() + 1).sum::<usize>() - 1;
    &host[host.len() - skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable("www.example.com"), "example.com");
        assert_eq!(registrable("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("localhost"), "localhost");
        assert_eq!(registrable("example.com."), "example.com");
    }

    #[test]
    fn extracts_text_html_urls_attachments() {
        let raw = b"From: a@example.com\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>see <a href=\"http://x.example/a\">here</a></p>\r\n--b\r\nContent-Type: application/octet-stream; name=run.exe\r\nContent-Disposition: attachment; filename=run.exe\r\n\r\nMZ....\r\n--b--\r\n";
        let mail = Mail::parse(raw);
        assert!(mail.has_html_part);
        assert!(mail.body_text().contains("see"));
        assert_eq!(mail.urls.len(), 1);
        assert_eq!(mail.attachments.len(), 1);
        assert_eq!(mail.attachments[0].name.as_deref(), Some("run.exe"));
    }
}
