//! Toolsets: named groups of tools, chosen at start-up with `--toolsets`
//! (or `MAILROOM_TOOLSETS`) and trimmed by `--read-only`, as GitHub's MCP
//! server does. This table is the one place a toolset is registered; the
//! server core never names a tool.

use mailroom_security::Scope;
use rmcp::handler::server::tool::ToolRouter;

use crate::MailroomMcp;

/// One group of tools and the policy of each. A tool missing from
/// `policies` needs `admin` and costs 10: a new tool is born protected.
pub struct Toolset {
    pub name: &'static str,
    pub description: &'static str,
    pub tools: fn() -> ToolRouter<MailroomMcp>,
    pub policies: &'static [ToolPolicy],
}

/// Who may call a tool, and the rate-limit tokens a call takes: those of
/// the tool's REST twin, so an agent is limited as a curl user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolPolicy {
    pub name: &'static str,
    pub scope: Scope,
    pub cost: u32,
}

pub(crate) const fn policy(name: &'static str, scope: Scope, cost: u32) -> ToolPolicy {
    ToolPolicy { name, scope, cost }
}

const UNLISTED: fn(&str) -> ToolPolicy = |_| ToolPolicy {
    name: "",
    scope: Scope::Admin,
    cost: 10,
};

/// Every toolset this build offers, in `tools/list` order.
pub const TOOLSETS: &[Toolset] = &[
    Toolset {
        name: "email",
        description:
            "ingest, list, search, read, reprocess and delete stored messages; processing status",
        tools: MailroomMcp::email_tools,
        policies: crate::email::POLICIES,
    },
    Toolset {
        name: "score",
        description: "score a message (symbols, evidence, action) and teach the model ham or spam",
        tools: MailroomMcp::score_tools,
        policies: crate::score::POLICIES,
    },
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToolsetError {
    #[error("unknown toolset `{0}`; known: all, {known}", known = known())]
    Unknown(String),
    #[error("no toolset named: give `all` or a comma-separated list such as `email,score`")]
    Empty,
}

fn known() -> String {
    TOOLSETS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tools a server offers: the chosen toolsets, without the tools that
/// change state when `read_only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSelection {
    toolsets: Vec<&'static str>,
    read_only: bool,
}

impl ToolSelection {
    /// Every toolset, every tool.
    pub fn all() -> Self {
        Self {
            toolsets: TOOLSETS.iter().map(|t| t.name).collect(),
            read_only: false,
        }
    }

    /// `spec` is `all` or comma-separated toolset names; an unknown name is
    /// an error (a typo must not silently start a server without tools).
    pub fn parse(spec: &str, read_only: bool) -> Result<Self, ToolsetError> {
        let mut toolsets = Vec::new();
        for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("all") {
                toolsets.extend(TOOLSETS.iter().map(|t| t.name));
                continue;
            }
            let toolset = TOOLSETS
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| ToolsetError::Unknown(name.to_string()))?;
            toolsets.push(toolset.name);
        }
        if toolsets.is_empty() {
            return Err(ToolsetError::Empty);
        }
        // In the table's order, once each.
        let toolsets = TOOLSETS
            .iter()
            .map(|t| t.name)
            .filter(|n| toolsets.contains(n))
            .collect();
        Ok(Self {
            toolsets,
            read_only,
        })
    }

    pub fn toolsets(&self) -> &[&'static str] {
        &self.toolsets
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The tools offered, as `tools/list` shows them to a caller holding
    /// every scope.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.build().0.list_all()
    }

    /// The combined router and the policy of each tool in it.
    pub(crate) fn build(&self) -> (ToolRouter<MailroomMcp>, Vec<(String, ToolPolicy)>) {
        let mut router = ToolRouter::new();
        let mut scopes = Vec::new();
        for toolset in TOOLSETS.iter().filter(|t| self.toolsets.contains(&t.name)) {
            let mut tools = (toolset.tools)();
            for tool in tools.list_all() {
                let read_only = tool
                    .annotations
                    .as_ref()
                    .and_then(|a| a.read_only_hint)
                    .unwrap_or(false);
                if self.read_only && !read_only {
                    tools.remove_route(&tool.name);
                    continue;
                }
                let policy = toolset
                    .policies
                    .iter()
                    .find(|p| p.name == tool.name)
                    .copied()
                    .unwrap_or_else(|| UNLISTED(&tool.name));
                scopes.push((tool.name.to_string(), policy));
            }
            router.merge(tools);
        }
        (router, scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolset_names_are_checked() {
        assert_eq!(
            ToolSelection::parse("all", false).map(|s| s.toolsets().to_vec()),
            Ok(vec!["email", "score"])
        );
        assert_eq!(
            ToolSelection::parse(" score , EMAIL,score", true).map(|s| s.toolsets().to_vec()),
            Ok(vec!["email", "score"])
        );
        let unknown = ToolSelection::parse("email,emial", false).expect_err("a typo");
        assert_eq!(unknown, ToolsetError::Unknown("emial".into()));
        assert!(unknown.to_string().contains("known: all, email, score"));
        assert_eq!(ToolSelection::parse(" , ", false), Err(ToolsetError::Empty));
    }

    #[test]
    fn every_tool_has_a_policy_and_read_only_drops_writers() {
        let (router, scopes) = ToolSelection::all().build();
        let listed: Vec<String> = router
            .list_all()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        for toolset in TOOLSETS {
            for policy in toolset.policies {
                assert!(
                    listed.iter().any(|l| l == policy.name),
                    "{} has a policy but no tool",
                    policy.name
                );
            }
        }
        assert_eq!(scopes.len(), listed.len());
        assert!(
            scopes.iter().all(|(name, p)| p.name == name),
            "every tool has its own policy"
        );
        let (read_only, scopes) = ToolSelection::parse("all", true)
            .map(|s| s.build())
            .expect("all is a toolset list");
        for tool in read_only.list_all() {
            assert_eq!(
                tool.annotations.and_then(|a| a.read_only_hint),
                Some(true),
                "{}",
                tool.name
            );
        }
        assert!(scopes.iter().all(|(_, p)| p.scope == Scope::Read));
        assert!(read_only.list_all().len() < listed.len());
    }
}
