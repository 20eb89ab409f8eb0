//! The port group policy flags of `portgroup add` and `portgroup set`, and
//! how they change a group: only what a flag names changes, the rest stays.
//! Values are checked by the daemon, whose message the CLI shows.

use std::collections::BTreeSet;

use clap::{Args, ValueEnum};

use crate::control_plane::config::{LoadBalancing, PortGroupConfig, ShapingRule};
use crate::dataplane::policy::VlanMode;

use super::CliError;

/// Accept or reject, as vSphere's security policy says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verdict {
    Accept,
    Reject,
}

impl Verdict {
    fn accepts(self) -> bool {
        self == Verdict::Accept
    }
}

/// Load balancing of a port group's teaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TeamingPolicy {
    /// Each VM port uses one uplink.
    OriginatingPort,
    /// By a hash of the source MAC address.
    SourceMac,
    /// By a hash of the source and destination IP addresses.
    IpHash,
    /// The first active uplink that has link.
    FailoverOrder,
}

impl From<TeamingPolicy> for LoadBalancing {
    fn from(p: TeamingPolicy) -> Self {
        match p {
            TeamingPolicy::OriginatingPort => LoadBalancing::OriginatingPort,
            TeamingPolicy::SourceMac => LoadBalancing::SourceMac,
            TeamingPolicy::IpHash => LoadBalancing::IpHash,
            TeamingPolicy::FailoverOrder => LoadBalancing::FailoverOrder,
        }
    }
}

/// A port group's policy, as flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PolicyFlags {
    /// Untagged traffic only (vSphere's VLAN ID 0).
    #[arg(long, conflicts_with_all = ["vlan_access", "vlan_trunk"])]
    pub no_vlan: bool,
    /// Guests send untagged frames, carried in VLAN ID (1-4094).
    #[arg(long, value_name = "ID", conflicts_with = "vlan_trunk")]
    pub vlan_access: Option<u16>,
    /// Guests send tagged frames of these VLANs, e.g. 10,20,100-110.
    #[arg(long, value_name = "LIST")]
    pub vlan_trunk: Option<String>,
    /// A trunk's untagged frames belong to VLAN ID (0: they are dropped).
    #[arg(long, value_name = "ID")]
    pub native_vlan: Option<u16>,
    /// Ports also receive unicast frames addressed to other VMs.
    #[arg(long, value_name = "VERDICT")]
    pub promiscuous: Option<Verdict>,
    /// Guests may receive on a MAC address other than their port's.
    #[arg(long, value_name = "VERDICT")]
    pub mac_changes: Option<Verdict>,
    /// Guests may send from a MAC address other than their port's.
    #[arg(long, value_name = "VERDICT")]
    pub forged_transmits: Option<Verdict>,
    /// Ingress (VM to switch) average rate in bit/s; k, M, G are powers of 1000.
    #[arg(long, value_name = "BPS")]
    pub ingress_average: Option<String>,
    /// Ingress peak rate in bit/s (default: the average).
    #[arg(long, value_name = "BPS")]
    pub ingress_peak: Option<String>,
    /// Ingress burst size in bytes; K, M, G are powers of 1024.
    #[arg(long, value_name = "BYTES")]
    pub ingress_burst: Option<String>,
    /// No ingress shaping.
    #[arg(long, conflicts_with_all = ["ingress_average", "ingress_peak", "ingress_burst"])]
    pub no_ingress_shaping: bool,
    /// Egress (switch to VM) average rate in bit/s; k, M, G are powers of 1000.
    #[arg(long, value_name = "BPS")]
    pub egress_average: Option<String>,
    /// Egress peak rate in bit/s (default: the average).
    #[arg(long, value_name = "BPS")]
    pub egress_peak: Option<String>,
    /// Egress burst size in bytes; K, M, G are powers of 1024.
    #[arg(long, value_name = "BYTES")]
    pub egress_burst: Option<String>,
    /// No egress shaping.
    #[arg(long, conflicts_with_all = ["egress_average", "egress_peak", "egress_burst"])]
    pub no_egress_shaping: bool,
    /// How traffic is spread over the uplinks.
    #[arg(long, value_name = "POLICY")]
    pub teaming_policy: Option<TeamingPolicy>,
    /// Active uplinks in failover order, e.g. u0,u1 ('' for all of the switch's).
    #[arg(long, value_name = "UPLINKS", value_delimiter = ',')]
    pub active: Option<Vec<String>>,
    /// Standby uplinks in order ('' for none).
    #[arg(long, value_name = "UPLINKS", value_delimiter = ',')]
    pub standby: Option<Vec<String>>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// A number with an optional suffix: `k`/`M`/`G` times `base`, `base`²,
