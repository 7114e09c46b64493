//! The disruption budget index (no I/O): the budgets, compiled, and which devices requests
//! in flight disrupt now. Fed one watch event at a time; asked whether a device may be
//! disrupted, and what each budget allows.
//!
//! Reservations are derived from requests: a disruptive request holds its device from the
//! moment it is sent until it is terminal or deleted. The request watch replays every
//! request on a restart, so a restarted operator neither loses nor double-counts a slot.

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::core::{Selector, SelectorExt};
use kubetwin_api::DeviceDisruptionBudget;

use crate::rollout::planner::Size;

/// What holds a disruption: a request (its kind label, namespace and name) or a Device's
/// firmware update ([`FIRMWARE_HOLDER`], namespace and name).
pub type HolderKey = (&'static str, String, String);

/// Holder kind of a firmware update in progress.
pub const FIRMWARE_HOLDER: &str = "firmware";

/// Kinds whose holds must be replayed (their watch listed everything) before any disruption
/// is allowed: Devices (firmware updates in progress) and the request kinds.
pub const HOLDING_KINDS: [&str; 3] = ["device", "rebootrequest", "methodrequest"];

/// How many devices of a group must stay available, or may be unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// At most this many unavailable.
    MaxUnavailable(Size),
    /// At least this many available.
    MinAvailable(Size),
}

/// A budget, compiled for matching.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Its name.
    pub name: String,
    /// Which devices it protects.
    pub selector: Selector,
    /// Its limit.
    pub limit: Limit,
    /// Label key that splits it into groups.
    pub group_by: Option<String>,
}

impl Budget {
    /// Compiles a budget object; `None` when its selector or limit cannot be read (admission
    /// refuses such objects, so this only happens to objects from before a schema change).
    pub fn compile(object: &DeviceDisruptionBudget) -> Option<Self> {
        let selector = Selector::try_from(object.spec.selector.clone()).ok()?;
        let limit = match (&object.spec.max_unavailable, &object.spec.min_available) {
            (Some(max), None) => Limit::MaxUnavailable(Size::parse(max)?),
            (None, Some(min)) => Limit::MinAvailable(Size::parse(min)?),
            _ => return None,
        };
        Some(Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            selector,
            limit,
            group_by: object.spec.group_by.clone(),
        })
    }

    /// The group of a device this budget selects ("" without the groupBy label).
    pub fn group_of<'a>(&self, labels: &'a BTreeMap<String, String>) -> &'a str {
        self.group_by.as_ref().and_then(|key| labels.get(key)).map_or("", String::as_str)
    }

    /// Disruptions allowed in a group of `expected` devices, `available` of them available.
    pub fn allowed(&self, expected: u32, available: u32) -> u32 {
        let unavailable = expected.saturating_sub(available);
        match self.limit {
            Limit::MaxUnavailable(size) => size.of(expected).saturating_sub(unavailable),
            Limit::MinAvailable(size) => available.saturating_sub(size.of(expected)),
        }
    }
}

/// What the index needs to know of one Device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceFacts<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Whether it is online now.
    pub online: bool,
}

/// One group of a budget, evaluated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Devices in the group.
    pub expected: u32,
    /// Online and not disrupted.
    pub available: u32,
    /// Disruptions allowed now.
    pub allowed: u32,
    /// Devices disrupted by a request now.
    pub disrupted: Vec<String>,
}

/// Why a device may not be disrupted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The budget without room.
    pub budget: String,
    /// Its group ("" without groupBy).
    pub group: String,
    /// Devices of the group unavailable now.
    pub unavailable: u32,
    /// Devices in the group.
    pub expected: u32,
}

impl Exhausted {
    /// For people.
    pub fn message(&self) -> String {
        let group =
            if self.group.is_empty() { String::new() } else { format!(" (group {})", self.group) };
        format!(
            "DeviceDisruptionBudget {}{group} has no room: {} of {} devices unavailable",
            self.budget, self.unavailable, self.expected
        )
    }
}

/// Budgets per namespace, and the devices disrupted by requests in flight.
#[derive(Debug, Default)]
pub struct BudgetIndex {
    budgets: HashMap<String, BTreeMap<String, Budget>>,
    /// (namespace, device) → requests that disrupt it now.
    held: HashMap<(String, String), HashSet<HolderKey>>,
    /// Which request kinds have replayed their whole list (holds are complete).
    synced: HashSet<&'static str>,
}

impl BudgetIndex {
    /// Adds or replaces a budget (an unreadable one is removed).
    pub fn apply(&mut self, object: &DeviceDisruptionBudget) {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        match Budget::compile(object) {
            Some(budget) => {
                self.budgets.entry(namespace).or_default().insert(name, budget);
            }
            None => self.remove(&namespace, &name),
        }
    }

