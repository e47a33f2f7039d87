//! `shoalctl api-resources` (the kinds the cluster serves, from shoal-api) and
//! `shoalctl completion bash|zsh|fish` (clap_complete's scripts for this command line).

use clap::CommandFactory;
use shoal_api::Kind;

use super::print;
use crate::cli::{Cli, Shell};
use crate::error::CtlError;
use crate::output::Table;

/// The `api-resources` table: NAME SHORTNAMES APIVERSION NAMESPACED KIND, by name.
pub fn api_resources_table() -> Table {
    let mut rows: Vec<Vec<String>> = Kind::ALL
        .into_iter()
        .map(|k| {
            vec![
                k.plural().to_string(),
                k.short_name().unwrap_or("").to_string(),
                k.kubernetes_api_version().to_string(),
                k.namespaced().to_string(),
                k.as_str().to_string(),
            ]
        })
        .collect();
    rows.sort();
    Table {
        headers: ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
            .map(String::from)
            .to_vec(),
        rows,
    }
}

/// Runs `api-resources`.
pub fn api_resources(no_headers: bool) -> Result<(), CtlError> {
    print(&api_resources_table().render(no_headers))
}

/// Runs `completion SHELL`: the script on stdout.
pub fn completion(shell: Shell) -> Result<(), CtlError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let sh = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(sh, &mut cmd, "shoalctl", &mut out);
    print(&String::from_utf8_lossy(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_resources_lists_every_kind_with_its_short_name() {
        let t = api_resources_table();
        assert_eq!(t.rows.len(), Kind::ALL.len());
        let deploy = t.rows.iter().find(|r| r[0] == "deployments").unwrap();
        assert_eq!(deploy[1..], ["deploy", "apps/v1", "true", "Deployment"]);
        let ds = t.rows.iter().find(|r| r[0] == "daemonsets").unwrap();
        assert_eq!(ds[1..], ["ds", "apps/v1", "true", "DaemonSet"]);
        let nodes = t.rows.iter().find(|r| r[0] == "nodes").unwrap();
        assert_eq!(nodes[3], "false");
    }
}
