//! AFL++ entry point for [`shoal_fuzz::fuzz_dns`] (`cargo afl build --features afl`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        shoal_fuzz::fuzz_dns(data);
    });
}
