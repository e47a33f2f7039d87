//! `--config FILE` for Shoal's daemons (`shoal-controller`, `shoal-agent`):
//! flags may come from a YAML file whose keys are the long flag names, as on
//! the command line.
//!
//! ```yaml
//! data-dir: /var/lib/shoal/controller
//! listen: 0.0.0.0:7000
//! peer: [1=10.0.0.1:7000, 2=10.0.0.2:7000]   # a list for a repeatable flag
//! cleanup: true                               # a switch: true or false
//! ```
//!
//! This crate owns only that mapping. It works against the binary's clap
//! [`Command`], never against a list of its own, so it cannot drift from the
//! flags: it reads `--config` from the command line, turns every key of the
//! file into `--key=value` for the flag whose long name is the key (each
//! value checked by that flag's own value parser, so a bad one is reported
//! with the file and the key), skips keys whose flag the command line or the
//! environment already sets (those win: command line > environment > file >
//! default), and hands the file's arguments followed by the user's to clap.
//!
//! It depends on clap, serde_yaml_ng and thiserror only, and must never
//! depend on another Shoal crate: the binaries depend on it.
#![warn(missing_docs)]

mod error;
pub mod mapping;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, Command, Parser};

pub use error::FlagsError;

/// The clap id (and long name) of the flag naming the config file.
pub const CONFIG_ID: &str = "config";

/// `cmd` with the `--config FILE` flag added.
pub fn with_config_arg(cmd: Command) -> Command {
    cmd.arg(
        Arg::new(CONFIG_ID)
            .long(CONFIG_ID)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "Read flags from this YAML file: keys are the long flag names \
                 (e.g. `data-dir: /var/lib/shoal`), lists for repeatable flags; \
                 the command line and environment variables win over the file",
            ),
    )
}

