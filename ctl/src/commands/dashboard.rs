//! `shoalctl dashboard [--port P] [--no-browser]`: serves the read-only web dashboard
//! ([`crate::dashboard`]) on 127.0.0.1 with this command's connection and credentials.

use super::Context;
use crate::cli::DashboardArgs;
use crate::dashboard::{self, Options};
use crate::error::CtlError;

/// Runs `dashboard` until Ctrl-C.
pub async fn run(ctx: &mut Context, args: DashboardArgs) -> Result<(), CtlError> {
    if args.log_lines <= 0 {
        return Err(CtlError::Usage(format!(
            "--log-lines {}: expected a positive number of lines",
            args.log_lines
        )));
    }
    // Connect first: a wrong configuration is reported here, not on the first page.
    ctx.conn().await?;
    let opts = Options {
        port: args.port,
        open_browser: !args.no_browser,
        log_lines: args.log_lines,
    };
    // The server's requests each work on a clone, which shares this connection.
    dashboard::serve(ctx.clone(), opts).await
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(argv: &[&str]) -> crate::cli::DashboardArgs {
        let mut full = vec!["shoalctl", "dashboard"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Dashboard(a) => a,
            _ => panic!("not dashboard"),
        }
    }

    #[test]
    fn flags_and_defaults() {
        let a = args(&[]);
        assert_eq!((a.port, a.no_browser, a.log_lines), (0, false, 200));
        let a = args(&["--port", "8001", "--no-browser", "--log-lines", "50"]);
        assert_eq!((a.port, a.no_browser, a.log_lines), (8001, true, 50));
        assert!(Cli::try_parse_from(["shoalctl", "dashboard", "--port", "70000"]).is_err());
    }
}
