//! Rule text: addresses and CIDRs as operators write them, and import files.

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt,
    net::IpAddr,
    str::FromStr as _,
};

use ipnet::IpNet;

use super::BlocklistError;

/// Characters of an operator's text an error message echoes, at most.
const ECHO_CHARS: usize = 80;

/// `text` as a message shows it: control and invisible characters escaped (a NUL is `\0`, a
/// byte-order mark `\u{feff}`, an escape sequence `\u{1b}[…`), so what is printed is what is
/// there and a terminal never interprets it.
pub fn escape(text: &str) -> String {
    text.chars().map(escape_char).collect()
}

fn escape_char(c: char) -> String {
    match c {
        // escape_debug also backslashes quotes and backslashes, which print fine.
        '\'' | '"' | '\\' => c.to_string(),
        _ => c.escape_debug().to_string(),
    }
}

/// `text` escaped ([`escape`]) in backquotes and cut to 80 characters with "…", for error
/// messages: a 10 MB line is not echoed whole.
pub fn quote(text: &str) -> String {
    let mut chars = text.chars();
    let mut shown: String = chars.by_ref().take(ECHO_CHARS).map(escape_char).collect();
    let rest = chars.count();
    if rest > 0 {
        shown.push_str(&format!("… ({rest} more characters)"));
    }
    format!("`{shown}`")
}

/// A rule's prefix. A bare address is a /32 (IPv4) or /128 (IPv6).
pub fn parse_rule(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty rule".to_string());
    }
    let bad = || {
        format!(
            "{} is not an address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)",
            quote(text)
        )
    };
    let net = if text.contains('/') {
        IpNet::from_str(text).map_err(|_| bad())?
    } else {
        IpAddr::from_str(text).map(IpNet::from).map_err(|_| bad())?
    };
    // A CIDR with host bits set is almost always a typo for a different range than the one
    // the operator means; refusing beats silently widening or narrowing it.
    if net.trunc() != net {
        return Err(format!(
            "{} has host bits set: did you mean {}?",
            quote(text),
            net.trunc()
        ));
    }
    Ok(net)
}

/// One bad line of an import file or argument list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number (argument position for command-line rules).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses an import file: one rule a line, `#` starts a comment, blank lines are skipped.
/// Every bad line is reported, and nothing is returned unless all are good, so a caller
/// never applies half a file.
pub fn parse_import(text: &str) -> Result<Vec<IpNet>, BlocklistError> {
    Ok(parse_import_lines(text)?
        .into_iter()
        .map(|(_, net)| net)
        .collect())
}

/// [`parse_import`], keeping each rule's line number (for errors found later, such as a
/// rule that is already listed). A byte-order mark at the start of the file (some editors
/// write one) is not part of the first rule.
pub fn parse_import_lines(text: &str) -> Result<Vec<(usize, IpNet)>, BlocklistError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rules = Vec::new();
    let mut first_on: HashMap<IpNet, usize> = HashMap::new();
    let mut bad = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let rule = line.split('#').next().unwrap_or_default().trim();
        if rule.is_empty() {
            continue;
        }
        match parse_rule(rule) {
            Ok(net) => match first_on.entry(net) {
                Entry::Occupied(first) => bad.push(BadLine {
                    line: line_number,
                    message: format!(
                        "{net} is listed twice in this file (first on line {})",
                        first.get()
                    ),
                }),
                Entry::Vacant(slot) => {
                    slot.insert(line_number);
                    rules.push((line_number, net));
                }
            },
            Err(message) => bad.push(BadLine {
                line: line_number,
                message,
            }),
        }
    }
    if bad.is_empty() {
        Ok(rules)
    } else {
        Err(BlocklistError::BadRules(bad))
    }
}

/// Parses rules given on the command line, one per argument, refusing empty arguments and
/// repeats among them. Errors name the argument's position.
pub fn parse_args(args: &[String]) -> Result<Vec<IpNet>, BlocklistError> {
    let mut rules = Vec::new();
    let mut first_at: HashMap<IpNet, usize> = HashMap::new();
    let mut bad = Vec::new();
    for (index, arg) in args.iter().enumerate() {
        let position = index + 1;
        if arg.trim().is_empty() {
            bad.push(BadLine {
                line: position,
                message: format!(
                    "{} is empty: give an address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24)",
                    quote(arg)
                ),
            });
            continue;
        }
        match parse_rule(arg) {
            Ok(net) => match first_at.entry(net) {
                Entry::Occupied(first) => bad.push(BadLine {
                    line: position,
                    message: format!("{net} is given twice (also as argument {})", first.get()),
                }),
                Entry::Vacant(slot) => {
                    slot.insert(position);
                    rules.push(net);
                }
            },
            Err(message) => bad.push(BadLine {
                line: position,
                message,
            }),
        }
    }
    if bad.is_empty() {
        Ok(rules)
    } else {
        Err(BlocklistError::BadArguments(bad))
    }
}

