//! `--config FILE`: the same options as the flags, in TOML (`window = "1s"`,
//! `disable_signals = ["syscalls"]`). Precedence: flags, then environment, then the file, then
//! defaults. An unknown key or a bad value stops the daemon at start, naming the key.

use std::{ffi::OsString, path::Path};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;

use crate::cli::Cli;

const CONFIG_FLAG: &str = "--config";
const CONFIG_ENV: &str = "NODESTATE_CONFIG";

/// The config file named on the command line (`--config F`, `--config=F`) or in the
/// environment.
fn config_path(args: &[OsString]) -> Option<OsString> {
    for (index, arg) in args.iter().enumerate() {
        let text = arg.to_string_lossy();
        if text == CONFIG_FLAG {
            return args.get(index + 1).cloned();
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    std::env::var_os(CONFIG_ENV)
}

fn value_text(key: &str, value: &toml::Value) -> anyhow::Result<Option<String>> {
    Ok(Some(match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(true) => return Ok(None),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text.clone()),
                other => Ok(other.to_string()),
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        other => bail!("key `{key}`: unsupported value {other}"),
    }))
}

/// Every long name of `argument`: its own and its aliases (`--syscall-budget` for
/// `--hook-budget`).
fn long_names(argument: &clap::Arg) -> Vec<&str> {
    argument
        .get_long()
        .into_iter()
        .chain(argument.get_all_aliases().unwrap_or_default())
        .collect()
}

