//! A small, bounded HTML scanner: visible text, anchors (href and the text
//! shown), images, and text a reader cannot see. It is not a browser; it
//! reads tags and styles well enough to find the tricks spam uses, in one
//! linear pass, and never fails.

/// What the scanner found in one HTML body.
#[derive(Debug, Default, Clone)]
pub struct HtmlDoc {
    pub text: String,
    pub anchors: Vec<Anchor>,
    pub images: usize,
    /// An `<html>` tag was seen.
    pub html_tag: bool,
    /// Characters of text inside hidden elements, and an example.
    pub hidden_chars: usize,
    pub hidden_example: Option<String>,
    /// Characters of text in zero or tiny fonts, and an example.
    pub tiny_chars: usize,
    pub tiny_example: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Anchor {
    pub href: String,
    pub text: String,
}

const MAX_TEXT: usize = 512 * 1024;
const MAX_ANCHORS: usize = 2000;
const MAX_ANCHOR_TEXT: usize = 256;
const MAX_DEPTH: usize = 256;

struct Open {
    name: String,
    hidden: bool,
    tiny: bool,
}

/// Elements without content: never pushed on the stack.
fn is_void(name: &str) -> bool {
    matches!(
        name,
        "br" | "img"
            | "hr"
            | "meta"
            | "link"
            | "input"
            | "area"
            | "base"
            | "col"
            | "wbr"
            | "source"
            | "embed"
            | "param"
            | "track"
    )
}

pub fn scan(html: &str) -> HtmlDoc {
    let mut doc = HtmlDoc::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut anchor: Option<Anchor> = None;
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        // Flush the text before this tag.
        if let Some(t) = html.get(text_start..i) {
            push_text(&mut doc, &stack, anchor.as_mut(), t);
        }
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").map(|e| i + e + 3).unwrap_or(bytes.len());
            i = end;
            text_start = end;
            continue;
        }
        let Some(tag_end) = find_tag_end(bytes, i + 1) else {
            // An unclosed '<' : the rest is text.
            text_start = i;
            break;
        };
        let inner = html.get(i + 1..tag_end).unwrap_or("");
        i = tag_end + 1;
        text_start = i;
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let name_len = inner
            .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
            .unwrap_or(inner.len());
        let name = inner[..name_len].to_ascii_lowercase();
        let attrs = &inner[name_len..];
        if closing {
            if name == "a" {
                if let Some(a) = anchor.take() {
                    if doc.anchors.len() < MAX_ANCHORS {
                        doc.anchors.push(a);
                    }
                }
            }
            if let Some(pos) = stack.iter().rposition(|o| o.name == name) {
                stack.truncate(pos);
            }
            continue;
        }
        match name.as_str() {
            "script" | "style" | "title" => {
                // Their content is not shown: skip to the closing tag.
                let close = format!("</{name}");
                let end = find_ascii_ci(&html[i..], &close)
                    .map(|e| i + e)
                    .unwrap_or(bytes.len());
                i = end;
                text_start = end;
                continue;
            }
            "img" => doc.images += 1,
            "html" => doc.html_tag = true,
            "a" => {
                if let Some(a) = anchor.take() {
                    if doc.anchors.len() < MAX_ANCHORS {
                        doc.anchors.push(a);
                    }
                }
                if let Some(href) = attr(attrs, "href") {
                    anchor = Some(Anchor {
                        href: decode_entities(href.trim()),
                        text: String::new(),
                    });
                }
            }
            "br" | "p" | "div" | "tr" | "li" => push_text(&mut doc, &stack, None, " "),
            _ => {}
        }
        if is_void(&name) || attrs.trim_end().ends_with('/') {
            continue;
        }
        let style = attr(attrs, "style").unwrap_or("").to_ascii_lowercase();
        let style: String = style.chars().filter(|c| !c.is_whitespace()).collect();
        let hidden = style.contains("display:none")
            || style.contains("visibility:hidden")
            || attr(attrs, "hidden").is_some();
        let tiny = tiny_font(&style)
            || (name == "font"
                && attr(attrs, "size").is_some_and(|s| {
                    let s = s.trim();
                    s == "0" || s == "1" || s == "-3" || s == "-4"
                }));
        if stack.len() < MAX_DEPTH {
            stack.push(Open { name, hidden, tiny });
        }
    }
    if let Some(t) = html.get(text_start..) {
        push_text(&mut doc, &stack, anchor.as_mut(), t);
    }
    if let Some(a) = anchor.take() {
        if doc.anchors.len() < MAX_ANCHORS {
            doc.anchors.push(a);
        }
    }
    doc
}