/// The network of a drop-list key: its address and prefix length.
pub(super) fn net(addr: IpAddr, prefix_len: u32) -> IpNet {
    // The kernel refuses keys longer than the address, so the prefix always fits.
    IpNet::new(addr, prefix_len as u8).unwrap_or_else(|_| IpNet::from(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_host_routes_and_cidrs_keep_their_length() {
        assert_eq!(parse_rule("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_rule("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_rule(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn host_bits_and_garbage_are_refused_with_a_hint() {
        let err = parse_rule("10.1.2.3/8").unwrap_err();
        assert!(
            err.contains("host bits") && err.contains("10.0.0.0/8"),
            "{err}"
        );
        assert!(
            parse_rule("10.0.0.256")
                .unwrap_err()
                .contains("not an address")
        );
        assert!(parse_rule("10.0.0.0/33").is_err());
        assert!(parse_rule("fd00::/129").is_err());
    }

    #[test]
    fn import_reports_every_bad_line_by_number() {
        let text = "# hostile\n10.0.0.0/8\n\nnope\n10.0.0.0/8 # again\n2001:db8::1/64\n";
        let BlocklistError::BadRules(bad) = parse_import(text).unwrap_err() else {
            panic!("expected bad rules")
        };
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![4, 5, 6]);
        assert!(bad[1].message.contains("twice"));
        assert!(
            bad[1].message.contains("first on line 2"),
            "{}",
            bad[1].message
        );
        assert_eq!(parse_import("1.2.3.4 # one\n").unwrap().len(), 1);
    }

    #[test]
    fn arguments_are_one_rule_each_and_empty_or_repeated_ones_are_refused() {
        let args = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let BlocklistError::BadArguments(bad) = parse_args(&args(&[
            "192.0.2.1",
            "",
            "  ",
            "192.0.2.1/32",
            "10.0.0.1\n10.0.0.2",
        ]))
        .unwrap_err() else {
            panic!("expected bad arguments")
        };
        let positions: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(positions, vec![2, 3, 4, 5]);
        assert!(bad[0].message.contains("empty"), "{}", bad[0].message);
        assert!(
            bad[2].message.contains("given twice (also as argument 1)"),
            "{}",
            bad[2].message
        );
        assert!(!bad[2].message.contains("file"), "{}", bad[2].message);
        // One argument holding two lines is one bad rule, shown with its newline escaped.
        assert!(
            bad[3].message.contains("`10.0.0.1\\n10.0.0.2`"),
            "{}",
            bad[3].message
        );
        assert_eq!(
            parse_args(&args(&["192.0.2.1", "fd00::/8"])).unwrap().len(),
            2
        );
    }

    #[test]
    fn invisible_characters_are_shown_and_long_lines_cut() {
        let BlocklistError::BadRules(bad) =
            parse_import("10.0.0.1\0\n\u{feff}10.0.0.2\n\u{1b}[31m10.0.0.3\n").unwrap_err()
        else {
            panic!("expected bad rules")
        };
        assert!(
            bad[0].message.contains("`10.0.0.1\\0`"),
            "{}",
            bad[0].message
        );
        assert!(
            bad[1].message.contains("`\\u{feff}10.0.0.2`"),
            "{}",
            bad[1].message
        );
        assert!(
            bad[2].message.contains("`\\u{1b}[31m10.0.0.3`"),
            "{}",
            bad[2].message
        );
        // A byte-order mark opening the file is the editor's, not the rule's.
        assert_eq!(parse_import("\u{feff}10.0.0.1\n").unwrap().len(), 1);

        let line = "9".repeat(10 << 20);
        let BlocklistError::BadRules(bad) = parse_import(&line).unwrap_err() else {
            panic!("expected bad rules")
        };
        assert!(bad[0].message.len() < 300, "{} bytes", bad[0].message.len());
        assert!(
            bad[0]
                .message
                .contains(&format!("… ({} more characters)", (10 << 20) - 80)),
            "{}",
            bad[0].message
        );
    }
}
