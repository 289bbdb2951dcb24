use mail_parser::{
    Address as ParsedAddress, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};
use mailroom_domain::{Address, AttachmentMeta, MessageView};

use crate::links::extract_links;

/// Upper bound on attachments listed in a view (a 10,000-part message keeps
/// its first thousand, with a warning).
pub const MAX_ATTACHMENTS: usize = 1000;
/// Upper bound on the stored text body, in bytes: enough for any human
/// message, small enough that a 25 MiB text blob cannot bloat every read.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// Parses a raw message into the view the rest of the pipeline reads.
/// Never fails: what cannot be parsed is left empty and noted in `warnings`.
pub fn parse_view(raw: &[u8]) -> MessageView {
    let Some(message) = MessageParser::default().parse(raw) else {
        return MessageView {
            warnings: vec!["no MIME structure could be parsed".into()],
            ..MessageView::default()
        };
    };
    let mut warnings = Vec::new();

    let (text_body, text_from_html) = body_text(&message);
    let text_body = truncate_utf8(text_body, MAX_TEXT_BYTES, &mut warnings);

    let html: Vec<String> = message
        .html_bodies()
        .filter_map(|p| p.text_contents())
        .take(20)
        .map(str::to_owned)
        .collect();
    let links =
        extract_links(std::iter::once(text_body.as_str()).chain(html.iter().map(String::as_str)));

    let mut attachments = Vec::new();
    for part in message.attachments() {
        if attachments.len() >= MAX_ATTACHMENTS {
            warnings.push(format!(
                "only the first {MAX_ATTACHMENTS} of {} attachments are listed",
                message.attachment_count()
            ));
            break;
        }
        attachments.push(AttachmentMeta {
            name: part.attachment_name().map(str::to_owned),
            content_type: content_type_of(part),
            size: part.len() as u64,
        });
    }

    if message.headers().is_empty() {
        warnings.push("the message has no header fields".into());
    }

    let date = message.date().filter(|d| d.is_valid());
    let mut view = MessageView {
        from: message.from().and_then(|a| addresses(a).into_iter().next()),
        to: message.to().map(addresses).unwrap_or_default(),
        cc: message.cc().map(addresses).unwrap_or_default(),
        reply_to: message.reply_to().map(addresses).unwrap_or_default(),
        subject: message.subject().map(str::to_owned),
        date: date.map(|d| d.to_rfc3339()),
        date_unix: date.map(|d| d.to_timestamp()),
        message_id: message.message_id().map(str::to_owned),
        in_reply_to: text_list(message.in_reply_to()),
        references: text_list(message.references()),
        text_body,
        text_from_html,
        attachments,
        links,
        warnings,
        score: None,
    };
    scrub_nul(&mut view);
    view
}

/// A part's declared `type/subtype`, lower-cased; parts without one are
/// `application/octet-stream` (RFC 2046's default for attachments).
pub fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase()
}

/// NUL is never meaningful in text, and PostgreSQL's `text` refuses it: a
/// stray `\0` must not make a message unstorable.
fn scrub_nul(view: &mut MessageView) {
    fn scrub(s: &mut String) {
        if s.contains('\0') {
            s.retain(|c| c != '\0');
        }
    }
    let addresses = view
        .from
        .iter_mut()
        .chain(&mut view.to)
        .chain(&mut view.cc)
        .chain(&mut view.reply_to);
    for a in addresses {
        a.name
            .iter_mut()
            .chain(a.address.iter_mut())
            .for_each(scrub);
    }
    view.subject
        .iter_mut()
        .chain(view.message_id.iter_mut())
        .for_each(scrub);
    view.in_reply_to
        .iter_mut()
        .chain(&mut view.references)
        .chain(&mut view.links)
        .for_each(scrub);
    scrub(&mut view.text_body);
    for a in &mut view.attachments {
        a.name.iter_mut().for_each(scrub);
        scrub(&mut a.content_type);
    }
}

/// The first text body; mail-parser converts an HTML-only body to text, which
/// we detect to record where the text came from.
fn body_text(message: &Message<'_>) -> (String, bool) {
    let from_html = message
        .text_body
        .first()
        .and_then(|id| message.part(*id))
        .map(|p| p.is_text_html())
        .unwrap_or(false);
    if let Some(text) = message.body_text(0) {
        return (text.into_owned(), from_html);
    }
    // A multipart cut short (no closing boundary) leaves its parts out of the
    // body lists; the text is still worth keeping.
    for part in message.parts.iter().skip(1) {
        let attachment = part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
        match &part.body {
            PartType::Text(text) if !attachment => return (text.to_string(), false),
            PartType::Html(html) if !attachment => {
                return (mail_parser::decoders::html::html_to_text(html), true)
            }
            _ => {}
        }
    }
    (String::new(), false)
}

