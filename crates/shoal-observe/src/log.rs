//! Log setup of the daemons: `--log FILTER` (tracing's EnvFilter; an invalid one is an
//! error naming it, never a silent fallback) and `--log-format text|json`, on stderr,
//! with ANSI colours only when stderr is a terminal.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::ObserveError;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`).
    Json,
}

/// Parses a `--log` filter, naming it when it is invalid.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, ObserveError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| ObserveError::LogFilter {
            filter: filter.to_string(),
            reason: e.to_string(),
        })
}

/// Installs the process's logger: events passing `filter` go to stderr in `format`.
pub fn init_logging(filter: &str, format: LogFormat) -> Result<(), ObserveError> {
    let filter = parse_filter(filter)?;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    }
    .map_err(|e| ObserveError::LogInit(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    }

    #[test]
    fn log_format_flag() {
        let p = |a: &[&str]| Cli::try_parse_from(std::iter::once("t").chain(a.iter().copied()));
        assert_eq!(p(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            p(&["--log-format", "json"]).unwrap().log_format,
            LogFormat::Json
        );
        let e = p(&["--log-format", "xml"]).unwrap_err().to_string();
        assert!(e.contains("xml") && e.contains("text, json"), "{e}");
    }

    #[test]
    fn filters() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("info,shoal_store=debug,openraft=warn").is_ok());
        for bad in ["shoal_store=loud", "info,[{=]"] {
            let e = parse_filter(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--log {bad:?}: invalid filter")),
                "{e}"
            );
        }
    }
}