fn tiny_font(style: &str) -> bool {
    let Some(pos) = style.find("font-size:") else {
        return false;
    };
    let value = &style[pos + "font-size:".len()..];
    let num: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let Ok(n) = num.parse::<f64>() else {
        return false;
    };
    let unit = &value[num.len()..];
    (unit.starts_with("px") && n <= 2.0)
        || (unit.starts_with("pt") && n <= 1.5)
        || (unit.starts_with("em") && n <= 0.2)
        || (unit.starts_with('%') && n <= 20.0)
        || n == 0.0
}

fn push_text(doc: &mut HtmlDoc, stack: &[Open], anchor: Option<&mut Anchor>, raw: &str) {
    if raw.is_empty() || doc.text.len() >= MAX_TEXT {
        return;
    }
    let text = decode_entities(raw);
    let visible_len = text.chars().filter(|c| !c.is_whitespace()).count();
    if let Some(a) = anchor {
        if a.text.len() < MAX_ANCHOR_TEXT {
            a.text.push_str(text.trim());
            if a.text.len() > MAX_ANCHOR_TEXT {
                let mut cut = MAX_ANCHOR_TEXT;
                while !a.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                a.text.truncate(cut);
            }
        }
    }
    if visible_len > 0 {
        if stack.iter().any(|o| o.hidden) {
            doc.hidden_chars += visible_len;
            doc.hidden_example.get_or_insert_with(|| example(&text));
            return;
        }
        if stack.iter().any(|o| o.tiny) {
            doc.tiny_chars += visible_len;
            doc.tiny_example.get_or_insert_with(|| example(&text));
        }
    }
    if !doc.text.is_empty() && !doc.text.ends_with(' ') {
        doc.text.push(' ');
    }
    doc.text.push_str(text.trim());
}

fn example(text: &str) -> String {
    text.split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(60)
        .collect()
}

/// End of a tag: the next '>' outside quotes.
fn find_tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut quote = 0u8;
    let mut i = from;
    // A tag longer than this is not a tag; treating it as text keeps the
    // scan linear on '<' followed by megabytes of quotes.
    let limit = (from + 64 * 1024).min(bytes.len());
    while i < limit {
        let b = bytes[i];
        if quote != 0 {
            if b == quote {
                quote = 0;
            }
        } else if b == b'"' || b == b'\'' {
            quote = b;
        } else if b == b'>' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The value of attribute `name` in a tag's attribute text.
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let bytes = attrs.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'/'
        {
            i += 1;
        }
        let key = attrs.get(start..i)?;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = "";
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let q = bytes[i];
                let vstart = i + 1;
                i = vstart;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
                value = attrs.get(vstart..i).unwrap_or("");
                i += 1;
            } else {
                let vstart = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = attrs.get(vstart..i).unwrap_or("");
            }
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        if start == i {
            i += 1;
        }
    }
    None
}

/// Decodes the character references spam uses to hide words.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest.as_bytes().iter().take(12).position(|&b| b == b';');
        let Some(end) = end else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "nbsp" => Some(' '),
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "shy" => Some('\u{ad}'),
            "zwj" => Some('\u{200d}'),
            "zwnj" => Some('\u{200c}'),
            _ => entity.strip_prefix('#').and_then(|n| {
                let code = match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse::<u32>().ok(),
                };
                code.and_then(char::from_u32)
            }),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_anchors_images_and_hidden_text() {
        let doc = scan(
            r#"<html><head><style>p{}</style></head><body><p>Hello &amp; welcome</p>
            <a href="http://evil.example/x">https://www.paypal.com</a>
            <div style="display: none">buy cheap pills</div>
            <font size="1">tiny words</font><img src="a.png"><script>var x="<a>";</script>
            </body></html>"#,
        );
        assert!(doc.text.contains("Hello & welcome"));
        assert!(!doc.text.contains("buy cheap"));
        assert!(!doc.text.contains("var x"));
        assert_eq!(doc.anchors.len(), 1);
        assert_eq!(doc.anchors[0].href, "http://evil.example/x");
        assert_eq!(doc.anchors[0].text, "https://www.paypal.com");
        assert_eq!(doc.images, 1);
        assert_eq!(doc.hidden_chars, "buycheappills".len());
        assert_eq!(doc.tiny_chars, "tinywords".len());
    }

    #[test]
    fn survives_garbage() {
        for s in [
            "<",
            "<<<>>>",
            "<a href='",
            "&#99999999;",
            "<div style=\"font-size:",
            "&",
        ] {
            let _ = scan(s);
        }
        let deep = "<div>".repeat(10_000) + "x";
        assert!(scan(&deep).text.contains('x'));
    }
}
