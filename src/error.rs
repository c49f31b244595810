//! Errors of the core: every problem names the offending object by its path in the input.

use std::fmt;

/// One problem in the input, located by a path such as `security_groups.web.rules[3]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Issue {
    /// Where the problem is, in the input's own terms (`ports[2].fixed_ips[0]`).
    pub path: String,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
}

impl Issue {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything that can go wrong between input bytes and compiled flows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input could not be decoded at all (not JSON, not msgpack).
    #[error("cannot decode the model as {format}: {message}")]
    Decode {
        /// `JSON` or `msgpack`.
        format: &'static str,
        /// The decoder's explanation.
        message: String,
    },
    /// The model was decoded but is invalid; every problem found is listed.
    #[error("{} problem(s) in the model:\n{}", .0.len(), render_issues(.0))]
    Invalid(Vec<Issue>),
    /// The model is valid, but compiling it would exceed the configured flow cap.
    #[error(
        "the model needs more than {limit} flows (at {at}); raise max_flows or simplify the model"
    )]
    TooManyFlows {
        /// The configured cap.
        limit: usize,
        /// The port being compiled when the cap was hit.
        at: String,
    },
    /// A bug in sgflows caught before it could produce wrong flows (e.g. two pipeline units
    /// emitting one flow key with different actions).
    #[error("internal error (a bug in sgflows; please report it): {0}")]
    Internal(String),
    /// A compile option is out of range.
    #[error("invalid option {name}: {message}")]
    Option {
        /// The option's name.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn render_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// The individual problems, one line each, for callers that list them.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            Error::Invalid(issues) => issues.clone(),
            Error::TooManyFlows { at, .. } => vec![Issue::new(at.clone(), self.to_string())],
            other => vec![Issue::new("", other.to_string())],
        }
    }
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;
