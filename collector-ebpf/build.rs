use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot express as a
/// dependency: rebuild whenever the one on PATH changes (the same trick as aya-template).
fn main() {
    match which("bpf-linker") {
        Ok(bpf_linker) => println!("cargo:rerun-if-changed={}", bpf_linker.display()),
        Err(err) => panic!("bpf-linker not found on PATH ({err}); run `cargo xtask setup`"),
    }
}
