//! The kernel side as the daemon sees it: load the object, attach each program by the best hook
//! this kernel offers, and hand out the maps as typed handles. One job per file: `load`
//! (object, globals, attach, detach), `maps` (reading counters), `hooks` (the sampled hooks off
//! and on), `stats` (per-program run time), `layout` (tracepoint layouts), `report` (the attach
//! table), `config`; beside them the probe plans, the sampler, BTF, tracefs and privileges.

pub mod btf;
pub mod cgroups;
pub mod config;
pub mod dev;
pub mod exact;
pub mod exercise;
pub mod hooks;
pub mod layout;
pub mod load;
pub mod maps;
pub mod privileges;
pub mod probe_report;
pub mod probes;
pub mod report;
pub mod sampler;
pub mod stats;
pub mod tracefs;

pub(crate) use self::load::ebpf_object;
pub use self::{
    cgroups::{Attribution, AttributionChoice, AttributionCounters},
    config::KernelConfig,
    hooks::SampledTime,
    layout::{block_layout, system_layout},
    load::{KernelCollector, KernelLogger, NoEbpfObject, validate_ringbuf_bytes},
    maps::{KernelAccounting, OwnEvents, sum_cpus},
    report::{AttachReport, HookOutcome},
    stats::{ProgramStats, ProgramStatsMode},
};
