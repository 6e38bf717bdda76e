//! The XDP drop list (packets by verdict, drops per rule, rules, interfaces) and automatic
//! flood blocking, when they are on.

use prometheus_client::{encoding::DescriptorEncoder, registry::Unit};

use super::{counters, gauges};
use crate::export::ExporterState;

/// `nodestate_xdp_*` and `nodestate_autoblock_*`.
pub(in crate::export) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &ExporterState,
) -> Result<(), std::fmt::Error> {
    let none: Vec<(&str, String)> = Vec::new();
    if let Some(xdp) = &state.xdp {
        let totals = [
            ("passed", xdp.totals.passed),
            ("dropped", xdp.totals.dropped),
            ("malformed", xdp.totals.malformed),
            ("non_ip", xdp.totals.non_ip),
            ("expired", xdp.totals.expired),
        ];
        let series: Vec<_> = totals
            .iter()
            .map(|(verdict, count)| (vec![("verdict", (*verdict).to_string())], *count as f64))
            .collect();
        counters(
            encoder,
            "nodestate_xdp_packets",
            "Packets seen by the XDP drop list, by verdict (malformed, non-IP and expired-rule packets pass)",
            None,
            &series,
        )?;
        let mut packets: Vec<_> = xdp
            .top
            .iter()
            .map(|(rule, packets, _)| (vec![("rule", rule.clone())], *packets as f64))
            .collect();
        packets.push((
            vec![("rule", "other".to_string())],
            xdp.other_packets as f64,
        ));
        counters(
            encoder,
            "nodestate_xdp_rule_dropped_packets",
            "Packets dropped per rule: the top rules by name, the rest as rule=\"other\"",
            None,
            &packets,
        )?;
        let mut bytes: Vec<_> = xdp
            .top
            .iter()
            .map(|(rule, _, bytes)| (vec![("rule", rule.clone())], *bytes as f64))
            .collect();
        bytes.push((vec![("rule", "other".to_string())], xdp.other_bytes as f64));
        counters(
            encoder,
            "nodestate_xdp_rule_dropped",
            "Bytes dropped per rule, like nodestate_xdp_rule_dropped_packets",
            Some(&Unit::Bytes),
            &bytes,
        )?;
        counters(
            encoder,
            "nodestate_xdp_sweeps_postponed",
            "Windows whose drop-list TTL sweep was put off because another process held the \
                 list's edit lock (the program ignores expired rules meanwhile)",
            None,
            &[(none.clone(), xdp.sweeps_postponed as f64)],
        )?;
        gauges(
            encoder,
            "nodestate_xdp_rules",
            "Rules on the XDP drop list",
            None,
            &[(none.clone(), xdp.rules as f64)],
        )?;
        let interfaces: Vec<_> = state
            .xdp_interfaces
            .iter()
            .map(|(interface, mode)| {
                (
                    vec![("interface", interface.clone()), ("mode", mode.clone())],
                    1.0,
                )
            })
            .collect();
        gauges(
            encoder,
            "nodestate_xdp_attached",
            "Interfaces the XDP drop list is attached to, and in which mode",
            None,
            &interfaces,
        )?;
    }
    if let Some(auto) = &state.auto_block {
        counters(
            encoder,
            "nodestate_autoblock_rules_added",
            "Rules the automatic flood blocking added to the XDP drop list",
            None,
            &[(none.clone(), auto.rules_added as f64)],
        )?;
        gauges(
            encoder,
            "nodestate_autoblock_active_rules",
            "Automatic rules on the XDP drop list now",
            None,
            &[(none.clone(), auto.active_rules as f64)],
        )?;
        let refused = [
            ("allowlist", auto.refused_allowlisted),
            ("max_rules", auto.refused_max_rules),
            ("error", auto.failed),
        ];
        let series: Vec<_> = refused
            .iter()
            .map(|(reason, count)| (vec![("reason", (*reason).to_string())], *count as f64))
            .collect();
        counters(
            encoder,
            "nodestate_autoblock_refused",
            "Flood sources not blocked, once per window: allow-listed (or an own address), \
                 the automatic rule limit reached, or an error (logged)",
            None,
            &series,
        )?;
    }
    Ok(())
}
