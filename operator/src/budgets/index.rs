//! The disruption budget index (no I/O): the budgets, compiled, the Devices they select (labels
//! and whether each is online), and which devices requests in flight disrupt now. Fed one
//! event at a time; asked whether a device may be disrupted, and what each budget allows.
//!
//! Each (budget, group) keeps its counts of expected and unavailable devices up to date as
//! events arrive, so the check before a disruptive send costs O(budgets), not O(devices):
//! a job over 10,000 devices makes 10,000 checks.
//!
//! Reservations are derived from requests: a disruptive request holds its device from the
//! moment it is sent until it is terminal or deleted. The request watch replays every
//! request on a restart, so a restarted operator neither loses nor double-counts a slot.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use kube::core::{Selector, SelectorExt};
use kubetwin_api::{Device, DeviceDisruptionBudget};

use crate::{
    k8s::labels::{Labels, shared},
    rollout::planner::Size,
};

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
    /// The spec it was compiled from (a status-only change recompiles nothing).
    spec: kubetwin_api::DeviceDisruptionBudgetSpec,
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
            spec: object.spec.clone(),
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

/// Counts of one (budget, group), kept up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GroupCount {
    expected: u32,
    unavailable: u32,
}

/// A budget and the counts of its groups.
#[derive(Debug)]
struct TrackedBudget {
    budget: Budget,
    groups: HashMap<String, GroupCount>,
}

/// What the index knows of one Device.
#[derive(Debug)]
struct TrackedDevice {
    labels: Arc<Labels>,
    online: bool,
}

/// The budgets, Devices and holds of one namespace.
#[derive(Debug, Default)]
struct Namespace {
    budgets: BTreeMap<String, TrackedBudget>,
    devices: HashMap<String, TrackedDevice>,
    /// Device → what disrupts it now (a device may be held before the index knows it).
    held: HashMap<String, HashSet<HolderKey>>,
}

impl Namespace {
    fn unavailable(&self, name: &str, online: bool) -> bool {
        !online || self.held.contains_key(name)
    }

    /// Adds (`add`) or removes `device`'s contribution to every budget selecting it.
    fn count(&mut self, name: &str, add: bool) {
        let Some(device) = self.devices.get(name) else {
            return;
        };
        let unavailable = !device.online || self.held.contains_key(name);
        for tracked in self.budgets.values_mut() {
            if !tracked.budget.selector.matches(&device.labels) {
                continue;
            }
            let group = tracked.budget.group_of(&device.labels);
            if add {
                let count = tracked.groups.entry(group.to_string()).or_default();
                count.expected += 1;
                count.unavailable += u32::from(unavailable);
            } else if let Some(count) = tracked.groups.get_mut(group) {
                count.expected = count.expected.saturating_sub(1);
                count.unavailable = count.unavailable.saturating_sub(u32::from(unavailable));
                if count.expected == 0 {
                    tracked.groups.remove(group);
                }
            }
        }
    }

    /// Counts every known device for `budget`.
    fn track(&self, budget: Budget) -> TrackedBudget {
        let mut groups: HashMap<String, GroupCount> = HashMap::new();
        for (name, device) in &self.devices {
            if budget.selector.matches(&device.labels) {
                let count = groups.entry(budget.group_of(&device.labels).to_string()).or_default();
                count.expected += 1;
                count.unavailable += u32::from(self.unavailable(name, device.online));
            }
        }
        TrackedBudget { budget, groups }
    }
}

/// Where a desired document stands: the Device's generation, then the revision within it. A
/// status records the position of the document it was computed with, and positions only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocumentPosition {
    /// The Device's generation.
    pub generation: i64,
    /// The revision within the generation.
    pub revision: i64,
}

impl DocumentPosition {
    /// A slot taken whose document is not computed yet: no persisted status is as new.
    pub const PENDING: Self = Self { generation: i64::MAX, revision: i64::MAX };

    /// The position a persisted Device's status records (`None`: none recorded).
    pub fn recorded(device: &Device) -> Option<Self> {
        let document = device.status.as_ref()?.document.as_ref()?;
        Some(Self { generation: document.version, revision: document.revision })
    }
}

