//! Devices a configuration's rollout admitted in this process and whose status does not
//! record it yet. No I/O; a single writer (the configuration controller), read by the Device
//! controller. Lost on restart on purpose: what matters is recorded in `Device.status`.

use std::collections::{HashMap, HashSet};

/// Admitted devices by (namespace, configuration), for one firmware version each.
#[derive(Debug, Default)]
pub struct Admissions {
    by_configuration: HashMap<(String, String), (String, HashSet<String>)>,
}

impl Admissions {
    /// Records that `device` may get `version` from `configuration`.
    pub fn admit(&mut self, namespace: &str, configuration: &str, version: &str, device: &str) {
        let key = (namespace.to_string(), configuration.to_string());
        let entry = self.by_configuration.entry(key).or_default();
        if entry.0 != version {
            // A new target: admissions for the old one mean nothing any more.
            *entry = (version.to_string(), HashSet::new());
        }
        entry.1.insert(device.to_string());
    }

    /// Whether `device` was admitted to `version` of `configuration`.
    pub fn admitted(
        &self,
        namespace: &str,
        configuration: &str,
        version: &str,
        device: &str,
    ) -> bool {
        self.by_configuration
            .get(&(namespace.to_string(), configuration.to_string()))
            .is_some_and(|(v, devices)| v == version && devices.contains(device))
    }

    /// Forgets `device` once its status records the admission.
    pub fn recorded(&mut self, namespace: &str, configuration: &str, device: &str) {
        if let Some((_, devices)) =
            self.by_configuration.get_mut(&(namespace.to_string(), configuration.to_string()))
        {
            devices.remove(device);
        }
    }

    /// Forgets a deleted configuration.
    pub fn forget(&mut self, namespace: &str, configuration: &str) {
        self.by_configuration.remove(&(namespace.to_string(), configuration.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_are_per_version_and_end_when_recorded_or_replaced() {
        let mut a = Admissions::default();
        a.admit("ns", "fw", "2.0", "d1");
        assert!(a.admitted("ns", "fw", "2.0", "d1"));
        assert!(!a.admitted("ns", "fw", "3.0", "d1"), "another version");
        assert!(!a.admitted("other", "fw", "2.0", "d1"), "another namespace");
        a.admit("ns", "fw", "3.0", "d2");
        assert!(!a.admitted("ns", "fw", "2.0", "d1"), "a new target drops the old admissions");
        a.recorded("ns", "fw", "d2");
        assert!(!a.admitted("ns", "fw", "3.0", "d2"));
        a.admit("ns", "fw", "3.0", "d3");
        a.forget("ns", "fw");
        assert!(!a.admitted("ns", "fw", "3.0", "d3"));
    }
}
