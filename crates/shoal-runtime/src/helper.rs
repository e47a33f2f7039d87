//! Dispatch for the re-executed modes of the binary that embeds the runtime
//! (the agent, or the test helper): `supervise DIR` and `exec DIR SPEC`.
//! Call [`dispatch`] first thing in `main`, before any thread is started.

use std::ffi::OsString;
use std::path::Path;

/// If `args` (including argv[0]) name a helper mode, runs it and returns
/// the exit code; otherwise returns `None`.
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    let mode = args.get(1)?.to_str()?;
    match mode {
        "supervise" => Some(match args.get(2) {
            Some(dir) => crate::supervisor::main(Path::new(dir)),
            None => usage(),
        }),
        "exec" => Some(match (args.get(2), args.get(3).and_then(|s| s.to_str())) {
            (Some(dir), Some(spec)) => crate::exec::main(Path::new(dir), spec),
            _ => usage(),
        }),
        _ => None,
    }
}

fn usage() -> i32 {
    eprintln!("usage: supervise DIR | exec DIR SPEC_JSON");
    2
}
