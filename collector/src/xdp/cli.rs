//! `collector blocklist …`: edit the pinned drop list, with or without the daemon running.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{
    Blocklist, BlocklistError, DEFAULT_PIN_DIR, IpNet, ListedRule, Totals, pins,
    rules::{self, BadLine},
};
use crate::output::OutputFormat;

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
    /// A rule already listed is left as it is (its comment and TTL too) and said so: adding
    /// it again is not an error.
    Add {
        /// Source addresses or CIDRs to drop, e.g. 192.0.2.7 203.0.113.0/24 2001:db8::/48.
        #[arg(required = true, value_name = "IP|CIDR")]
        rules: Vec<String>,
        /// Note kept with the rules (at most 64 bytes of printable text on one line), shown by
        /// `list`.
        #[arg(long)]
        comment: Option<String>,
        /// Remove the rules after this long, e.g. "1h", "30m"; the daemon does the removing.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// "json" prints {"added": [...], "already_listed": [...]} on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Stop dropping these sources (exactly as listed).
    Del {
        /// Rules to remove, written as `list` shows them (or any spelling of the same
        /// address or CIDR).
        #[arg(required = true, value_name = "IP|CIDR")]
        rules: Vec<String>,
        /// "json" prints {"removed": [...]} on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Show the rules with their hits, age, TTL, who added them (the daemon's automatic flood
    /// blocking, "auto", or "user") and their comment (an automatic rule's says why).
    List {
        /// "table" for people; "json" prints {"rules": [...], "totals": {...}}.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Add the rules of a file (one a line, `#` comments), all or none.
    Import {
        /// The rules file: one address or CIDR a line, `#` starts a comment.
        file: PathBuf,
        /// Replace the whole list with the file's rules, atomically.
        #[arg(long)]
        replace: bool,
        /// Note kept with every imported rule.
        #[arg(long)]
        comment: Option<String>,
        /// "json" prints {"added": N} (or {"replaced_with": N}) on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Remove every rule.
    Flush {
        /// "json" prints {"removed": N} on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Detach the XDP program from interfaces whose link a daemon pinned (it stays attached
    /// when the daemon dies, so the list keeps dropping); for uninstalling. The rules stay.
    Detach {
        /// Interface to detach from (repeatable).
        #[arg(long, value_name = "IFACE", required_unless_present = "all")]
        iface: Vec<String>,
        /// Every interface with a pinned link.
        #[arg(long, conflicts_with = "iface")]
        all: bool,
        /// "json" prints {"detached": [...]} on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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

/// A `--comment` as given: refused (before anything is touched) if it is too long for the
/// map or holds control characters (newlines, escape sequences), which `list` would otherwise
/// print into a terminal or a log line.
fn check_comment(comment: Option<&str>) -> anyhow::Result<()> {
    let Some(comment) = comment else {
        return Ok(());
    };
    if comment.len() > collector_common::xdp::COMMENT_BYTES {
        return Err(BlocklistError::CommentTooLong(comment.len()).into());
    }
    if comment.chars().any(char::is_control) {
        anyhow::bail!(
            "comment {} holds control characters (newlines, tabs, escape sequences): write it \
             on one line of printable text",
            rules::quote(comment)
        );
    }
    Ok(())
}

/// Whether `pin_dir` holds any of the drop list's pins. Commands that only read or remove
/// (`list`, `del`, `flush`) do not create a list that is not there.
fn list_exists(pin_dir: &Path) -> bool {
    collector_common::xdp::names::ALL_MAPS
        .iter()
        .any(|name| pin_dir.join(name).exists())
}

/// An error naming the line (or argument) of each rule that is already listed.
fn already_listed(err: BlocklistError, sources: &[(usize, IpNet)], file: bool) -> anyhow::Error {
    let BlocklistError::Duplicate(duplicates) = err else {
        return err.into();
    };
    let bad: Vec<BadLine> = sources
        .iter()
        .filter(|(_, net)| duplicates.contains(net))
        .map(|(line, net)| BadLine {
            line: *line,
            message: format!("{net} is already listed"),
        })
        .collect();
    if file {
        BlocklistError::BadRules(bad).into()
    } else {
        BlocklistError::BadArguments(bad).into()
    }
}

pub fn run(args: BlocklistArgs) -> anyhow::Result<()> {
    if let BlocklistCommand::Detach { iface, output, .. } = &args.command {
        // Needs no maps: works on a pin directory of any layout.
        let detached = super::attach::detach_pinned_links(&args.pin_dir, iface)?;
        if *output == OutputFormat::Json {
            println!("{}", serde_json::json!({ "detached": detached }));
        }
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
    // Everything given is checked before the pin directory is opened: a refused command
    // creates no directory and no pins.
    match args.command {
        BlocklistCommand::Add {
            rules,
            comment,
            ttl,
            output,
        } => {
            let nets = rules::parse_args(&rules)?;
            check_comment(comment.as_deref())?;
            let mut blocklist = Blocklist::open(&args.pin_dir)?;
            // As `ip route replace` users expect: a rule already there is no error. It stays
            // as it is (comment, TTL, counters), and the command says so.
            let (present, added) = match blocklist.add(&nets, comment.as_deref(), ttl) {
                Ok(()) => (Vec::new(), nets),
                Err(BlocklistError::Duplicate(present)) => {
                    let missing: Vec<IpNet> = nets
                        .iter()
                        .filter(|net| !present.contains(net))
                        .copied()
                        .collect();
                    if !missing.is_empty() {
                        blocklist.add(&missing, comment.as_deref(), ttl)?;
                    }
                    (present, missing)
                }
                Err(err) => return Err(err.into()),
            };
            for net in &present {
                eprintln!(
                    "{net} is already listed: left unchanged (`del` it first to change its                      comment or TTL)"
                );
            }
            if output == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "added": added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "already_listed": present.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                );
            }
            eprintln!("added {} rule(s)", added.len());
        }
        BlocklistCommand::Del { rules, output } => {
            let nets = rules::parse_args(&rules)?;
            pins::check_rights(&args.pin_dir)?;
            if !list_exists(&args.pin_dir) {
                return Err(BlocklistError::NotListed(nets[0].to_string()).into());
            }
            Blocklist::open(&args.pin_dir)?.delete(&nets)?;
            if output == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "removed": nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                );
            }
            eprintln!("removed {} rule(s)", nets.len());
        }
        BlocklistCommand::List { output } => {
            pins::check_rights(&args.pin_dir)?;
            let (rules, totals) = if list_exists(&args.pin_dir) {
                let blocklist = match Blocklist::open(&args.pin_dir) {
                    Err(BlocklistError::Incompatible { path, detail }) => {
                        return list_other_layout(&args.pin_dir, output, &path, &detail);
                    }
                    opened => opened?,
                };
                (blocklist.list()?, blocklist.totals()?)
            } else {
                (Vec::new(), Totals::default())
            };
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "rules": rules,
                        "totals": totals,
                    })
                ),
                OutputFormat::Table => print!("{}", table(&rules)),
            }
        }
        BlocklistCommand::Import {
            file,
            replace,
            comment,
            output,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let lines = rules::parse_import_lines(&text)
                .with_context(|| format!("importing {}", file.display()))?;
            check_comment(comment.as_deref())?;
            let nets: Vec<IpNet> = lines.iter().map(|(_, net)| *net).collect();
            let mut blocklist = Blocklist::open(&args.pin_dir)?;
            if replace {
                blocklist.replace(&nets, comment.as_deref())?;
                if output == OutputFormat::Json {
                    println!("{}", serde_json::json!({ "replaced_with": nets.len() }));
                }
                eprintln!("replaced the list with {} rule(s)", nets.len());
            } else {
                blocklist
                    .add(&nets, comment.as_deref(), None)
                    .map_err(|err| already_listed(err, &lines, true))
                    .with_context(|| format!("importing {}", file.display()))?;
                if output == OutputFormat::Json {
                    println!("{}", serde_json::json!({ "added": nets.len() }));
                }
                eprintln!("added {} rule(s)", nets.len());
            }
        }
        BlocklistCommand::Flush { output } => {
            pins::check_rights(&args.pin_dir)?;
            let removed = if list_exists(&args.pin_dir) {
                Blocklist::open(&args.pin_dir)?.flush()?
            } else {
                0
            };
            if output == OutputFormat::Json {
                println!("{}", serde_json::json!({ "removed": removed }));
            }
            eprintln!("removed {removed} rule(s)");
        }
        BlocklistCommand::Detach { .. } => unreachable!("handled before opening the list"),
    }
    Ok(())
}

