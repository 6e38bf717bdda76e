use which::which;

/// Building this crate for the bpf target needs the `bpf-linker` binary, which cargo cannot
/// express as a dependency: rebuild whenever the one on PATH changes (the same trick as
/// aya-template). Without it, say so and go on: collector's build.rs then embeds an empty stub
/// object, so `cargo check`, `clippy` and the tests that load no program still work.
fn main() {
    // aya-build passes `--cfg bpf_target_arch="…"` (the target's CARGO_CFG_TARGET_ARCH): the
    // programs read `struct pt_regs` per architecture and the object records which it is for.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"loongarch64\", \"mips\", \"mips64\", \"powerpc64\", \"s390x\"))"
    );
    match which("bpf-linker") {
        Ok(bpf_linker) => println!("cargo:rerun-if-changed={}", bpf_linker.display()),
        Err(err) => {
            println!("cargo:rerun-if-env-changed=PATH");
            println!(
                "cargo:warning=bpf-linker not found on PATH ({err}): the eBPF programs cannot be \
                 built; run `cargo xtask setup`"
            );
        }
    }
}
