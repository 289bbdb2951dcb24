//! The Received chain: missing, unparsable, HELO that contradicts the
//! connecting address, timestamps that go backwards down the chain.

use mail_parser::{HeaderName, HeaderValue, Host};

use super::{Ctx, Hits};
use crate::symbols::*;

/// Clock skew between hops tolerated before the chain counts as forged.
const SKEW_SECS: i64 = 3600;

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let Some(message) = ctx.mail.message.as_ref() else {
        return;
    };
    let mut count = 0usize;
    let mut newer: Option<i64> = None;
    for value in message.header_values(HeaderName::Received).take(100) {
        count += 1;
        let HeaderValue::Received(received) = value else {
            hits.add(RCVD_UNPARSABLE, vec![format!("hop {count}")]);
            continue;
        };
        if let (Some(Host::IpAddr(helo)), Some(ip)) = (&received.helo, received.from_ip) {
            if *helo != ip {
                hits.add(
                    RCVD_HELO_IP_MISMATCH,
                    vec![format!("HELO [{helo}] from {ip}")],
                );
            }
        }
        if let Some(date) = received.date.as_ref().filter(|d| d.is_valid()) {
            let t = date.to_timestamp();
            // Headers are prepended: each one down the list is an older hop.
            if let Some(newer) = newer {
                if t - newer > SKEW_SECS {
                    hits.add(
                        RCVD_DATE_BACKWARDS,
                        vec![format!(
                            "hop {count} is {} h after the hop above it",
                            (t - newer) / 3600
                        )],
                    );
                }
            }
            newer = Some(t);
        }
    }
    if count == 0 {
        hits.add(RCVD_COUNT_ZERO, vec![]);
    }
}
