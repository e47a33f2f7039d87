//! AFL++ entry point for [`shoal_fuzz::fuzz_selector`] (`cargo afl build --features afl`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        shoal_fuzz::fuzz_selector(data);
    });
}