/// Returns `args` with the config file's options inserted after the subcommand (only for
/// options not given as flags or environment variables). Without a config file, `args`.
///
/// Keys are the long options of the subcommand and the global ones (`log_level`,
/// `log_format`), by name or alias. Every value in the file is checked, also one a flag or
/// the environment overrides: a bad file is an error even while something hides it.
pub fn merge_config_file(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let command = Cli::command();
    // The subcommand is the first argument that names one.
    let Some((position, subcommand)) = args.iter().enumerate().skip(1).find_map(|(i, arg)| {
        command
            .find_subcommand(arg.to_string_lossy().as_ref())
            .map(|sub| (i, sub.clone()))
    }) else {
        return Ok(args);
    };
    // Only subcommands with a --config option read the file: NODESTATE_CONFIG in a container's
    // environment must not break `collector blocklist list` or `collector probes` run there.
    if !subcommand
        .get_arguments()
        .any(|argument| argument.get_long() == Some("config"))
    {
        return Ok(args);
    }
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let path = Path::new(&path).to_path_buf();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|err| anyhow::anyhow!("config file {}: {err}", path.display()))?;
    let settable = |argument: &&clap::Arg| {
        argument
            .get_long()
            .is_some_and(|long| !matches!(long, "config" | "help" | "version"))
    };
    // The subcommand's own options, then the global ones (`--log-level` …).
    let arguments: Vec<&clap::Arg> = subcommand
        .get_arguments()
        .filter(settable)
        .chain(
            command
                .get_arguments()
                .filter(|argument| argument.is_global_set())
                .filter(settable),
        )
        .collect();
    let given = |argument: &clap::Arg| {
        let names = long_names(argument);
        args.iter().any(|arg| {
            let arg = arg.to_string_lossy();
            names
                .iter()
                .any(|long| arg == format!("--{long}") || arg.starts_with(&format!("--{long}=")))
        })
    };
    let mut keys_of: Vec<(&clap::Arg, &str)> = Vec::new();
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let Some(argument) = arguments
            .iter()
            .copied()
            .find(|argument| long_names(argument).contains(&name.as_str()))
        else {
            let known: Vec<String> = arguments
                .iter()
                .filter_map(|a| a.get_long())
                .map(|l| l.replace('-', "_"))
                .collect();
            bail!(
                "config file {}: unknown key `{key}` (known: {})",
                path.display(),
                known.join(", ")
            );
        };
        let long = argument
            .get_long()
            .expect("settable arguments have a long name");
        if let Some((_, other)) = keys_of
            .iter()
            .find(|(seen, _)| seen.get_id() == argument.get_id())
        {
            bail!(
                "config file {}: keys `{other}` and `{key}` both set --{long}; keep one",
                path.display()
            );
        }
        keys_of.push((argument, key));
        let option = match value {
            toml::Value::Boolean(false) if !argument.get_action().takes_values() => None,
            toml::Value::Boolean(_) if argument.get_action().takes_values() => bail!(
                "config file {}: key `{key}` takes a value, not {value}",
                path.display()
            ),
            _ => Some(
                match value_text(key, value)
                    .with_context(|| format!("config file {}", path.display()))?
                {
                    Some(text) => OsString::from(format!("--{long}={text}")),
                    None => OsString::from(format!("--{long}")),
                },
            ),
        };
        // Check the value alone so the error names the key, not a merged command line; and
        // check it even when a flag or the environment wins, so a bad file never waits for
        // the day that flag is dropped.
        if let Some(option) = &option {
            let alone = [args[0].clone(), args[position].clone(), option.clone()];
            if let Err(err) = Cli::command().try_get_matches_from(alone) {
                let message = err.to_string();
                let first = message.lines().next().unwrap_or_default();
                bail!("config file {}: key `{key}`: {first}", path.display());
            }
        }
        if given(argument)
            || argument
                .get_env()
                .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        injected.extend(option);
    }
    let mut merged = args[..=position].to_vec();
    merged.extend(injected);
    merged.extend(args[position + 1..].iter().cloned());
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_subcommands_with_config_read_the_file() {
        // Not read at all (it does not exist): clap then refuses `--config` for `rank`.
        let given = args(&[
            "collector",
            "rank",
            "--config",
            "/nonexistent/nodestate.toml",
        ]);
        assert_eq!(merge_config_file(given.clone()).unwrap(), given);
        let err = merge_config_file(args(&[
            "collector",
            "run",
            "--config",
            "/nonexistent/nodestate.toml",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("reading the config file"), "{err}");
    }

    #[test]
    fn subcommands_without_a_config_option_ignore_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "window = \"2s\"\nlearn_for = \"1m\"\n").unwrap();
        let file = file.to_str().unwrap();
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();

        let merged = merge_config_file(args(&["collector", "run", "--config", file])).unwrap();
        assert!(
            merged.contains(&OsString::from("--window=2s")),
            "{merged:?}"
        );
        assert!(
            merged.contains(&OsString::from("--learn-for=1m")),
            "{merged:?}"
        );

        // `probes` has no --config (clap refuses the flag itself) and no `learn_for`: the file
        // named (here on the command line, in a pod through NODESTATE_CONFIG) is not read.
        let probes = args(&["collector", "probes", "--config", file]);
        assert_eq!(merge_config_file(probes.clone()).unwrap(), probes);
    }

    fn merged(file_text: &str, extra: &[&str]) -> anyhow::Result<Vec<OsString>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, file_text).unwrap();
        let mut list = vec!["collector", "run", "--config", file.to_str().unwrap()];
        list.extend_from_slice(extra);
        merge_config_file(args(&list))
    }

    fn run_args(merged: Vec<OsString>) -> (Cli, crate::cli::RunArgs) {
        use clap::Parser as _;
        let mut cli = Cli::try_parse_from(merged).expect("the merged command line parses");
        let command = std::mem::replace(
            &mut cli.command,
            crate::cli::Command::Probes(crate::cli::ProbesArgs {
                exercise: false,
                block_device: None,
                output: crate::cli::OutputFormat::Table,
            }),
        );
        let crate::cli::Command::Run(run) = command else {
            panic!("expected run")
        };
        (cli, run)
    }

    #[test]
    fn global_options_can_be_set_in_the_file() {
        let (cli, _) =
            run_args(merged("log_level = \"debug\"\nlog_format = \"json\"\n", &[]).unwrap());
        assert_eq!(cli.log_level, "debug");
        assert_eq!(cli.log_format, crate::cli::LogFormat::Json);
        // The flag still wins.
        let (cli, _) =
            run_args(merged("log_level = \"debug\"\n", &["--log-level", "warn"]).unwrap());
        assert_eq!(cli.log_level, "warn");
        let err = merged("log_level = \"collector=loud\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `log_level`"), "{err}");
    }

    #[test]
    fn an_alias_is_the_same_option_in_the_file_and_on_the_command_line() {
        // The file's key and the flag's alias name one option: the flag wins, no clash.
        let (_, run) =
            run_args(merged("hook_budget = \"1%\"\n", &["--syscall-budget=2%"]).unwrap());
        assert!(
            (run.collect.hook_budget - 0.02).abs() < 1e-9,
            "{}",
            run.collect.hook_budget
        );
        let (_, run) =
            run_args(merged("syscall_budget = \"1%\"\n", &["--hook-budget", "3%"]).unwrap());
        assert!(
            (run.collect.hook_budget - 0.03).abs() < 1e-9,
            "{}",
            run.collect.hook_budget
        );
        let (_, run) = run_args(merged("syscall_budget = \"1%\"\n", &[]).unwrap());
        assert!(
            (run.collect.hook_budget - 0.01).abs() < 1e-9,
            "{}",
            run.collect.hook_budget
        );
        let err = merged("hook_budget = \"1%\"\nsyscall_budget = \"2%\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("both set --hook-budget"), "{err}");
    }

    #[test]
    fn a_bad_value_is_refused_even_when_a_flag_overrides_it() {
        let err = merged("window = \"fast\"\n", &["--window", "2s"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `window`") && err.contains("fast"),
            "{err}"
        );
        let err = merged("enter_after = 0\n", &["--enter-after=3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `enter_after`"), "{err}");
        let err = merged("window = false\n", &[]).unwrap_err().to_string();
        assert!(err.contains("takes a value"), "{err}");
        // A switch set to false is simply off.
        let (_, run) = run_args(merged("auto_block = false\n", &[]).unwrap());
        assert!(!run.auto_block.auto_block);
    }
}
