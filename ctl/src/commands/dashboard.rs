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
    let owned = std::mem::replace(ctx, Context::new(ctx.settings().clone(), None));
    dashboard::serve(owned, opts).await
}
