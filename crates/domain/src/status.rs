use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Where a message is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored, its job waiting for a worker.
    Queued,
    /// A worker holds the job's lease.
    Processing,
    /// Every stage succeeded.
    Processed,
    /// The last attempt failed; a retry is scheduled.
    Failed,
    /// Attempts exhausted; only an operator (`POST /process/trigger`) revives it.
    Dead,
}

/// State of a job in the durable queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Leased,
    Done,
    Dead,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($text => Ok($ty::$variant),)+ other => Err(UnknownStatus(other.chars().take(32).collect())) }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(MessageStatus {
    Queued => "queued",
    Processing => "processing",
    Processed => "processed",
    Failed => "failed",
    Dead => "dead",
});

string_enum!(JobState {
    Queued => "queued",
    Leased => "leased",
    Done => "done",
    Dead => "dead",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status() {
        for s in MessageStatus::ALL {
            assert_eq!(s.as_str().parse::<MessageStatus>(), Ok(*s));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        assert!("nope".parse::<MessageStatus>().is_err());
    }
}
