//! QoS class (`k8s:pkg/apis/core/helper/qos/qos.go GetPodQOS`): BestEffort
//! when no container requests or limits cpu or memory; Guaranteed when
//! every container limits both and the requests equal the limits; else
//! Burstable. Requests default to limits at load (manifest::defaults).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::state::all_containers;
use crate::quantity::Quantity;

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

pub fn qos_class(pod: &Pod) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for (_, c) in all_containers(pod) {
        let res = c.resources.clone().unwrap_or_default();
        let sum = |list: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                   into: &mut BTreeMap<&str, i128>| {
            let mut seen = 0;
            for r in QOS_RESOURCES {
                let q = list
                    .as_ref()
                    .and_then(|m| m.get(r))
                    .and_then(|q| Quantity::parse(&q.0).ok())
                    .filter(|q| !q.is_zero());
                if let Some(q) = q {
                    *into.entry(r).or_default() += q.nanos();
                    seen += 1;
                }
            }
            seen
        };
        sum(&res.requests, &mut requests);
        if sum(&res.limits, &mut limits) < QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: &[&str]) -> Pod {
        let containers: Vec<serde_json::Value> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({"name": format!("c{i}"), "image": "x",
                    "resources": serde_json::from_str::<serde_json::Value>(r).unwrap()})
            })
            .collect();
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}),
        )
        .unwrap()
    }

    #[test]
    fn the_three_classes() {
        assert_eq!(qos_class(&pod(&["{}"])), "BestEffort");
        let g = r#"{"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "0.5", "memory": "64Mi"}}"#;
        assert_eq!(qos_class(&pod(&[g, g])), "Guaranteed");
        assert_eq!(qos_class(&pod(&[g, "{}"])), "Burstable");
        let b = r#"{"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}"#;
        assert_eq!(qos_class(&pod(&[b])), "Burstable");
        assert_eq!(
            qos_class(&pod(&[r#"{"requests": {"memory": "1Mi"}}"#])),
            "Burstable"
        );
        // Zero requests count as none.
        assert_eq!(
            qos_class(&pod(&[r#"{"requests": {"cpu": "0"}}"#])),
            "BestEffort"
        );
    }
}
