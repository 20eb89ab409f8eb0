//! Port group policy, as vSphere's standard switch defines it: how a port
//! maps frames to VLANs and back, and which frames its security policy
//! admits.
//!
//! Inside the switch every frame belongs to one VLAN (`vid`, 0 for the
//! untagged "none" network). A port's [`VlanMode`] says which VLAN a frame
//! from the port belongs to (ingress) and whether and how a frame of a VLAN
//! leaves through the port (egress: delivered as is, tag pushed, popped or
//! rewritten).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::dataplane::frame::{DropReason, FrameInfo, MAX_VID, MacAddr, TagEdit, VlanTag};

/// A port group's VLAN setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", from = "VlanModeIn")]
pub enum VlanMode {
    /// Untagged traffic only (vSphere's VLAN ID 0).
    None,
    /// Guests send and receive untagged frames; the switch carries them in
    /// VLAN `id` (VST, vSphere's VLAN ID 1–4094).
    Access { id: u16 },
    /// Guests send and receive tagged frames of the allowed VLANs (VGT,
    /// vSphere's VLAN trunking); untagged frames belong to `native` when
    /// set, and are dropped otherwise.
    Trunk {
        allowed: BTreeSet<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        native: Option<u16>,
    },
}

/// What [`VlanMode`] is read from: the same shape, with `None` written as
/// a struct variant so that, like the others, it refuses unknown fields
/// (serde lets extra fields through on an internally tagged unit variant,
/// so `{"mode":"none","id":10}` would silently mean "no VLAN").
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
enum VlanModeIn {
    None {},
    Access {
        id: u16,
    },
    Trunk {
        allowed: BTreeSet<u16>,
        #[serde(default)]
        native: Option<u16>,
    },
}

impl From<VlanModeIn> for VlanMode {
    fn from(v: VlanModeIn) -> Self {
        match v {
            VlanModeIn::None {} => VlanMode::None,
            VlanModeIn::Access { id } => VlanMode::Access { id },
            VlanModeIn::Trunk { allowed, native } => VlanMode::Trunk { allowed, native },
        }
    }
}

/// Error in a VLAN setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid VLAN setting: {0}")]
pub struct BadVlan(pub String);

/// A VLAN list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VLAN list {0:?}: expected IDs and ranges like 10,20,100-110")]
pub struct BadVlanList(pub String);

impl VlanMode {
    /// Reads a trunk's VLAN list as both command-line tools take it:
    /// `10,20,100-110` (the IDs themselves are checked by
    /// [`VlanMode::validate`], as for any configuration).
    pub fn parse_list(text: &str) -> Result<BTreeSet<u16>, BadVlanList> {
        let bad = || BadVlanList(text.to_owned());
        let mut out = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let first: u16 = first.trim().parse().map_err(|_| bad())?;
            let last: u16 = last.trim().parse().map_err(|_| bad())?;
            if first > last {
                return Err(bad());
            }
            out.extend(first..=last);
        }
        if out.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }

    /// Checks the IDs.
    pub fn validate(&self) -> Result<(), BadVlan> {
        let check = |id: u16| {
            if (1..=MAX_VID).contains(&id) {
                Ok(())
            } else {
                Err(BadVlan(format!("VLAN ID {id} is outside 1..={MAX_VID}")))
            }
        };
        match self {
            VlanMode::None => Ok(()),
            VlanMode::Access { id } => check(*id),
            VlanMode::Trunk { allowed, native } => {
                if allowed.is_empty() {
                    return Err(BadVlan("a trunk needs at least one allowed VLAN".into()));
                }
                allowed.iter().copied().try_for_each(check)?;
                if let Some(n) = native {
                    check(*n)?;
                }
                Ok(())
            }
        }
    }

    /// The VLAN a frame from this port belongs to.
    pub fn ingress(&self, tag: Option<VlanTag>) -> Result<u16, DropReason> {
        match (self, tag) {
            (VlanMode::None, None) => Ok(0),
            (VlanMode::Access { id }, None) => Ok(*id),
            (VlanMode::Trunk { allowed, .. }, Some(t)) if allowed.contains(&t.vid) => Ok(t.vid),
            (
                VlanMode::Trunk {
                    native: Some(n), ..
                },
                None,
            ) => Ok(*n),
            _ => Err(DropReason::VlanNotAllowed),
        }
    }

    /// How a frame of VLAN `vid`, carrying `tag` now, leaves through this
    /// port; `None` when the port is not in that VLAN.
    pub fn egress(&self, vid: u16, tag: Option<VlanTag>) -> Option<TagEdit> {
        let untagged = |tag: Option<VlanTag>| match tag {
            Some(_) => TagEdit::Pop,
            None => TagEdit::Keep,
        };
        match self {
            VlanMode::None => (vid == 0).then(|| untagged(tag)),
            VlanMode::Access { id } => (vid == *id).then(|| untagged(tag)),
            VlanMode::Trunk { allowed, native } => {
                if *native == Some(vid) {
                    Some(untagged(tag))
                } else if allowed.contains(&vid) {
                    Some(match tag {
                        Some(t) if t.vid == vid => TagEdit::Keep,
                        Some(t) => TagEdit::Rewrite(VlanTag { vid, pcp: t.pcp }),
                        None => TagEdit::Push(VlanTag { vid, pcp: 0 }),
                    })
                } else {
                    None
                }
            }
        }
    }
}

/// A port group's security policy (all three default to reject, as in
/// vSphere 7 and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// The port also receives unicast frames addressed to others in its
    /// VLAN.
    pub promiscuous: bool,
    /// The guest may receive on a MAC address other than the one assigned.
    pub mac_changes: bool,
    /// The guest may send with a source MAC other than the one assigned.
    pub forged_transmits: bool,
}