    /// Removes a budget.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(budgets) = self.budgets.get_mut(namespace) {
            budgets.remove(name);
        }
    }

    /// The budgets of a namespace.
    pub fn budgets(&self, namespace: &str) -> impl Iterator<Item = &Budget> {
        self.budgets.get(namespace).into_iter().flat_map(BTreeMap::values)
    }

    /// A budget by name.
    pub fn budget(&self, namespace: &str, name: &str) -> Option<&Budget> {
        self.budgets.get(namespace)?.get(name)
    }

    /// Records that request `holder` disrupts `device` (sent, not finished).
    pub fn hold(&mut self, namespace: &str, device: &str, holder: HolderKey) {
        self.held.entry((namespace.to_string(), device.to_string())).or_default().insert(holder);
    }

    /// Records that request `holder` disrupts nothing any more.
    pub fn release(&mut self, namespace: &str, device: &str, holder: &HolderKey) {
        let key = (namespace.to_string(), device.to_string());
        if let Some(holders) = self.held.get_mut(&key) {
            holders.remove(holder);
            if holders.is_empty() {
                self.held.remove(&key);
            }
        }
    }

    /// Whether `holder` disrupts `device` now.
    pub fn holds(&self, namespace: &str, device: &str, holder: &HolderKey) -> bool {
        self.held
            .get(&(namespace.to_string(), device.to_string()))
            .is_some_and(|holders| holders.contains(holder))
    }

    /// Whether a request disrupts `device` now.
    pub fn is_disrupted(&self, namespace: &str, device: &str) -> bool {
        self.held.contains_key(&(namespace.to_string(), device.to_string()))
    }

    /// Marks a request kind as replayed.
    pub fn kind_synced(&mut self, kind: &'static str) {
        self.synced.insert(kind);
    }

    /// Whether every request kind in `kinds` replayed its list (holds are complete).
    pub fn synced(&self, kinds: &[&'static str]) -> bool {
        kinds.iter().all(|k| self.synced.contains(k))
    }

    /// Evaluates every group of `budget` over the namespace's devices.
    pub fn evaluate<'a>(
        &self,
        namespace: &str,
        budget: &Budget,
        devices: impl Iterator<Item = DeviceFacts<'a>>,
    ) -> BTreeMap<String, GroupState> {
        let mut groups: BTreeMap<String, GroupState> = BTreeMap::new();
        for device in devices.filter(|d| budget.selector.matches(d.labels)) {
            let group = groups.entry(budget.group_of(device.labels).to_string()).or_default();
            group.expected += 1;
            let disrupted = self.is_disrupted(namespace, device.name);
            if disrupted {
                group.disrupted.push(device.name.to_string());
            }
            if device.online && !disrupted {
                group.available += 1;
            }
        }
        for group in groups.values_mut() {
            group.allowed = budget.allowed(group.expected, group.available);
        }
        groups
    }

    /// Whether `device` may be disrupted now: every budget that selects it has room in its
    /// group, or the device is unavailable already (offline or disrupted).
    pub fn check<'a>(
        &self,
        namespace: &str,
        device: DeviceFacts<'_>,
        devices: impl Iterator<Item = DeviceFacts<'a>> + Clone,
    ) -> Result<(), Exhausted> {
        if !device.online || self.is_disrupted(namespace, device.name) {
            return Ok(());
        }
        for budget in self.budgets(namespace).filter(|b| b.selector.matches(device.labels)) {
            let group = budget.group_of(device.labels);
            let same_group = devices.clone().filter(|d| budget.group_of(d.labels) == group);
            let states = self.evaluate(namespace, budget, same_group);
            let state = states.get(group).cloned().unwrap_or_default();
            if state.allowed == 0 {
                return Err(Exhausted {
                    budget: budget.name.clone(),
                    group: group.to_string(),
                    unavailable: state.expected.saturating_sub(state.available),
                    expected: state.expected,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::{
        apis::meta::v1::LabelSelector, util::intstr::IntOrString,
    };
    use kubetwin_api::DeviceDisruptionBudgetSpec;

    use super::*;

    fn budget(
        name: &str,
        max: Option<&str>,
        min: Option<&str>,
        group_by: Option<&str>,
    ) -> DeviceDisruptionBudget {
        let size = |s: &str| match s.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(s.into()),
        };
        let mut object = DeviceDisruptionBudget::new(
            name,
            DeviceDisruptionBudgetSpec {
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("site".into(), "a".into())])),
                    ..Default::default()
                },
                max_unavailable: max.map(size),
                min_available: min.map(size),
                group_by: group_by.map(Into::into),
            },
        );
        object.metadata.namespace = Some("ns".into());
        object
    }

    /// Twenty devices at site a on four lines (d00 on line 0, d01 on line 1, …), and one
    /// device elsewhere.
    fn fleet() -> Vec<(String, BTreeMap<String, String>)> {
        let mut devices: Vec<_> = (0..20)
            .map(|i| {
                let labels = BTreeMap::from([
                    ("site".to_string(), "a".to_string()),
                    ("line".to_string(), format!("{}", i % 4)),
                ]);
                (format!("d{i:02}"), labels)
            })
            .collect();
        devices.push(("other".into(), BTreeMap::from([("site".into(), "b".into())])));
        devices
    }

    fn facts<'a>(
        devices: &'a [(String, BTreeMap<String, String>)],
        offline: &'a [&str],
    ) -> impl Iterator<Item = DeviceFacts<'a>> + Clone {
        devices.iter().map(move |(name, labels)| DeviceFacts {
            name,
            labels,
            online: !offline.contains(&name.as_str()),
        })
    }

    fn device<'a>(
        devices: &'a [(String, BTreeMap<String, String>)],
        name: &str,
    ) -> DeviceFacts<'a> {
        let (name, labels) = devices.iter().find(|(n, _)| n == name).expect("device");
        DeviceFacts { name, labels, online: true }
    }

    fn holder(name: &str) -> HolderKey {
        ("methodrequest", "ns".into(), name.into())
    }

    #[test]
    fn limits_allow_what_pod_disruption_budgets_would() {
        // (maxUnavailable, minAvailable, expected, available, allowed)
        let table = [
            (Some("1"), None, 5, 5, 1),
            (Some("1"), None, 5, 4, 0),
            (Some("25%"), None, 10, 10, 3),
            (Some("0"), None, 10, 10, 0),
            (None, Some("3"), 5, 5, 2),
            (None, Some("90%"), 10, 10, 1),
            (None, Some("100%"), 10, 10, 0),
        ];
        for (max, min, expected, available, allowed) in table {
            let budget = Budget::compile(&budget("b", max, min, None)).expect("compiles");
            assert_eq!(
                budget.allowed(expected, available),
                allowed,
                "{max:?} {min:?} {expected}/{available}"
            );
        }
        assert!(Budget::compile(&budget("b", Some("1"), Some("1"), None)).is_none(), "both set");
    }

    #[test]
    fn one_disruption_per_line_and_the_other_lines_keep_their_room() {
        let mut index = BudgetIndex::default();
        index.apply(&budget("per-line", Some("1"), None, Some("line")));
        let devices = fleet();
        assert_eq!(index.check("ns", device(&devices, "d00"), facts(&devices, &[])), Ok(()));
        index.hold("ns", "d00", holder("r0"));
        // Line 0 (d00, d04, …) is full; line 1 is not; d00 itself is disrupted already.
        let blocked =
            index.check("ns", device(&devices, "d04"), facts(&devices, &[])).expect_err("full");
        assert_eq!((blocked.group.as_str(), blocked.unavailable, blocked.expected), ("0", 1, 5));
        assert!(
            blocked.message().contains("per-line (group 0) has no room: 1 of 5"),
            "{}",
            blocked.message()
        );
        assert_eq!(index.check("ns", device(&devices, "d01"), facts(&devices, &[])), Ok(()));
        assert_eq!(index.check("ns", device(&devices, "d00"), facts(&devices, &[])), Ok(()));
        // A device the budget does not select is never held back.
        assert_eq!(index.check("ns", device(&devices, "other"), facts(&devices, &[])), Ok(()));
        // Released: room again.
        index.release("ns", "d00", &holder("r0"));
        assert_eq!(index.check("ns", device(&devices, "d04"), facts(&devices, &[])), Ok(()));
    }

    #[test]
    fn an_offline_device_counts_as_unavailable() {
        let mut index = BudgetIndex::default();
        index.apply(&budget("per-line", Some("1"), None, Some("line")));
        let devices = fleet();
        assert!(index.check("ns", device(&devices, "d04"), facts(&devices, &["d08"])).is_err());
        let groups = index.evaluate(
            "ns",
            index.budget("ns", "per-line").expect("budget"),
            facts(&devices, &["d08"]),
        );
        let line0 = &groups["0"];
        assert_eq!((line0.expected, line0.available, line0.allowed), (5, 4, 0));
        assert_eq!((groups["1"].allowed, groups.len()), (1, 4));
    }

    #[test]
    fn every_budget_that_selects_a_device_must_have_room() {
        let mut index = BudgetIndex::default();
        index.apply(&budget("per-line", Some("1"), None, Some("line")));
        index.apply(&budget("site", None, Some("19"), None));
        let devices = fleet();
        index.hold("ns", "d01", holder("r1"));
        let blocked = index
            .check("ns", device(&devices, "d00"), facts(&devices, &[]))
            .expect_err("site full");
        assert_eq!(blocked.budget, "site");
        index.remove("ns", "site");
        assert_eq!(index.check("ns", device(&devices, "d00"), facts(&devices, &[])), Ok(()));
    }

    #[test]
    fn holds_of_several_requests_release_one_at_a_time() {
        let mut index = BudgetIndex::default();
        index.hold("ns", "d00", holder("a"));
        index.hold("ns", "d00", holder("b"));
        index.release("ns", "d00", &holder("a"));
        assert!(index.is_disrupted("ns", "d00"));
        index.release("ns", "d00", &holder("b"));
        assert!(!index.is_disrupted("ns", "d00"));
        assert!(!index.synced(&["rebootrequest"]));
        index.kind_synced("rebootrequest");
        assert!(index.synced(&["rebootrequest"]));
    }
}
