//! `collector blocklist …`: edit the pinned drop list, with or without the daemon running.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{Blocklist, DEFAULT_PIN_DIR, ListedRule, rules};
use crate::cli::OutputFormat;

#[derive(Debug, Args)]
pub struct BlocklistArgs {
    /// bpffs directory holding the pinned maps (mode 0700, root only).
    #[arg(long, env = "NODESTATE_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    #[command(subcommand)]
    pub command: BlocklistCommand,
}

#[derive(Debug, Subcommand)]
pub enum BlocklistCommand {
    /// Drop packets from these sources: addresses (a /32 or /128) or CIDRs, IPv4 or IPv6.
    Add {
        #[arg(required = true, value_name = "IP|CIDR")]
        rules: Vec<String>,
        /// Note kept with the rules (at most 64 bytes), shown by `list`.
        #[arg(long)]
        comment: Option<String>,
        /// Remove the rules after this long, e.g. "1h", "30m"; the daemon does the removing.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Stop dropping these sources (exactly as listed).
    Del {
        #[arg(required = true, value_name = "IP|CIDR")]
        rules: Vec<String>,
    },
    /// Show the rules with their hits, age, TTL, who added them (the daemon's automatic flood
    /// blocking, "auto", or "user") and their comment (an automatic rule's says why).
    List {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Add the rules of a file (one a line, `#` comments), all or none.
    Import {
        file: PathBuf,
        /// Replace the whole list with the file's rules, atomically.
        #[arg(long)]
        replace: bool,
        /// Note kept with every imported rule.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove every rule.
    Flush,
    /// Detach the XDP program from interfaces whose link a daemon pinned (it stays attached
    /// when the daemon dies, so the list keeps dropping); for uninstalling. The rules stay.
    Detach {
        /// Interface to detach from (repeatable).
        #[arg(long, value_name = "IFACE", required_unless_present = "all")]
        iface: Vec<String>,
        /// Every interface with a pinned link.
        #[arg(long, conflicts_with = "iface")]
        all: bool,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. 30m, 1h, 7d"))?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("TTL {text} is under one second"));
    }
    Ok(ttl)
}

pub fn run(args: BlocklistArgs) -> anyhow::Result<()> {
    if let BlocklistCommand::Detach { iface, .. } = &args.command {
        // Needs no maps: works on a pin directory of any layout.
        let detached = super::attach::detach_pinned_links(&args.pin_dir, iface)?;
        eprintln!(
            "detached the XDP drop list from {} interface(s){}",
            detached.len(),
            if detached.is_empty() {
                String::new()
            } else {
                format!(": {}", detached.join(", "))
            }
        );
        return Ok(());
    }
    let mut blocklist = Blocklist::open(&args.pin_dir)?;
    match args.command {
        BlocklistCommand::Add {
            rules,
            comment,
            ttl,
        } => {
            let nets = rules::parse_args(&rules)?;
            blocklist.add(&nets, comment.as_deref(), ttl)?;
            eprintln!("added {} rule(s)", nets.len());
        }
        BlocklistCommand::Del { rules } => {
            let nets = rules::parse_args(&rules)?;
            blocklist.delete(&nets)?;
            eprintln!("removed {} rule(s)", nets.len());
        }
        BlocklistCommand::List { output } => {
            let rules = blocklist.list()?;
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "rules": rules,
                        "totals": blocklist.totals()?,
                    })
                ),
                OutputFormat::Table => print!("{}", table(&rules)),
            }
        }
        BlocklistCommand::Import {
            file,
            replace,
            comment,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let nets = rules::parse_import(&text)
                .with_context(|| format!("importing {}", file.display()))?;
            if replace {
                blocklist.replace(&nets, comment.as_deref())?;
                eprintln!("replaced the list with {} rule(s)", nets.len());
            } else {
                blocklist.add(&nets, comment.as_deref(), None)?;
                eprintln!("added {} rule(s)", nets.len());
            }
        }
        BlocklistCommand::Flush => {
            let removed = blocklist.flush()?;
            eprintln!("removed {removed} rule(s)");
        }
        BlocklistCommand::Detach { .. } => unreachable!("handled before opening the list"),
    }
    Ok(())
}

fn table(rules: &[ListedRule]) -> String {
    let mut out = format!(
        "{:<44} {:>12} {:>14} {:>10} {:>10} {:<6}  COMMENT\n",
        "RULE", "PACKETS", "BYTES", "AGE", "EXPIRES IN", "BY"
    );
    let now = super::store::unix_now();
    for rule in rules {
        let expires = rule.expires_unix_s.map_or("never".to_string(), |at| {
            humantime::format_duration(Duration::from_secs(at.saturating_sub(now))).to_string()
        });
        let _ = writeln!(
            out,
            "{:<44} {:>12} {:>14} {:>10} {:>10} {:<6}  {}",
            rule.rule,
            rule.packets,
            rule.bytes,
            humantime::format_duration(Duration::from_secs(rule.age_s)).to_string(),
            expires,
            if rule.automatic { "auto" } else { "user" },
            rule.comment
        );
    }
    out
}
