//! Links: bare IPs, user-info tricks, shorteners, punycode, brand
//! lookalikes, suspicious TLDs, redirect parameters, and anchors whose
//! text shows one domain while the link goes to another.

use std::collections::HashSet;

use super::{Ctx, Hits};
use crate::{
    config::ScoreConfig,
    mail::registrable,
    symbols::*,
    text::{edit_distance, skeleton},
};

const REDIRECT_KEYS: &[&str] = &[
    "url",
    "redirect",
    "redirect_url",
    "redir",
    "u",
    "r",
    "dest",
    "destination",
    "next",
    "target",
    "goto",
    "link",
    "out",
];

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let config = ctx.config;
    let brands: Vec<(String, String)> = config
        .brands
        .iter()
        .map(|b| (b.to_ascii_lowercase(), skeleton(&b.to_ascii_lowercase())))
        .collect();
    // Host checks run once per host: mail links the same few hosts many times.
    let mut seen_hosts: HashSet<&str> = HashSet::new();
    for url in &ctx.mail.urls {
        let Some(parsed) = url.parsed.as_ref() else {
            continue;
        };
        let Some(host) = parsed.host() else {
            continue;
        };
        // Web servers for the public listen on 80 and 443 (8080 for some).
        if let Some(port) = parsed.port().filter(|p| !matches!(p, 80 | 443 | 8080)) {
            hits.add(
                URL_WEIRD_PORT,
                vec![format!("{}:{port}", parsed.host_str().unwrap_or(""))],
            );
        }
        // A percent-escaped host name hides it from the reader and from
        // filters; the parser has already decoded it.
        // The host as written: the authority after any user info, before
        // any port.
        let written_host = url
            .raw
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .map(|authority| authority.rsplit('@').next().unwrap_or(""))
            .map(|host| host.split(':').next().unwrap_or(""))
            .unwrap_or("");
        if written_host.contains('%') {
            hits.add(URL_ESCAPED_HOST, vec![written_host.to_string()]);
        }
        let host_str = match &host {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => {
                hits.add(URL_IP_HOST, vec![ip.to_string()]);
                continue;
            }
            url::Host::Ipv6(ip) => {
                hits.add(URL_IP_HOST, vec![ip.to_string()]);
                continue;
            }
        };
        if !parsed.username().is_empty() {
            hits.add(
                URL_USERINFO,
                vec![format!("{}@{host_str}", parsed.username())],
            );
        }
        if seen_hosts.insert(parsed.host_str().unwrap_or_default()) {
            host_checks(config, &brands, &host_str, hits);
        }
        redirect_param(parsed, &host_str, hits);
    }

    for anchor in &ctx.mail.html.anchors {
        let Some(shown) = shown_host(&anchor.text) else {
            continue;
        };
        let Some(target) = url::Url::parse(anchor.href.trim())
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        else {
            continue;
        };
        if registrable(&shown) != registrable(&target) {
            hits.add(
                URL_ANCHOR_MISMATCH,
                vec![format!("shows {shown}, links to {target}")],
            );
        }
    }
}

/// Checks of a link's host: shorteners, punycode, suspicious TLDs, brand
/// lookalikes.
fn host_checks(config: &ScoreConfig, brands: &[(String, String)], host_str: &str, hits: &mut Hits) {
    let domain = registrable(host_str);
    if config
        .url_shorteners
        .iter()
        .any(|s| s.eq_ignore_ascii_case(domain) || s.eq_ignore_ascii_case(host_str))
    {
        hits.add(URL_SHORTENER, vec![host_str.to_string()]);
    }
    let (unicode, _) = idna::domain_to_unicode(host_str);
    if host_str.split('.').any(|l| l.starts_with("xn--")) {
        hits.add(URL_PUNYCODE, vec![format!("{host_str} ({unicode})")]);
    }
    if let Some(tld) = host_str.rsplit('.').next() {
        if config
            .suspicious_tlds
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tld))
        {
            hits.add(URL_SUSPICIOUS_TLD, vec![host_str.to_string()]);
        }
    }
    if let Some(brand) = lookalike(&unicode, brands) {
        hits.add(
            URL_BRAND_LOOKALIKE,
            vec![format!("{host_str} imitates {brand}")],
        );
    }
}