impl Security {
    /// Checks a frame a guest sends from a port whose assigned address is
    /// `assigned`.
    pub fn admit_transmit(&self, frame: &FrameInfo, assigned: MacAddr) -> Result<(), DropReason> {
        if !self.forged_transmits && frame.src != assigned {
            return Err(DropReason::ForgedSource);
        }
        Ok(())
    }

    /// Whether a unicast frame to `dst` may be delivered to a port assigned
    /// `assigned` that the forwarding table chose (or, for promiscuous
    /// ports, any port of the VLAN).
    pub fn admit_receive(&self, dst: MacAddr, assigned: MacAddr) -> bool {
        dst.is_multicast() || dst == assigned || self.mac_changes || self.promiscuous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(vid: u16) -> Option<VlanTag> {
        Some(VlanTag { vid, pcp: 3 })
    }

    fn trunk(ids: &[u16], native: Option<u16>) -> VlanMode {
        VlanMode::Trunk {
            allowed: ids.iter().copied().collect(),
            native,
        }
    }

    #[test]
    fn access_ports_carry_untagged_frames_in_their_vlan() {
        let p = VlanMode::Access { id: 10 };
        assert_eq!(p.ingress(None), Ok(10));
        assert_eq!(p.ingress(tag(10)), Err(DropReason::VlanNotAllowed));
        assert_eq!(p.egress(10, None), Some(TagEdit::Keep));
        assert_eq!(p.egress(10, tag(10)), Some(TagEdit::Pop));
        assert_eq!(p.egress(20, None), None);
    }

    #[test]
    fn trunks_tag_allowed_vlans() {
        let p = trunk(&[10, 20], None);
        assert_eq!(p.ingress(tag(20)), Ok(20));
        assert_eq!(p.ingress(tag(30)), Err(DropReason::VlanNotAllowed));
        assert_eq!(p.ingress(None), Err(DropReason::VlanNotAllowed));
        assert_eq!(
            p.egress(10, None),
            Some(TagEdit::Push(VlanTag { vid: 10, pcp: 0 }))
        );
        assert_eq!(p.egress(10, tag(10)), Some(TagEdit::Keep));
        assert_eq!(
            p.egress(20, tag(10)),
            Some(TagEdit::Rewrite(VlanTag { vid: 20, pcp: 3 }))
        );
        assert_eq!(p.egress(30, None), None);
        let with_native = trunk(&[10], Some(99));
        assert_eq!(with_native.ingress(None), Ok(99));
        assert_eq!(with_native.egress(99, None), Some(TagEdit::Keep));
    }

    #[test]
    fn none_is_untagged_only() {
        assert_eq!(VlanMode::None.ingress(None), Ok(0));
        assert_eq!(
            VlanMode::None.ingress(tag(5)),
            Err(DropReason::VlanNotAllowed)
        );
        assert_eq!(VlanMode::None.egress(0, None), Some(TagEdit::Keep));
        assert_eq!(VlanMode::None.egress(5, None), None);
    }

    #[test]
    fn validation() {
        assert!(VlanMode::Access { id: 0 }.validate().is_err());
        assert!(VlanMode::Access { id: 4095 }.validate().is_err());
        assert!(trunk(&[], None).validate().is_err());
        assert!(trunk(&[1, 4094], Some(7)).validate().is_ok());
        let json: VlanMode = serde_json::from_str(r#"{"mode":"trunk","allowed":[5,6]}"#).unwrap();
        assert_eq!(json, trunk(&[5, 6], None));
    }

    #[test]
    fn security_policy() {
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        let frame = |src| FrameInfo {
            dst: MacAddr::BROADCAST,
            src,
            tag: None,
            ethertype: 0x0800,
            len: 60,
        };
        let strict = Security::default();
        assert!(strict.admit_transmit(&frame(me), me).is_ok());
        assert_eq!(
            strict.admit_transmit(&frame(other), me),
            Err(DropReason::ForgedSource)
        );
        let lax = Security {
            forged_transmits: true,
            ..Security::default()
        };
        assert!(lax.admit_transmit(&frame(other), me).is_ok());
        assert!(strict.admit_receive(me, me));
        assert!(strict.admit_receive(MacAddr::BROADCAST, me));
        assert!(!strict.admit_receive(other, me));
        assert!(
            Security {
                promiscuous: true,
                ..strict
            }
            .admit_receive(other, me)
        );
    }

    #[test]
    fn json_round_trips_and_refuses_unknown_fields() {
        let modes = [
            VlanMode::None,
            VlanMode::Access { id: 10 },
            VlanMode::Trunk {
                allowed: [10, 20].into(),
                native: Some(1),
            },
        ];
        for m in modes {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<VlanMode>(&text).unwrap(),
                m,
                "{text}"
            );
        }
        for bad in [
            r#"{"mode":"none","id":10}"#,
            r#"{"mode":"access","id":10,"native":3}"#,
            r#"{"mode":"trunk","allowed":[1],"id":3}"#,
            r#"{"mode":"bridge"}"#,
        ] {
            assert!(serde_json::from_str::<VlanMode>(bad).is_err(), "{bad}");
        }
        let s: Security = serde_json::from_str(r#"{"promiscuous":true}"#).unwrap();
        assert!(s.promiscuous && !s.forged_transmits);
        assert!(serde_json::from_str::<Security>(r#"{"promiscuos":true}"#).is_err());
    }
}
