//! UCAN commands (`/`-separated, lowercase paths) and their prefix rule.

use std::fmt;
use std::str::FromStr;

/// Error parsing a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Commands start with `/`.
    #[error("command must start with `/`")]
    NoLeadingSlash,
    /// Only `/` itself may end with `/`, and segments may not be empty.
    #[error("command has an empty segment or a trailing `/`")]
    EmptySegment,
    /// Commands are lowercase.
    #[error("command must be lowercase")]
    NotLowercase,
}

/// A UCAN command such as `/tree/write/move`. `/a` proves `/a` and `/a/b`, never `/ab`; `/` proves all.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Command(String);

impl Command {
    /// The top command `/`, which proves every command.
    pub fn top() -> Self {
        Command("/".to_owned())
    }

    /// The command as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when a grant of `self` proves `other`: equal, `self` is `/`, or `other` continues
    /// `self` with a `/` segment boundary.
    pub fn proves(&self, other: &Command) -> bool {
        self.0 == "/"
            || other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('/').ok_or(CommandError::NoLeadingSlash)?;
        if !rest.is_empty() && rest.split('/').any(str::is_empty) {
            return Err(CommandError::EmptySegment);
        }
        if s.chars().any(char::is_uppercase) {
            return Err(CommandError::NotLowercase);
        }
        Ok(Command(s.to_owned()))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Command {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_rule() {
        assert!(c("/a").proves(&c("/a/b")));
        assert!(c("/a").proves(&c("/a")));
        assert!(!c("/a").proves(&c("/ab")));
        assert!(!c("/a/b").proves(&c("/a")));
        assert!(c("/").proves(&c("/anything/at/all")));
        assert!(c("/tree/write").proves(&c("/tree/write/move")));
        assert!(!c("/tree/read").proves(&c("/tree/write/move")));
    }

    #[test]
    fn parse_errors() {
        assert_eq!("a".parse::<Command>(), Err(CommandError::NoLeadingSlash));
        assert_eq!("/a/".parse::<Command>(), Err(CommandError::EmptySegment));
        assert_eq!("/a//b".parse::<Command>(), Err(CommandError::EmptySegment));
        assert_eq!("/A".parse::<Command>(), Err(CommandError::NotLowercase));
        assert_eq!("/".parse::<Command>(), Ok(Command::top()));
    }
}
