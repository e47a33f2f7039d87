//! `shoalctl version`.

use super::print;
use crate::error::CtlError;

/// Runs `version`: the client's version and the API it speaks.
pub fn run() -> Result<(), CtlError> {
    print(&format!(
        "Client Version: v{}\nAPI: shoal/v1 (gRPC shoal.v1.Cluster)\n",
        env!("CARGO_PKG_VERSION")
    ))
}
