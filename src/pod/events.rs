//! Events as kubelet records them (`k8s:pkg/kubelet/events/event.go`):
//! reason, message, `involvedObject.fieldPath`, and identical events
//! aggregated into one with a count and first/last timestamps. Kept per pod,
//! bounded, and broadcast to whoever watches (`nodelet run`, `events -w`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event as ApiEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::broadcast;

use super::status::time;

/// Events kept per pod (oldest dropped first).
pub const MAX_EVENTS_PER_POD: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The pod an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pod: PodRef,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    /// `spec.containers{app}`; empty for pod-level events.
    pub field_path: String,
    pub count: u32,
    pub first: SystemTime,
    pub last: SystemTime,
    /// Distinguishes events (for the API object name).
    pub seq: u64,
}

impl Event {
    /// The `v1` Event object kubectl would show.
    pub fn to_api(&self, node: &str) -> ApiEvent {
        ApiEvent {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:016x}", self.pod.name, self.seq)),
                namespace: Some(self.pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(self.pod.name.clone()),
                namespace: Some(self.pod.namespace.clone()),
                uid: Some(self.pod.uid.clone()),
                field_path: (!self.field_path.is_empty()).then(|| self.field_path.clone()),
                ..Default::default()
            },
            type_: Some(self.type_.as_str().into()),
            reason: Some(self.reason.clone()),
            message: Some(self.message.clone()),
            count: Some(i32::try_from(self.count).unwrap_or(i32::MAX)),
            first_timestamp: Some(time(self.first)),
            last_timestamp: Some(time(self.last)),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.into()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.into()),
            ..Default::default()
        }
    }
}

/// Every pod's events.
pub struct Recorder {
    pods: Mutex<HashMap<String, VecDeque<Event>>>,
    seq: std::sync::atomic::AtomicU64,
    tx: broadcast::Sender<Event>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            pods: Mutex::new(HashMap::new()),
            seq: std::sync::atomic::AtomicU64::new(1),
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Recorder {
    /// Records an event at `now`: an identical one (same type, reason,
    /// message and field path) is bumped instead of repeated.
    pub fn record(
        &self,
        pod: &PodRef,
        type_: EventType,
        reason: &str,
        field_path: &str,
        message: String,
        now: SystemTime,
    ) {
        let mut pods = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = pods.entry(pod.uid.clone()).or_default();
        let same = list.iter_mut().find(|e| {
            e.type_ == type_
                && e.reason == reason
                && e.message == message
                && e.field_path == field_path
        });
        let ev = match same {
            Some(e) => {
                e.count += 1;
                e.last = now;
                e.clone()
            }
            None => {
                let e = Event {
                    pod: pod.clone(),
                    type_,
                    reason: reason.into(),
                    message,
                    field_path: field_path.into(),
                    count: 1,
                    first: now,
                    last: now,
                    seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
                if list.len() == MAX_EVENTS_PER_POD {
                    list.pop_front();
                }
                list.push_back(e.clone());
                e
            }
        };
        tracing::debug!(pod = %pod.name, reason, field_path, message = %ev.message, "event");
        // Nobody listening is fine.
        let _ = self.tx.send(ev);
    }

    /// A pod's events, oldest first.
    pub fn for_pod(&self, uid: &str) -> Vec<Event> {
        let pods = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pods.get(uid)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every event, ordered by last occurrence.
    pub fn all(&self) -> Vec<Event> {
        let pods = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<Event> = pods.values().flatten().cloned().collect();
        v.sort_by_key(|e| (e.last, e.seq));
        v
    }

    pub fn forget(&self, uid: &str) {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn identical_events_aggregate_with_count_and_timestamps() {
        let r = Recorder::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let f = "spec.containers{app}";
        r.record(&pod(), EventType::Normal, "Pulled", f, "x".into(), t0);
        r.record(&pod(), EventType::Normal, "Created", f, "y".into(), t0);
        r.record(
            &pod(),
            EventType::Normal,
            "Pulled",
            f,
            "x".into(),
            t0 + Duration::from_secs(5),
        );
        let ev = r.for_pod("u1");
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].count, ev[0].first, ev[0].last),
            (2, t0, t0 + Duration::from_secs(5))
        );
        let api = ev[0].to_api("node1");
        assert_eq!(api.involved_object.field_path.as_deref(), Some(f));
        assert_eq!(api.count, Some(2));
        assert_eq!(
            api.source.and_then(|s| s.component).as_deref(),
            Some("kubelet")
        );
    }

    #[test]
    fn a_pod_keeps_a_bounded_number_of_events() {
        let r = Recorder::default();
        for i in 0..(MAX_EVENTS_PER_POD + 10) {
            r.record(
                &pod(),
                EventType::Warning,
                "BackOff",
                "",
                format!("m{i}"),
                SystemTime::now(),
            );
        }
        let ev = r.for_pod("u1");
        assert_eq!(ev.len(), MAX_EVENTS_PER_POD);
        assert_eq!(ev[0].message, "m10");
    }
}
