//! Rule text: addresses and CIDRs as operators write them, and import files.

use std::{collections::HashSet, fmt, net::IpAddr, str::FromStr as _};

use ipnet::IpNet;

use super::BlocklistError;

/// A rule's prefix. A bare address is a /32 (IPv4) or /128 (IPv6).
pub fn parse_rule(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty rule".to_string());
    }
    let net = if text.contains('/') {
        IpNet::from_str(text).map_err(|_| {
            format!("`{text}` is not an address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)")
        })?
    } else {
        IpAddr::from_str(text)
            .map(IpNet::from)
            .map_err(|_| {
                format!("`{text}` is not an address or CIDR (e.g. 192.0.2.7, 198.51.100.0/24, 2001:db8::/32)")
            })?
    };
    // A CIDR with host bits set is almost always a typo for a different range than the one
    // the operator means; refusing beats silently widening or narrowing it.
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set: did you mean {}?",
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
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    let mut bad = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let rule = line.split('#').next().unwrap_or_default().trim();
        if rule.is_empty() {
            continue;
        }
        match parse_rule(rule) {
            Ok(net) if !seen.insert(net) => bad.push(BadLine {
                line: index + 1,
                message: format!("{net} is listed twice in this file"),
            }),
            Ok(net) => rules.push(net),
            Err(message) => bad.push(BadLine {
                line: index + 1,
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

/// Parses rules given on the command line, refusing repeats among them.
pub fn parse_args(args: &[String]) -> Result<Vec<IpNet>, BlocklistError> {
    parse_import(&args.join("\n")).map_err(|err| match err {
        // Positions, not lines: the operator typed a list, not a file.
        BlocklistError::BadRules(bad) => BlocklistError::BadArguments(bad),
        other => other,
    })
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
        assert_eq!(parse_import("1.2.3.4 # one\n").unwrap().len(), 1);
    }
}
