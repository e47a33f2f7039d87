//! The one error type of this crate.

use std::path::PathBuf;

/// What went wrong while reading flags from a `--config` file or the command line.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not YAML, or its top level is not a mapping of keys to values.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file named by `--config`.
        path: PathBuf,
        /// What is wrong, with the line where the parser knows it.
        message: String,
    },
    /// A key that is not the long name of any flag.
    #[error("{}: unknown key {key:?}; accepted keys (the long flag names): {}", path.display(), accepted.join(", "))]
    UnknownKey {
        /// The file named by `--config`.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// Every key the command accepts.
        accepted: Vec<String>,
    },
    /// A value of the wrong YAML type (a list for a single-valued flag, a
    /// string for a switch, a mapping anywhere, null).
    #[error("{}: key {key:?}: expected {expected}, got {got}", path.display())]
    WrongType {
        /// The file named by `--config`.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// The accepted form, with the flag it stands for.
        expected: String,
        /// The YAML type found.
        got: String,
    },
    /// A value the flag's own parser refuses (e.g. `listen: 7000`, which is no `HOST:PORT`).
    #[error("{}: key {key:?}: {message}", path.display())]
    InvalidValue {
        /// The file named by `--config`.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// clap's message, naming the value and the flag's form.
        message: String,
    },
    /// The command line itself is wrong (or asks for `--help`/`--version`):
    /// clap's own error, formatted for the command.
    #[error(transparent)]
    Command(#[from] clap::Error),
}
