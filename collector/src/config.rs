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

/// Returns `args` with the config file's options inserted after the subcommand (only for
/// options not given as flags or environment variables). Without a config file, `args`.
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
    let given = |long: &str| {
        args.iter().any(|arg| {
            let arg = arg.to_string_lossy();
            arg == format!("--{long}") || arg.starts_with(&format!("--{long}="))
        })
    };
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(argument) = subcommand
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
        else {
            let known: Vec<String> = subcommand
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "config" && *l != "help")
                .map(|l| l.replace('-', "_"))
                .collect();
            bail!(
                "config file {}: unknown key `{key}` (known: {})",
                path.display(),
                known.join(", ")
            );
        };
        if given(&long)
            || argument
                .get_env()
                .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let option = match value_text(key, value)
            .with_context(|| format!("config file {}", path.display()))?
        {
            Some(text) => vec![OsString::from(format!("--{long}={text}"))],
            None => vec![OsString::from(format!("--{long}"))],
        };
        if matches!(value, toml::Value::Boolean(false)) {
            continue;
        }
        // Check the value alone so the error names the key, not a merged command line.
        let mut alone = vec![args[0].clone(), args[position].clone()];
        alone.extend(option.iter().cloned());
        if let Err(err) = Cli::command().try_get_matches_from(&alone) {
            let message = err.to_string();
            let first = message.lines().next().unwrap_or_default();
            bail!("config file {}: key `{key}`: {first}", path.display());
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
}
