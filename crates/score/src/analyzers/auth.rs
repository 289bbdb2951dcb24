//! Authentication-Results recorded by the receiving MTA (RFC 8601): SPF,
//! DKIM and DMARC verdicts. Only the topmost header (ours) is trusted,
//! or those whose authserv-id is configured as trusted: anything below it
//! was written by whoever sent the message.

use super::{Ctx, Hits};
use crate::symbols::*;

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    let trusted = &ctx.config.trusted_authserv_ids;
    let mut seen_first = false;
    for (name, value) in ctx.mail.headers() {
        if !name.eq_ignore_ascii_case("Authentication-Results") {
            continue;
        }
        let value = value.trim();
        let authserv = value
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let accept = if trusted.is_empty() {
            !seen_first
        } else {
            trusted.iter().any(|t| t.eq_ignore_ascii_case(&authserv))
        };
        seen_first = true;
        if !accept {
            continue;
        }
        for clause in value.split(';').skip(1) {
            let clause = clause.trim().to_ascii_lowercase();
            let Some((method, rest)) = clause.split_once('=') else {
                continue;
            };
            let verdict: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let evidence = vec![format!(
                "{authserv}: {}",
                clause.chars().take(80).collect::<String>()
            )];
            match (method.trim(), verdict.as_str()) {
                ("spf", "pass") => hits.add(R_SPF_ALLOW, evidence),
                ("spf", "fail") => hits.add(R_SPF_FAIL, evidence),
                ("spf", "softfail") => hits.add(R_SPF_SOFTFAIL, evidence),
                ("dkim", "pass") => hits.add(R_DKIM_ALLOW, evidence),
                ("dkim", "fail") => hits.add(R_DKIM_REJECT, evidence),
                ("dmarc", "pass") => hits.add(DMARC_POLICY_ALLOW, evidence),
                ("dmarc", "fail") => {
                    if clause.contains("p=reject") || clause.contains("policy.dmarc=reject") {
                        hits.add(DMARC_POLICY_REJECT, evidence)
                    } else {
                        hits.add(DMARC_POLICY_QUARANTINE, evidence)
                    }
                }
                _ => {}
            }
        }
    }
}