/// `list` of pins in another layout: the rules only, as an import file (`--output table`)
/// or JSON, so the advice of [`BlocklistError::Incompatible`] works; what was lost goes to
/// stderr.
fn list_other_layout(
    pin_dir: &Path,
    output: OutputFormat,
    path: &str,
    detail: &str,
) -> anyhow::Result<()> {
    let nets = super::salvage::rules(pin_dir)?;
    let why = format!("pinned map {path} has another layout ({detail})");
    eprintln!(
        "warning: {why}: listing its {} rule(s) only, one a line as `import` reads them; \
         their comments, TTLs and counters cannot be read. To keep the list: `collector \
         blocklist --pin-dir {dir} list > rules.txt`, `rm -r {dir}`, then `collector blocklist \
         --pin-dir {dir} import rules.txt`",
        nets.len(),
        dir = pin_dir.display()
    );
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "rules": nets.iter().map(|net| serde_json::json!({"rule": net.to_string()})).collect::<Vec<_>>(),
                "other_layout": why,
            })
        ),
        OutputFormat::Table => {
            let mut out = format!("# {}\n", rules::escape(&why));
            for net in &nets {
                let _ = writeln!(out, "{net}");
            }
            print!("{out}");
        }
    }
    Ok(())
}

fn table(rules: &[ListedRule]) -> String {
    let mut out = format!(
        "{:<44} {:>12} {:>14} {:>10} {:>10} {:<6}  COMMENT\n",
        "RULE", "PACKETS", "BYTES", "AGE", "EXPIRES IN", "BY"
    );
    let now = super::clock::unix_now();
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
            // Written by whoever could edit the maps: never let it drive the terminal.
            rules::escape(&rule.comment)
        );
    }
    out
}
