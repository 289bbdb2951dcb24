use std::{fmt, str::FromStr};

use serde::{Serialize, Serializer};

use crate::SecurityError;

/// What a key may do. `read`: GET of data; `write`: ingest, learn, review;
/// `admin`: keys, configuration, triggers, deletes — and everything `read`
/// and `write` allow. `write` does not include `read`, so a mail source
/// can push messages with a key that cannot read the mailbox back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = SecurityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(SecurityError::UnknownScope(other.to_string())),
        }
    }
}

/// A non-empty set of scopes, as granted to one key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Result<Self, SecurityError> {
        let bits = scopes.iter().fold(0, |acc, s| acc | s.bit());
        if bits == 0 {
            Err(SecurityError::NoScopes)
        } else {
            Ok(Scopes(bits))
        }
    }

    pub fn admin() -> Self {
        Scopes(Scope::Admin.bit())
    }

    pub fn read_only() -> Self {
        Scopes(Scope::Read.bit())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether a key with these scopes may use a route that needs
    /// `required`: it holds it, or it holds `admin`.
    pub fn allows(self, required: Scope) -> bool {
        self.contains(required) || self.contains(Scope::Admin)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// `read,write` (commas, `+` or spaces between names; duplicates ignored).
impl FromStr for Scopes {
    type Err = SecurityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let scopes = s
            .split([',', '+', ' '])
            .filter(|part| !part.trim().is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Scopes::of(&scopes)
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let s: Scopes = "write, read".parse().expect("valid");
        assert_eq!(s.to_string(), "read,write");
        assert_eq!(
            "admin+read".parse::<Scopes>().expect("valid").to_string(),
            "read,admin"
        );
        assert_eq!("".parse::<Scopes>(), Err(SecurityError::NoScopes));
        assert!(
            matches!("read,root".parse::<Scopes>(), Err(SecurityError::UnknownScope(s)) if s == "root")
        );
    }

    #[test]
    fn admin_implies_everything_write_does_not_imply_read() {
        let admin = Scopes::admin();
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let write: Scopes = "write".parse().expect("valid");
        assert!(write.allows(Scope::Write));
        assert!(!write.allows(Scope::Read));
        assert!(!write.allows(Scope::Admin));
        let read: Scopes = "read".parse().expect("valid");
        assert!(!read.allows(Scope::Write));
    }

    #[test]
    fn serialises_as_a_list() {
        let s: Scopes = "read,admin".parse().expect("valid");
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"["read","admin"]"#
        );
    }
}