/// Parses the process's arguments (and its `--config` file) into `P`; on a
/// bad command line or file, prints the error and exits with status 2, like
/// [`Parser::parse`] (`--help` and `--version` print and exit 0).
pub fn parse<P: Parser>() -> P {
    match try_parse_from(std::env::args_os()) {
        Ok(p) => p,
        Err(FlagsError::Command(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// Parses `argv` (program name first) and the `--config` file it names into `P`.
pub fn try_parse_from<P, I, T>(argv: I) -> Result<P, FlagsError>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = with_config_arg(P::command());
    let argv = expand(&cmd, argv.into_iter().map(Into::into).collect())?;
    let mut matches = cmd.try_get_matches_from_mut(argv)?;
    P::from_arg_matches_mut(&mut matches).map_err(|e| FlagsError::Command(e.format(&mut cmd)))
}

/// `argv` with the arguments from its `--config` file (if any) inserted after
/// the program name. `cmd` must have the `--config` flag ([`with_config_arg`]).
///
/// A command line clap cannot parse is returned as it is: parsing it again
/// reports the error (or shows `--help`) as usual.
pub fn expand(cmd: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, FlagsError> {
    // A lenient parse of the command line alone: which file, and which flags
    // the command line or the environment already sets.
    let Ok(given) = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv.iter())
    else {
        return Ok(argv);
    };
    let Some(path) = given.get_one::<PathBuf>(CONFIG_ID).cloned() else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| FlagsError::Read {
        path: path.clone(),
        source,
    })?;
    let set_elsewhere = |id: &str| {
        matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let from_file = mapping::file_args(cmd, &path, &text, &set_elsewhere)?;
    let mut out = Vec::with_capacity(argv.len() + from_file.len());
    let mut rest = argv.into_iter();
    out.extend(rest.next());
    out.extend(from_file);
    out.extend(rest);
    Ok(out)
}

/// Parses a timeout: a span as [`parse_span`] reads it, more than zero.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d.is_zero() {
        return Err(format!(
            "invalid duration {:?}: must be more than zero; expected e.g. 500ms, 30s, 1h",
            s.trim()
        ));
    }
    Ok(d)
}

/// Parses a Go-style span such as `90s`, `5m`, `1h30m`, `2d` or `500ms` (a plain number is
/// seconds). The one duration parser of every Shoal flag.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = |why: &str| format!("invalid duration {text:?}: {why}; expected e.g. 30s, 5m, 1h30m");
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().map_err(|_| bad("too large"))?;
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86_400.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unit must be ms, s, m, h or d")),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(secs).map_err(|_| bad("too large"))?;
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::net::SocketAddr;

    use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    enum Mode {
        Bridge,
        None,
    }

    #[derive(Debug, Parser)]
    #[command(name = "t", args_conflicts_with_subcommands = true)]
    struct T {
        #[command(subcommand)]
        sub: Option<Sub>,
        #[arg(long, default_value_t = 1)]
        id: u64,
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
        #[arg(long, default_value = "/var/lib/t")]
        data_dir: PathBuf,
        #[arg(long = "peer", value_name = "ID=HOST:PORT")]
        peers: Vec<String>,
        #[arg(long)]
        cleanup: bool,
        #[arg(long, value_enum, default_value = "bridge")]
        network: Mode,
        #[arg(long, default_value_t = 10.0)]
        node_timeout: f64,
        #[arg(long)]
        advertise: Option<String>,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Runtime {
            #[arg(long)]
            x: Option<String>,
        },
    }

    struct File(tempfile::NamedTempFile);

    impl File {
        fn new(text: &str) -> Self {
            let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            File(f)
        }
        fn path(&self) -> String {
            self.0.path().display().to_string()
        }
    }

    fn parse(args: &[&str]) -> Result<T, FlagsError> {
        try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn spans_and_timeouts() {
        let s = |v: &str| parse_span(v);
        assert_eq!(s("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(s("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(s("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(s("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(s("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(s("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(s(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(s("45"), Ok(Duration::from_secs(45)));
        assert_eq!(s("0s"), Ok(Duration::ZERO));
        for bad in ["", "m", "5x", "h5", "5m3", "-5m", "1y", "fast"] {
            let e = s(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        // A timeout is the same parser, more than zero: `1h` works as it does for spans.
        assert_eq!(parse_timeout("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        let e = parse_timeout("0s").unwrap_err();
        assert!(e.contains("more than zero"), "{e}");
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn no_config_is_plain_clap() {
        let t = parse(&["--listen", "0.0.0.0:1"]).unwrap();
        assert_eq!(t.listen.port(), 1);
        assert_eq!(t.data_dir, PathBuf::from("/var/lib/t"));
    }

    #[test]
    fn file_sets_every_kind_of_flag() {
        let f = File::new(
            "# a comment\nid: 3\nlisten: 0.0.0.0:7003\ndata-dir: /var/lib/shoal/c3\n\
             peer:\n  - 1=10.0.0.1:7000\n  - 3=10.0.0.3:7000\ncleanup: true\n\
             network: none\nnode-timeout: 2.5\n",
        );
        let t = parse(&["--config", &f.path()]).unwrap();
        assert_eq!(t.id, 3);
        assert_eq!(t.listen, "0.0.0.0:7003".parse::<SocketAddr>().unwrap());
        assert_eq!(t.data_dir, PathBuf::from("/var/lib/shoal/c3"));
        assert_eq!(t.peers, vec!["1=10.0.0.1:7000", "3=10.0.0.3:7000"]);
        assert!(t.cleanup);
        assert_eq!(t.network, Mode::None);
        assert_eq!(t.node_timeout, 2.5);
        assert_eq!(t.advertise, None);
    }

    #[test]
    fn command_line_wins_over_file() {
        let f =
            File::new("listen: 0.0.0.0:7003\ndata-dir: /from/file\npeer: [1=a:1, 2=b:2]\nid: 3\n");
        // `--config=FILE` form, flags before and after it, a repeatable flag
        // on the command line replaces the file's whole list.
        let t = parse(&[
            "--listen=127.0.0.1:9",
            &format!("--config={}", f.path()),
            "--peer",
            "5=c:5",
        ])
        .unwrap();
        assert_eq!(t.listen.port(), 9);
        assert_eq!(t.peers, vec!["5=c:5"]);
        assert_eq!(t.data_dir, PathBuf::from("/from/file"));
        assert_eq!(t.id, 3);
    }

    #[test]
    fn a_scalar_for_a_list_flag_is_one_item_and_false_switch_is_off() {
        let f = File::new("peer: 1=a:1\ncleanup: false\n");
        let t = parse(&["--config", &f.path()]).unwrap();
        assert_eq!(t.peers, vec!["1=a:1"]);
        assert!(!t.cleanup);
    }

    #[test]
    fn empty_file_sets_nothing() {
        let f = File::new("# nothing yet\n");
        let t = parse(&["--config", &f.path()]).unwrap();
        assert_eq!(t.id, 1);
    }

    fn err(text: &str) -> String {
        let f = File::new(text);
        let e = parse(&["--config", &f.path()]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&f.path()), "{msg}");
        msg
    }

    #[test]
    fn unknown_key_names_file_key_and_accepted_keys() {
        let msg = err("listen: 0.0.0.0:1\nlisten-addr: 0.0.0.0:7000\n");
        assert!(msg.contains("unknown key \"listen-addr\""), "{msg}");
        assert!(
            msg.contains(
                "accepted keys (the long flag names): advertise, cleanup, data-dir, id, listen, network, node-timeout, peer"
            ),
            "{msg}"
        );
        // The flag name with underscores (the clap id) is no key either.
        assert!(err("data_dir: /x\n").contains("unknown key \"data_dir\""));
        // Neither is the file flag itself.
        assert!(err("config: /x\n").contains("unknown key \"config\""));
    }

    #[test]
    fn wrong_types_name_key_and_form() {
        let msg = err("listen: [0.0.0.0:1, 0.0.0.0:2]\n");
        assert!(
            msg.contains(
                "key \"listen\": expected a single value for --listen <LISTEN>, got a list"
            ),
            "{msg}"
        );
        let msg = err("cleanup: yes please\n");
        assert!(
            msg.contains(
                "key \"cleanup\": expected true or false (the switch --cleanup), got a string"
            ),
            "{msg}"
        );
        let msg = err("peer: [{1: a}]\n");
        assert!(
            msg.contains("key \"peer\": expected a value or a list of values for --peer <ID=HOST:PORT> (repeatable), got a list"),
            "{msg}"
        );
        let msg = err("advertise:\n");
        assert!(
            msg.contains(
                "key \"advertise\": expected a single value for --advertise <ADVERTISE>, got null"
            ),
            "{msg}"
        );
        let msg = err("network: {a: 1}\n");
        assert!(
            msg.contains("--network <bridge|none>, got a mapping"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_values_are_checked_by_the_flag_parser() {
        let msg = err("listen: 7000\n");
        assert!(
            msg.contains("key \"listen\": invalid value '7000' for '--listen <LISTEN>'"),
            "{msg}"
        );
        let msg = err("id: -1\n");
        assert!(
            msg.contains("key \"id\": invalid value '-1' for '--id <ID>'"),
            "{msg}"
        );
        let msg = err("network: overlay\n");
        assert!(
            msg.ends_with(
                "key \"network\": invalid value 'overlay' for '--network <NETWORK>' [possible values: bridge, none]"
            ),
            "{msg}"
        );
    }

    #[test]
    fn syntax_errors_and_non_mappings() {
        let msg = err("listen: [unclosed\n");
        assert!(msg.contains("line"), "{msg}");
        let msg = err("- listen\n- x\n");
        assert!(
            msg.contains("expected a mapping of flag names to values"),
            "{msg}"
        );
        let msg = err("1: x\n");
        assert!(
            msg.contains("keys must be flag names (strings), got a number 1"),
            "{msg}"
        );
        let msg = err("id: 1\nid: 2\n");
        assert!(msg.contains("duplicate"), "{msg}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = parse(&["--config", missing.to_str().unwrap()]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: cannot read the config file:",
                missing.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn command_line_errors_stay_clap_errors() {
        let f = File::new("id: 2\n");
        let e = parse(&["--config", &f.path(), "--bogus"]).unwrap_err();
        assert!(matches!(e, FlagsError::Command(_)), "{e:?}");
        let e = parse(&["--help"]).unwrap_err();
        let FlagsError::Command(e) = e else {
            panic!("{e:?}")
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("--config <FILE>"), "{e}");
    }

    #[test]
    fn subcommands_still_work_without_a_config() {
        let t = parse(&["runtime", "--x", "y"]).unwrap();
        assert!(matches!(t.sub, Some(Sub::Runtime { x: Some(ref x) }) if x == "y"));
    }

    #[test]
    fn accepted_keys_come_from_the_command() {
        let cmd = with_config_arg(T::command());
        assert_eq!(
            mapping::accepted_keys(&cmd),
            [
                "advertise",
                "cleanup",
                "data-dir",
                "id",
                "listen",
                "network",
                "node-timeout",
                "peer"
            ]
        );
    }
}
