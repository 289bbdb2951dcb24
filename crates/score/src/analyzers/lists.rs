//! Allow and block lists by address, domain and IP (or CIDR network).

use std::net::IpAddr;

use mail_parser::HeaderName;

use super::{Ctx, Hits};
use crate::{
    mail::{domain_of, is_within},
    symbols::*,
};

/// `192.0.2.1`, `2001:db8::/32`, `10.0.0.0/8`.
pub fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let s = s.trim();
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn in_net(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The client IP: the envelope's, else the first external hop of the
/// Received chain.
pub(crate) fn client_ip(ctx: &Ctx<'_, '_>) -> Option<IpAddr> {
    ctx.envelope.client_ip.or_else(|| {
        let message = ctx.mail.message.as_ref()?;
        message
            .header_values(HeaderName::Received)
            .take(20)
            .filter_map(|v| v.as_received().and_then(|r| r.from_ip))
            .find(|ip| !is_internal(*ip))
    })
}

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let lists = &ctx.config.lists;
    let mut senders: Vec<String> = Vec::new();
    if let Some((_, Some(a))) = ctx.mail.from() {
        senders.push(a);
    }
    if let Some(m) = ctx.envelope.mail_from.as_deref() {
        senders.push(m.trim_matches(['<', '>']).to_ascii_lowercase());
    }
    let matches = |addresses: &[String], domains: &[String]| -> Option<String> {
        senders.iter().find_map(|s| {
            if addresses.iter().any(|a| a.eq_ignore_ascii_case(s)) {
                return Some(s.clone());
            }
            let d = domain_of(s)?;
            domains.iter().find(|x| is_within(d, x)).map(|_| s.clone())
        })
    };
    if let Some(s) = matches(&lists.block_addresses, &lists.block_domains) {
        hits.add(BLOCKLIST_FROM, vec![s]);
    } else if let Some(s) = matches(&lists.allow_addresses, &lists.allow_domains) {
        hits.add(ALLOWLIST_FROM, vec![s]);
    }
    if lists.allow_ips.is_empty() && lists.block_ips.is_empty() {
        return;
    }
    let Some(ip) = client_ip(ctx) else {
        return;
    };
    let listed = |nets: &[String]| {
        nets.iter()
            .filter_map(|n| parse_net(n))
            .any(|n| in_net(ip, n))
    };
    if listed(&lists.block_ips) {
        hits.add(BLOCKLIST_IP, vec![ip.to_string()]);
    } else if listed(&lists.allow_ips) {
        hits.add(ALLOWLIST_IP, vec![ip.to_string()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = parse_net("10.0.0.0/8").unwrap_or((IpAddr::from([0, 0, 0, 0]), 0));
        assert!(in_net("10.2.3.4".parse().unwrap_or(net.0), net));
        assert!(!in_net("11.2.3.4".parse().unwrap_or(net.0), net));
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("nonsense").is_none());
        assert_eq!(parse_net("2001:db8::1").map(|n| n.1), Some(128));
    }
}