/// `base`³.
fn parse_scaled(text: &str, base: u64, what: &str) -> Result<u64, CliError> {
    let t = text.trim();
    let (digits, power) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1),
        Some('M') => (&t[..t.len() - 1], 2),
        Some('G') => (&t[..t.len() - 1], 3),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| usage(format!("{what}: {text:?} is not a number")))?;
    n.checked_mul(base.pow(power))
        .ok_or_else(|| usage(format!("{what}: {text:?} is too large")))
}

/// Bits per second: `100M` is 100,000,000.
pub fn parse_rate(text: &str) -> Result<u64, CliError> {
    parse_scaled(text, 1000, "rate")
}

/// Bytes: `64K` is 65,536.
pub fn parse_bytes(text: &str) -> Result<u64, CliError> {
    parse_scaled(text, 1024, "size")
}

/// `10,20,100-110`.
pub fn parse_vlan_list(text: &str) -> Result<BTreeSet<u16>, CliError> {
    VlanMode::parse_list(text).map_err(|e| usage(e.to_string()))
}

/// One direction's shaping rule after the flags: `None` for no shaping.
fn shaping_rule(
    current: Option<ShapingRule>,
    direction: &str,
    off: bool,
    average: Option<&String>,
    peak: Option<&String>,
    burst: Option<&String>,
) -> Result<Option<ShapingRule>, CliError> {
    if off {
        return Ok(None);
    }
    if average.is_none() && peak.is_none() && burst.is_none() {
        return Ok(current);
    }
    let average = average.map(|a| parse_rate(a)).transpose()?;
    let peak = peak.map(|p| parse_rate(p)).transpose()?;
    let burst = burst.map(|b| parse_bytes(b)).transpose()?;
    match current {
        Some(rule) => Ok(Some(ShapingRule {
            average_bps: average.unwrap_or(rule.average_bps),
            peak_bps: peak.unwrap_or(rule.peak_bps),
            burst_bytes: burst.unwrap_or(rule.burst_bytes),
        })),
        None => {
            let (Some(average_bps), Some(burst_bytes)) = (average, burst) else {
                return Err(usage(format!(
                    "new {direction} shaping needs --{direction}-average and --{direction}-burst"
                )));
            };
            Ok(Some(ShapingRule {
                average_bps,
                peak_bps: peak.unwrap_or(average_bps),
                burst_bytes,
            }))
        }
    }
}

