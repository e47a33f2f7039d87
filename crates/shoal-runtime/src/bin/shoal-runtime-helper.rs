//! The supervisor and exec helper for the runtime's own tests (the agent
//! binary embeds the same entry points).
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match shoal_runtime::helper::dispatch(&args) {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!("usage: shoal-runtime-helper supervise DIR | exec DIR SPEC_JSON");
            std::process::exit(2);
        }
    }
}