/// Budgets per namespace, the Devices they select, and the devices disrupted now.
#[derive(Debug, Default)]
pub struct BudgetIndex {
    namespaces: HashMap<String, Namespace>,
    /// For each device (namespace, name) whose firmware slot this process took: the position
    /// of the document that carries the order (see `budgets::firmware::firmware_hold`).
    orders_sent: HashMap<(String, String), DocumentPosition>,
    /// Which holding kinds have replayed their whole list (holds are complete).
    synced: HashSet<&'static str>,
}

impl BudgetIndex {
    fn namespace(&mut self, namespace: &str) -> &mut Namespace {
        self.namespaces.entry(namespace.to_string()).or_default()
    }

    /// Adds or replaces a budget (an unreadable one is removed).
    pub fn apply(&mut self, object: &DeviceDisruptionBudget) {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let Some(budget) = Budget::compile(object) else {
            self.remove(&namespace, &name);
            return;
        };
        let space = self.namespace(&namespace);
        if space.budgets.get(&name).is_some_and(|t| t.budget.spec == budget.spec) {
            // A status write: nothing to recount.
            return;
        }
        let tracked = space.track(budget);
        space.budgets.insert(name, tracked);
    }

    /// Removes a budget.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(space) = self.namespaces.get_mut(namespace) {
            space.budgets.remove(name);
        }
    }

    /// The budgets of a namespace.
    pub fn budgets(&self, namespace: &str) -> impl Iterator<Item = &Budget> {
        self.namespaces
            .get(namespace)
            .into_iter()
            .flat_map(|space| space.budgets.values().map(|t| &t.budget))
    }

    /// A budget by name.
    pub fn budget(&self, namespace: &str, name: &str) -> Option<&Budget> {
        Some(&self.namespaces.get(namespace)?.budgets.get(name)?.budget)
    }

    /// Records a Device's labels (from the Device watch); a new one starts offline.
    pub fn set_labels(&mut self, namespace: &str, name: &str, labels: &BTreeMap<String, String>) {
        let space = self.namespace(namespace);
        if space.devices.get(name).is_some_and(|d| *d.labels == *labels) {
            return;
        }
        let online = space.devices.get(name).is_some_and(|d| d.online);
        space.count(name, false);
        // One copy of each label set, shared with the Device cache and every Device like it.
        let labels = shared(labels);
        space.devices.insert(name.to_string(), TrackedDevice { labels, online });
        space.count(name, true);
    }

    /// Records whether a known Device is online now (from the Device controller).
    pub fn set_online(&mut self, namespace: &str, name: &str, online: bool) {
        let Some(space) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if space.devices.get(name).is_none_or(|d| d.online == online) {
            return;
        }
        space.count(name, false);
        if let Some(device) = space.devices.get_mut(name) {
            device.online = online;
        }
        space.count(name, true);
    }

    /// Forgets a deleted Device (its holds stay until their requests say otherwise).
    pub fn remove_device(&mut self, namespace: &str, name: &str) {
        if let Some(space) = self.namespaces.get_mut(namespace) {
            space.count(name, false);
            space.devices.remove(name);
        }
    }

    /// Records that `holder` disrupts `device` (sent, not finished).
    pub fn hold(&mut self, namespace: &str, device: &str, holder: HolderKey) {
        let space = self.namespace(namespace);
        if space.held.get(device).is_some_and(|h| h.contains(&holder)) {
            return;
        }
        space.count(device, false);
        space.held.entry(device.to_string()).or_default().insert(holder);
        space.count(device, true);
    }

    /// Takes `device`'s firmware slot for an order whose document is not computed yet (see
    /// [`BudgetIndex::firmware_order_at`]).
    pub fn hold_firmware(&mut self, namespace: &str, device: &str, holder: HolderKey) {
        self.hold(namespace, device, holder);
        self.orders_sent
            .insert((namespace.to_string(), device.to_string()), DocumentPosition::PENDING);
    }

    /// Records the position of the document that carries `device`'s firmware order, if this
    /// process holds a slot for it (the position only moves forward once computed).
    pub fn firmware_order_at(&mut self, namespace: &str, device: &str, at: DocumentPosition) {
        if let Some(sent) = self.orders_sent.get_mut(&(namespace.to_string(), device.to_string()))
            && (*sent == DocumentPosition::PENDING || *sent < at)
        {
            *sent = at;
        }
    }

    /// The position of the document that carries `device`'s firmware order sent by this
    /// process, while its slot is held.
    pub fn firmware_order(&self, namespace: &str, device: &str) -> Option<DocumentPosition> {
        self.orders_sent.get(&(namespace.to_string(), device.to_string())).copied()
    }

    /// Gives back `device`'s firmware slot and forgets its order.
    pub fn release_firmware(&mut self, namespace: &str, device: &str, holder: &HolderKey) {
        self.release(namespace, device, holder);
        self.orders_sent.remove(&(namespace.to_string(), device.to_string()));
    }

    /// Records that `holder` disrupts nothing any more.
    pub fn release(&mut self, namespace: &str, device: &str, holder: &HolderKey) {
        let Some(space) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if !space.held.get(device).is_some_and(|h| h.contains(holder)) {
            return;
        }
        space.count(device, false);
        if let Some(holders) = space.held.get_mut(device) {
            holders.remove(holder);
            if holders.is_empty() {
                space.held.remove(device);
            }
        }
        space.count(device, true);
    }

    /// Whether `holder` disrupts `device` now.
    pub fn holds(&self, namespace: &str, device: &str, holder: &HolderKey) -> bool {
        self.namespaces
            .get(namespace)
            .and_then(|space| space.held.get(device))
            .is_some_and(|holders| holders.contains(holder))
    }

    /// Whether something disrupts `device` now.
    pub fn is_disrupted(&self, namespace: &str, device: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(|space| space.held.contains_key(device))
    }

    /// Marks a holding kind as replayed.
    pub fn kind_synced(&mut self, kind: &'static str) {
        self.synced.insert(kind);
    }

    /// Whether every kind in `kinds` replayed its list (holds are complete).
    pub fn synced(&self, kinds: &[&'static str]) -> bool {
        kinds.iter().all(|k| self.synced.contains(k))
    }

    /// Evaluates every group of budget `name` (O(devices of the namespace): for status).
    pub fn evaluate(&self, namespace: &str, name: &str) -> BTreeMap<String, GroupState> {
        let mut groups: BTreeMap<String, GroupState> = BTreeMap::new();
        let Some(space) = self.namespaces.get(namespace) else {
            return groups;
        };
        let Some(tracked) = space.budgets.get(name) else {
            return groups;
        };
        for (group, count) in &tracked.groups {
            let available = count.expected.saturating_sub(count.unavailable);
            groups.insert(
                group.clone(),
                GroupState {
                    expected: count.expected,
                    available,
                    allowed: tracked.budget.allowed(count.expected, available),
                    disrupted: Vec::new(),
                },
            );
        }
        for name in space.held.keys() {
            let Some(device) = space.devices.get(name) else {
                continue;
            };
            if tracked.budget.selector.matches(&device.labels)
                && let Some(group) = groups.get_mut(tracked.budget.group_of(&device.labels))
            {
                group.disrupted.push(name.clone());
            }
        }
        for group in groups.values_mut() {
            group.disrupted.sort();
        }
        groups
    }

    /// Whether `device` may be disrupted now: every budget that selects it has room in its
    /// group, or the device is unavailable already (offline or disrupted). A Device the
    /// index does not know is not selected by any budget.
    pub fn check(&self, namespace: &str, device: &str) -> Result<(), Exhausted> {
        let Some(space) = self.namespaces.get(namespace) else {
            return Ok(());
        };
        let Some(tracked_device) = space.devices.get(device) else {
            return Ok(());
        };
        if space.unavailable(device, tracked_device.online) {
            return Ok(());
        }
        for tracked in space.budgets.values() {
            if !tracked.budget.selector.matches(&tracked_device.labels) {
                continue;
            }
            let group = tracked.budget.group_of(&tracked_device.labels);
            let count = tracked.groups.get(group).copied().unwrap_or_default();
            let available = count.expected.saturating_sub(count.unavailable);
            if tracked.budget.allowed(count.expected, available) == 0 {
                return Err(Exhausted {
                    budget: tracked.budget.name.clone(),
                    group: group.to_string(),
                    unavailable: count.unavailable,
                    expected: count.expected,
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

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn devices_with_the_same_labels_share_one_set_and_the_last_one_out_frees_it() {
        let mut index = BudgetIndex::default();
        let site = |s: &str| BTreeMap::from([("site".to_string(), s.to_string())]);
        // Labels no other test uses: the pool is the process's.
        let (a, b) = (site("index-test-a"), site("index-test-b"));
        index.set_labels("ns", "d1", &a);
        index.set_labels("ns", "d2", &a);
        index.set_labels("ns", "d3", &b);
        let devices = &index.namespaces["ns"].devices;
        assert!(Arc::ptr_eq(&devices["d1"].labels, &devices["d2"].labels));
        let (set_a, set_b) =
            (Arc::downgrade(&devices["d1"].labels), Arc::downgrade(&devices["d3"].labels));
        index.set_labels("ns", "d3", &a);
        assert_eq!(set_b.strong_count(), 0, "no Device carries site=b any more");
        index.remove_device("ns", "d1");
        index.remove_device("ns", "d2");
        assert_eq!(set_a.strong_count(), 1, "d3 still carries site=a");
        index.remove_device("ns", "d3");
        assert_eq!(set_a.strong_count(), 0);
    }

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

    /// An index with `budgets` and the fleet, `offline` devices offline, the rest online.
    fn index_of(budgets: &[DeviceDisruptionBudget], offline: &[&str]) -> BudgetIndex {
        let mut index = BudgetIndex::default();
        for budget in budgets {
            index.apply(budget);
        }
        for (name, labels) in fleet() {
            index.set_labels("ns", &name, &labels);
            index.set_online("ns", &name, !offline.contains(&name.as_str()));
        }
        index
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
        let mut index = index_of(&[budget("per-line", Some("1"), None, Some("line"))], &[]);
        assert_eq!(index.check("ns", "d00"), Ok(()));
        index.hold("ns", "d00", holder("r0"));
        // Line 0 (d00, d04, …) is full; line 1 is not; d00 itself is disrupted already.
        let blocked = index.check("ns", "d04").expect_err("full");
        assert_eq!((blocked.group.as_str(), blocked.unavailable, blocked.expected), ("0", 1, 5));
        assert!(
            blocked.message().contains("per-line (group 0) has no room: 1 of 5"),
            "{}",
            blocked.message()
        );
        assert_eq!(index.check("ns", "d01"), Ok(()));
        assert_eq!(index.check("ns", "d00"), Ok(()));
        // A device the budget does not select is never held back.
        assert_eq!(index.check("ns", "other"), Ok(()));
        // Released: room again.
        index.release("ns", "d00", &holder("r0"));
        assert_eq!(index.check("ns", "d04"), Ok(()));
    }

    #[test]
    fn an_offline_device_counts_as_unavailable() {
        let mut index = index_of(&[budget("per-line", Some("1"), None, Some("line"))], &["d08"]);
        assert!(index.check("ns", "d04").is_err());
        let groups = index.evaluate("ns", "per-line");
        let line0 = &groups["0"];
        assert_eq!((line0.expected, line0.available, line0.allowed), (5, 4, 0));
        assert_eq!((groups["1"].allowed, groups.len()), (1, 4));
        // Back online: room again; the offline device itself may always be disrupted.
        index.set_online("ns", "d08", false);
        assert_eq!(index.check("ns", "d08"), Ok(()));
        index.set_online("ns", "d08", true);
        assert_eq!(index.check("ns", "d04"), Ok(()));
    }

    #[test]
    fn every_budget_that_selects_a_device_must_have_room() {
        let mut index = index_of(
            &[
                budget("per-line", Some("1"), None, Some("line")),
                budget("site", None, Some("19"), None),
            ],
            &[],
        );
        index.hold("ns", "d01", holder("r1"));
        let blocked = index.check("ns", "d00").expect_err("site full");
        assert_eq!(blocked.budget, "site");
        index.remove("ns", "site");
        assert_eq!(index.check("ns", "d00"), Ok(()));
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

    #[test]
    fn a_relabelled_device_moves_to_its_new_group() {
        let mut index = index_of(&[budget("per-line", Some("1"), None, Some("line"))], &[]);
        index.hold("ns", "d00", holder("r0"));
        assert!(index.check("ns", "d04").is_err(), "line 0 is full");
        // d00 moves to line 1: line 0 has room again, line 1 is full.
        let mut labels = fleet().remove(0).1;
        labels.insert("line".into(), "1".into());
        index.set_labels("ns", "d00", &labels);
        assert_eq!(index.check("ns", "d04"), Ok(()));
        assert!(index.check("ns", "d01").is_err());
        let groups = index.evaluate("ns", "per-line");
        assert_eq!((groups["0"].expected, groups["1"].expected), (4, 6));
        assert_eq!(groups["1"].disrupted, vec!["d00".to_string()]);
        index.remove_device("ns", "d00");
        assert_eq!(index.evaluate("ns", "per-line")["1"].expected, 5);
        assert_eq!(index.check("ns", "d01"), Ok(()), "a deleted device disrupts nothing");
    }

    /// One change to the index, as the watches and controllers make them.
    #[derive(Clone, Debug)]
    enum Change {
        Online(usize, bool),
        Line(usize, u8),
        Hold(usize, u8),
        Release(usize, u8),
        Delete(usize),
        Budget(Option<u8>),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0..8usize, any::<bool>()).prop_map(|(d, on)| Change::Online(d, on)),
            (0..8usize, 0..3u8).prop_map(|(d, l)| Change::Line(d, l)),
            (0..8usize, 0..2u8).prop_map(|(d, r)| Change::Hold(d, r)),
            (0..8usize, 0..2u8).prop_map(|(d, r)| Change::Release(d, r)),
            (0..8usize).prop_map(Change::Delete),
            proptest::option::of(0..3u8).prop_map(Change::Budget),
        ]
    }

    proptest! {
        /// The counts kept up to date event by event equal the counts of a budget applied
        /// afresh over the same devices and holds, whatever the order of the events.
        #[test]
        fn incremental_counts_equal_a_fresh_count(changes in proptest::collection::vec(change(), 0..60)) {
            let mut index = BudgetIndex::default();
            index.apply(&budget("per-line", Some("1"), None, Some("line")));
            for change in changes {
                let name = |d: usize| format!("d{d}");
                let labels = |line: u8| BTreeMap::from([
                    ("site".to_string(), "a".to_string()),
                    ("line".to_string(), line.to_string()),
                ]);
                match change {
                    Change::Online(d, on) => index.set_online("ns", &name(d), on),
                    Change::Line(d, l) => index.set_labels("ns", &name(d), &labels(l)),
                    Change::Hold(d, r) => index.hold("ns", &name(d), holder(&r.to_string())),
                    Change::Release(d, r) => index.release("ns", &name(d), &holder(&r.to_string())),
                    Change::Delete(d) => index.remove_device("ns", &name(d)),
                    Change::Budget(max) => {
                        let max = max.map(|m| m.to_string());
                        index.apply(&budget("per-line", max.as_deref().or(Some("1")), None, Some("line")));
                    }
                }
                let kept = index.evaluate("ns", "per-line");
                let mut fresh = BudgetIndex::default();
                let space = index.namespaces.get("ns").map(|s| (s.devices.iter().map(|(n, d)| (n.clone(), (*d.labels).clone(), d.online)).collect::<Vec<_>>(), s.held.clone())).unwrap_or_default();
                for (device, labels, online) in &space.0 {
                    fresh.set_labels("ns", device, labels);
                    fresh.set_online("ns", device, *online);
                }
                for (device, holders) in &space.1 {
                    for holder in holders {
                        fresh.hold("ns", device, holder.clone());
                    }
                }
                let spec = &index.budget("ns", "per-line").expect("budget").spec;
                let mut object = budget("per-line", None, None, None);
                object.spec = spec.clone();
                fresh.apply(&object);
                prop_assert_eq!(kept, fresh.evaluate("ns", "per-line"));
            }
        }
    }
}