fn truncate_utf8(mut text: String, max: usize, warnings: &mut Vec<String>) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        warnings.push(format!("text body truncated to {max} bytes"));
    }
    text
}

fn addresses(list: &ParsedAddress<'_>) -> Vec<Address> {
    list.iter()
        .map(|a| Address {
            name: a.name().map(str::to_owned),
            address: a.address().map(str::to_owned),
        })
        .collect()
}

fn text_list(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_bodies_attachments_links() {
        let raw = b"From: Ann Example <ann@example.com>\r\n\
To: bob@example.org, Carol <carol@example.net>\r\n\
Cc: dan@example.com\r\n\
Reply-To: replies@example.com\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9?= invoice\r\n\
Date: Tue, 3 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <abc@example.com>\r\n\
In-Reply-To: <prev@example.com>\r\n\
References: <root@example.com> <prev@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
Pay at https://pay.example.com/x now.\r\n\
--b\r\n\
Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b--\r\n";
        let v = parse_view(raw);
        assert_eq!(
            v.from.as_ref().and_then(|a| a.address.as_deref()),
            Some("ann@example.com")
        );
        assert_eq!(
            v.from.as_ref().and_then(|a| a.name.as_deref()),
            Some("Ann Example")
        );
        assert_eq!(v.to.len(), 2);
        assert_eq!(v.cc.len(), 1);
        assert_eq!(v.reply_to.len(), 1);
        assert_eq!(v.subject.as_deref(), Some("Café invoice"));
        assert_eq!(v.date.as_deref(), Some("2026-11-03T10:00:00Z"));
        assert_eq!(v.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(v.in_reply_to, vec!["prev@example.com"]);
        assert_eq!(v.references, vec!["root@example.com", "prev@example.com"]);
        assert!(v.text_body.contains("Pay at"));
        assert!(!v.text_from_html);
        assert_eq!(v.attachments.len(), 1);
        assert_eq!(v.attachments[0].name.as_deref(), Some("invoice.pdf"));
        assert_eq!(v.attachments[0].content_type, "application/pdf");
        assert_eq!(v.attachments[0].size, 9);
        assert_eq!(v.links, vec!["https://pay.example.com/x"]);
    }

    #[test]
    fn strips_nul_characters() {
        let v = parse_view(b"From: a\0b <x\0@y.z>\r\nSubject: s\0t\r\n\r\nbo\0dy\r\n");
        let json = format!("{v:?}");
        assert!(!json.contains('\0'), "{json}");
        assert_eq!(v.subject.as_deref(), Some("st"));
        assert!(v.text_body.starts_with("body"));
    }

    #[test]
    fn converts_html_only_bodies() {
        let raw = b"From: a@b.c\r\nContent-Type: text/html\r\n\r\n<html><body><p>Hello <b>there</b></p><a href=\"https://t.example/\">link</a></body></html>";
        let v = parse_view(raw);
        assert!(v.text_from_html);
        assert!(v.text_body.contains("Hello"), "{}", v.text_body);
        assert!(!v.text_body.contains("<p>"));
        assert_eq!(v.links, vec!["https://t.example/"]);
    }

    #[test]
    fn keeps_text_of_a_truncated_multipart() {
        let v = parse_view(b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nthe message stops here");
        assert_eq!(v.text_body, "the message stops here");
    }

    #[test]
    fn survives_hostile_input() {
        let _ = parse_view(b"");
        let _ = parse_view(b"\0\xff\xfe garbage \x89PNG");
        let _ = parse_view(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\ntrunc");
        let mut many = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n".to_vec();
        for i in 0..10_000 {
            many.extend_from_slice(format!("--q\r\nContent-Type: application/octet-stream; name=f{i}.bin\r\nContent-Disposition: attachment\r\n\r\nx\r\n").as_bytes());
        }
        many.extend_from_slice(b"--q--\r\n");
        let v = parse_view(&many);
        assert_eq!(v.attachments.len(), MAX_ATTACHMENTS);
        assert!(!v.warnings.is_empty());
    }
}