/// A query parameter that carries another URL to send the reader on to.
fn redirect_param(parsed: &url::Url, host: &str, hits: &mut Hits) {
    if parsed.query().is_none() {
        return;
    }
    for (key, value) in parsed.query_pairs().take(50) {
        let key = key.to_ascii_lowercase();
        let v = value.trim_start();
        if (v.starts_with("http://") || v.starts_with("https://"))
            && REDIRECT_KEYS.contains(&key.as_str())
        {
            hits.add(
                URL_REDIRECT_PARAM,
                vec![format!(
                    "{host} → {}",
                    v.chars().take(60).collect::<String>()
                )],
            );
            return;
        }
    }
}

/// The brand a domain imitates: a label that folds to the brand without
/// being it (`paypa1.com`), is one edit away (`paypall.com`), or the brand
/// as a hyphenated word or leading label of some other domain
/// (`paypal-secure.com`, `paypal.com.evil.example`).
fn lookalike<'b>(host: &str, brands: &'b [(String, String)]) -> Option<&'b str> {
    // A fully qualified name may end in the root's dot (`bank.com.`).
    let host = host.trim_end_matches('.');
    let domain = registrable(host);
    let main = domain.split('.').next().unwrap_or(domain);
    let main_skeleton = skeleton(main);
    if brands.iter().any(|(brand, _)| main == brand) {
        return None; // the brand's own domain
    }
    let sub = host.strip_suffix(domain).unwrap_or("");
    let sub_labels: Vec<&str> = sub.split('.').filter(|l| !l.is_empty()).collect();
    let sub_skeletons: Vec<String> = sub_labels.iter().map(|l| skeleton(l)).collect();
    // In the subdomain, the brand's own name counts only when dressed as
    // its domain (paypal.com.evil.example): a product page such as
    // outlook.vendor.example names the brand without imitating it. A
    // confusable spelling of it (paypa1.evil.example) always counts.
    let dressed_as_domain = |at: usize| {
        sub_labels
            .get(at + 1)
            .is_some_and(|next| matches!(*next, "com" | "net" | "org") || next.len() == 2)
    };
    for (brand, brand_skeleton) in brands {
        if main_skeleton == *brand_skeleton
            || (brand.len() >= 6 && edit_distance(main, brand, 1) == 1)
            || main.split('-').any(|w| w == brand)
            || sub_labels.iter().enumerate().any(|(at, l)| {
                if l == brand {
                    dressed_as_domain(at)
                } else {
                    sub_skeletons[at] == *brand_skeleton
                }
            })
        {
            return Some(brand);
        }
    }
    None
}

/// The host an anchor's text displays, when the text is a URL or a bare
/// domain (`www.bank.com`, `https://bank.com/login`).
fn shown_host(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches(['.', ',', ')']);
    if t.is_empty() || t.contains(char::is_whitespace) || t.len() > 200 {
        return None;
    }
    let with_scheme = if t.starts_with("http://") || t.starts_with("https://") {
        t.to_string()
    } else if t.starts_with("www.") {
        format!("http://{t}")
    } else {
        return None;
    };
    let host = url::Url::parse(&with_scheme)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    host.contains('.').then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brands() -> Vec<(String, String)> {
        ["paypal", "apple", "ups"]
            .iter()
            .map(|b| (b.to_string(), skeleton(b)))
            .collect()
    }

    #[test]
    fn lookalikes() {
        let b = brands();
        assert_eq!(lookalike("paypa1.com", &b), Some("paypal"));
        assert_eq!(lookalike("paypall.com", &b), Some("paypal"));
        assert_eq!(lookalike("paypal-secure.net", &b), Some("paypal"));
        assert_eq!(lookalike("paypal.com.evil.example", &b), Some("paypal"));
        assert_eq!(lookalike("www.paypal.com", &b), None);
        assert_eq!(lookalike("pineapple.com", &b), None);
        assert_eq!(lookalike("groups.google.com", &b), None);
        assert_eq!(lookalike("paypa1.evil.example", &b), Some("paypal"));
        assert_eq!(lookalike("paypal.evil.example", &b), None);
        assert_eq!(lookalike("paypal.co.uk.evil.example", &b), Some("paypal"));
        // A trailing root dot on a non-ASCII name must not split a character.
        assert_eq!(lookalike("ü.de.", &b), None);
        assert_eq!(lookalike("paypa1.com.", &b), Some("paypal"));
    }
}
