use linkify::{LinkFinder, LinkKind};

/// Upper bound on links kept per message: a hostile message can carry
/// millions of URLs and the view must stay small.
pub const MAX_LINKS: usize = 500;

/// Distinct http(s) URLs (and `mailto:` targets) found in `texts`, in order of
/// first appearance, at most [`MAX_LINKS`].
pub fn extract_links<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]);
    let mut seen = std::collections::HashSet::new();
    let mut links = Vec::new();
    for text in texts {
        for link in finder.links(text) {
            let url = link.as_str().trim_end_matches(['"', '\'', '>']);
            let lower = url.to_ascii_lowercase();
            let wanted = lower.starts_with("http://")
                || lower.starts_with("https://")
                || lower.starts_with("mailto:");
            if wanted && seen.insert(url.to_string()) {
                links.push(url.to_string());
                if links.len() >= MAX_LINKS {
                    return links;
                }
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_and_href_links_once() {
        let links = extract_links([
            "see https://example.com/a?b=1 and http://x.org.",
            r#"<a href="https://example.com/a?b=1">x</a><a href='https://evil.test/login'>y</a>"#,
        ]);
        assert_eq!(
            links,
            vec![
                "https://example.com/a?b=1",
                "http://x.org",
                "https://evil.test/login"
            ]
        );
    }

    #[test]
    fn ignores_other_schemes() {
        assert!(extract_links(["ftp://a.b/c file:///etc/passwd"]).is_empty());
    }
}