fn uplink_list(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

impl PolicyFlags {
    /// Changes what the flags name in `group`.
    pub fn apply_to(&self, group: &mut PortGroupConfig) -> Result<(), CliError> {
        let native = match self.native_vlan {
            Some(0) => Some(None),
            Some(id) => Some(Some(id)),
            None => None,
        };
        if self.no_vlan {
            group.vlan = VlanMode::None;
        } else if let Some(id) = self.vlan_access {
            group.vlan = VlanMode::Access { id };
        } else if let Some(list) = &self.vlan_trunk {
            let kept = match &group.vlan {
                VlanMode::Trunk { native, .. } => *native,
                _ => None,
            };
            group.vlan = VlanMode::Trunk {
                allowed: parse_vlan_list(list)?,
                native: native.unwrap_or(kept),
            };
        }
        if let Some(n) = native {
            match &mut group.vlan {
                VlanMode::Trunk { native, .. } => *native = n,
                _ => {
                    return Err(usage("--native-vlan applies to trunks only (--vlan-trunk)"));
                }
            }
        }
        let s = &mut group.security;
        for (flag, field) in [
            (self.promiscuous, &mut s.promiscuous),
            (self.mac_changes, &mut s.mac_changes),
            (self.forged_transmits, &mut s.forged_transmits),
        ] {
            if let Some(v) = flag {
                *field = v.accepts();
            }
        }
        group.shaping.ingress = shaping_rule(
            group.shaping.ingress,
            "ingress",
            self.no_ingress_shaping,
            self.ingress_average.as_ref(),
            self.ingress_peak.as_ref(),
            self.ingress_burst.as_ref(),
        )?;
        group.shaping.egress = shaping_rule(
            group.shaping.egress,
            "egress",
            self.no_egress_shaping,
            self.egress_average.as_ref(),
            self.egress_peak.as_ref(),
            self.egress_burst.as_ref(),
        )?;
        if let Some(p) = self.teaming_policy {
            group.teaming.policy = p.into();
        }
        if let Some(active) = &self.active {
            group.teaming.active = uplink_list(active);
        }
        if let Some(standby) = &self.standby {
            group.teaming.standby = uplink_list(standby);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::config::Shaping;

    fn group() -> PortGroupConfig {
        serde_json::from_str(r#"{"name":"pg"}"#).unwrap()
    }

    #[test]
    fn numbers_and_lists() {
        assert_eq!(parse_rate("100M").unwrap(), 100_000_000);
        assert_eq!(parse_rate("8000").unwrap(), 8000);
        assert_eq!(parse_rate("1g").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("64K").unwrap(), 65536);
        assert!(parse_rate("fast").is_err());
        assert!(parse_bytes("99999999999999999G").is_err());
        assert_eq!(
            parse_vlan_list("10, 20,30-32").unwrap(),
            [10, 20, 30, 31, 32].into()
        );
        for bad in ["", "x", "5-3", "1-", "70000"] {
            assert!(parse_vlan_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let mut g = group();
        PolicyFlags {
            vlan_trunk: Some("10,20".into()),
            native_vlan: Some(5),
            forged_transmits: Some(Verdict::Accept),
            ingress_average: Some("100M".into()),
            ingress_burst: Some("100K".into()),
            teaming_policy: Some(TeamingPolicy::IpHash),
            active: Some(vec!["u0".into(), "u1".into()]),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap();
        assert_eq!(
            g.vlan,
            VlanMode::Trunk {
                allowed: [10, 20].into(),
                native: Some(5)
            }
        );
        assert!(g.security.forged_transmits && !g.security.promiscuous);
        let rule = g.shaping.ingress.unwrap();
        assert_eq!(
            (rule.average_bps, rule.peak_bps, rule.burst_bytes),
            (100_000_000, 100_000_000, 102_400)
        );
        assert_eq!(g.shaping.egress, None);
        assert_eq!(g.teaming.policy, LoadBalancing::IpHash);
        assert_eq!(g.teaming.active, ["u0", "u1"]);

        // A second set: only the peak, the trunk list (native kept) and the
        // standby list change.
        let before = g.clone();
        PolicyFlags {
            vlan_trunk: Some("30".into()),
            ingress_peak: Some("200M".into()),
            standby: Some(vec!["u2".into()]),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap();
        assert_eq!(
            g.vlan,
            VlanMode::Trunk {
                allowed: [30].into(),
                native: Some(5)
            }
        );
        assert_eq!(g.shaping.ingress.unwrap().peak_bps, 200_000_000);
        assert_eq!(g.shaping.ingress.unwrap().average_bps, 100_000_000);
        assert_eq!(
            (g.security, &g.teaming.active),
            (before.security, &before.teaming.active)
        );
        assert_eq!(g.teaming.standby, ["u2"]);

        PolicyFlags {
            native_vlan: Some(0),
            no_ingress_shaping: true,
            active: Some(vec![String::new()]),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap();
        assert_eq!(
            g.vlan,
            VlanMode::Trunk {
                allowed: [30].into(),
                native: None
            }
        );
        assert_eq!(g.shaping, Shaping::default());
        assert!(g.teaming.active.is_empty());

        PolicyFlags {
            vlan_access: Some(7),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap();
        assert_eq!(g.vlan, VlanMode::Access { id: 7 });
    }

    #[test]
    fn incomplete_flags_are_refused() {
        let mut g = group();
        let e = PolicyFlags {
            native_vlan: Some(3),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap_err();
        assert!(e.to_string().contains("trunks only"), "{e}");
        let e = PolicyFlags {
            egress_peak: Some("1M".into()),
            ..PolicyFlags::default()
        }
        .apply_to(&mut g)
        .unwrap_err();
        assert!(e.to_string().contains("--egress-average"), "{e}");
    }
}
