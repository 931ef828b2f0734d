//! The in-memory object store: every resource of the registry, one global `resourceVersion`
//! counter as etcd gives, a history of changes for watches that resume from a version, and a
//! broadcast of each change as it happens.

mod object;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::discovery::{DISCOVERY, ResourceInfo};
use super::request::rfc3339;
use super::status::Status;
use object::{defaults, merge_update, metadata_mut, prepare_name, set_namespace, set_type_meta};

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    pub resource_version: u64,
    pub group: String,
    pub resource: String,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the change (for a delete: as it was, with the delete's version).
    pub object: Value,
    /// The object before a modification, so that a watch with a selector can turn a change
    /// into the `ADDED` or `DELETED` the apiserver sends when an object enters or leaves it.
    pub previous: Option<Value>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub enum WatchFrom {
    /// With the current objects, as synthetic `ADDED` events, then changes.
    Current,
    /// With the changes after this `resourceVersion`.
    After(u64),
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    resource_version: u64,
    /// (group, resource) -> (namespace, name) -> object
    objects: BTreeMap<Key, BTreeMap<Key, Value>>,
    history: Vec<Arc<Event>>,
}

#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let store = Self {
            inner: Mutex::new(Inner {
                resource_version: 1000,
                ..Inner::default()
            }),
            events: broadcast::channel(4096).0,
        };
        let namespaces = DISCOVERY
            .resource("", "v1", "namespaces")
            .expect("namespaces are in the captured discovery");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(&namespaces, "", json!({"metadata": {"name": name}}))
                .expect("a fresh store has no namespaces yet");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a failing test; go on with the data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn current_version(&self) -> u64 {
        self.lock().resource_version
    }

    pub fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<Value, Status> {
        let inner = self.lock();
        inner
            .objects
            .get(&key(info))
            .and_then(|objects| objects.get(&(namespace.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| Status::not_found(&info.resource, &info.group, name))
    }

    /// Objects of a resource in a namespace (`None`: all namespaces), in key order, with the
    /// store's current version.
    pub fn list(&self, info: &ResourceInfo, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&key(info))
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, object)| object.clone())
            .collect();
        (items, inner.resource_version)
    }

    pub fn create(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, Status> {
        let mut inner = self.lock();
        set_type_meta(info, &mut object)?;
        let name = prepare_name(info, &mut object)?;
        set_namespace(info, namespace, &mut object)?;
        if info.namespaced && !inner.namespace_exists(namespace) {
            return Err(Status::not_found("namespaces", "", namespace));
        }
        let k = (namespace.to_owned(), name.clone());
        if inner
            .objects
            .get(&key(info))
            .is_some_and(|o| o.contains_key(&k))
        {
            return Err(Status::already_exists(&info.resource, &info.group, &name));
        }
        let now = SystemTime::now();
        let metadata = metadata_mut(&mut object);
        metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        metadata.insert("creationTimestamp".into(), json!(rfc3339(now)));
        metadata.remove("deletionTimestamp");
        if object.get("spec").is_some() {
            metadata_mut(&mut object).insert("generation".into(), json!(1));
        }
        defaults(info, &name, &mut object, None, now);
        Ok(inner.commit(&self.events, info, namespace, object, EventType::Added))
    }

    /// Replaces an object (`PUT`). With `status_only`, only `.status` is taken from `object`;
    /// otherwise `.status` is kept from the stored object where the resource has a status
    /// subresource, as the apiserver does.
    pub fn update(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        mut object: Value,
        status_only: bool,
    ) -> Result<Value, Status> {
        let mut inner = self.lock();
        let current = inner
            .object(info, namespace, name)
            .ok_or_else(|| Status::not_found(&info.resource, &info.group, name))?
            .clone();
        set_type_meta(info, &mut object)?;
        match object["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            Some(_) => {
                return Err(Status::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            None => {
                metadata_mut(&mut object).insert("name".into(), json!(name));
            }
        }
        set_namespace(info, namespace, &mut object)?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(Status::conflict(&info.resource, &info.group, name));
        }
        let object = merge_update(info, &current, object, status_only);
        Ok(inner.commit(&self.events, info, namespace, object, EventType::Modified))
    }

    /// Changes an object with `patch`, which gets a copy of it (or `None` when it does not exist;
    /// then a returned object is created, as server-side apply does). Answers the object and
    /// whether it was created.
    pub fn patch(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        status_only: bool,
        patch: impl FnOnce(Option<Value>) -> Result<Value, Status>,
    ) -> Result<(Value, bool), Status> {
        let current = self.lock().object(info, namespace, name).cloned();
        let Some(current) = current else {
            let mut object = patch(None)?;
            if object["metadata"]["name"].as_str().is_none() {
                metadata_mut(&mut object).insert("name".into(), json!(name));
            }
            if object["metadata"]["name"].as_str() != Some(name) {
                return Err(Status::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            return self.create(info, namespace, object).map(|o| (o, true));
        };
        let patched = patch(Some(current.clone()))?;
        if patched["metadata"]["name"].as_str() != Some(name) {
            return Err(Status::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let mut inner = self.lock();
        let latest = inner
            .object(info, namespace, name)
            .ok_or_else(|| Status::not_found(&info.resource, &info.group, name))?;
        // A patch that names a version must match it; one that does not applies to the
        // version it read, and the lock makes read-modify-write atomic enough for tests.
        let wanted = patched["metadata"]["resourceVersion"].as_str();
        if latest["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
            || wanted.is_some_and(|rv| Some(rv) != latest["metadata"]["resourceVersion"].as_str())
        {
            return Err(Status::conflict(&info.resource, &info.group, name));
        }
        let mut patched = patched;
        set_type_meta(info, &mut patched)?;
        set_namespace(info, namespace, &mut patched)?;
        let object = merge_update(info, &current, patched, status_only);
        if object == current {
            // The apiserver does not write (or bump the version for) a no-op patch.
            return Ok((current, false));
        }
        Ok((
            inner.commit(&self.events, info, namespace, object, EventType::Modified),
            false,
        ))
    }

    /// Deletes an object at once (no graceful deletion, no finalizers) and answers it. Deleting
    /// a namespace deletes what is in it.
    pub fn delete(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Status> {
        let mut inner = self.lock();
        let deleted = inner.remove(&self.events, info, namespace, name)?;
        if info.group.is_empty() && info.resource == "namespaces" {
            let contents: Vec<(Key, String)> = inner
                .objects
                .iter()
                .flat_map(|(resource, objects)| {
                    objects
                        .keys()
                        .filter(|(ns, _)| ns == name)
                        .map(|(_, n)| (resource.clone(), n.clone()))
                })
                .collect();
            for ((group, resource), object_name) in contents {
                if let Some(info) = DISCOVERY.resource_any_version(&group, &resource) {
                    let _ = inner.remove(&self.events, &info, name, &object_name);
                }
            }
        }
        Ok(deleted)
    }

    /// Starts a watch: answers the events to send first and a receiver for the later ones. The
    /// receiver is taken under the same lock that every change is made under, so nothing falls
    /// in between.
    pub fn watch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let first = match from {
            WatchFrom::Current => inner
                .objects
                .get(&key(info))
                .into_iter()
                .flatten()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .map(|((ns, _), object)| {
                    Arc::new(Event {
                        resource_version: version_of(object),
                        group: info.group.clone(),
                        resource: info.resource.clone(),
                        namespace: ns.clone(),
                        kind: EventType::Added,
                        object: object.clone(),
                        previous: None,
                    })
                })
                .collect(),
            WatchFrom::After(version) => inner
                .history
                .iter()
                .filter(|e| e.resource_version > version && is_for(e, info, namespace))
                .cloned()
                .collect(),
        };
        (first, receiver)
    }
}

impl Inner {
    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".to_owned()))
            .is_some_and(|o| o.contains_key(&(String::new(), namespace.to_owned())))
    }

    fn object(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&key(info))?
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Gives the object the next version, stores it, records and broadcasts the change.
    fn commit(
        &mut self,
        events: &broadcast::Sender<Arc<Event>>,
        info: &ResourceInfo,
        namespace: &str,
        mut object: Value,
        kind: EventType,
    ) -> Value {
        self.resource_version += 1;
        let version = self.resource_version;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(version.to_string()));
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let previous = self
            .objects
            .entry(key(info))
            .or_default()
            .insert((namespace.to_owned(), name), object.clone());
        self.publish(events, info, namespace, kind, object.clone(), previous);
        object
    }

    fn remove(
        &mut self,
        events: &broadcast::Sender<Arc<Event>>,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Status> {
        let mut object = self
            .objects
            .get_mut(&key(info))
            .and_then(|o| o.remove(&(namespace.to_owned(), name.to_owned())))
            .ok_or_else(|| Status::not_found(&info.resource, &info.group, name))?;
        self.resource_version += 1;
        metadata_mut(&mut object).insert(
            "resourceVersion".into(),
            json!(self.resource_version.to_string()),
        );
        self.publish(
            events,
            info,
            namespace,
            EventType::Deleted,
            object.clone(),
            None,
        );
        Ok(object)
    }

    fn publish(
        &mut self,
        events: &broadcast::Sender<Arc<Event>>,
        info: &ResourceInfo,
        namespace: &str,
        kind: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let event = Arc::new(Event {
            resource_version: self.resource_version,
            group: info.group.clone(),
            resource: info.resource.clone(),
            namespace: namespace.to_owned(),
            kind,
            object,
            previous,
        });
        self.history.push(event.clone());
        // No receiver is fine: nobody watches.
        let _ = events.send(event);
    }
}

/// Whether a change concerns a watch on `info` in `namespace`.
pub fn is_for(event: &Event, info: &ResourceInfo, namespace: Option<&str>) -> bool {
    event.group == info.group
        && event.resource == info.resource
        && namespace.is_none_or(|n| n == event.namespace)
}

fn key(info: &ResourceInfo) -> Key {
    (info.group.clone(), info.resource.clone())
}

pub fn version_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Arc<ResourceInfo> {
        DISCOVERY.resource("", "v1", "pods").expect("pods")
    }

    #[test]
    fn create_get_conflict_and_versions() {
        let store = Store::new();
        let pod = store
            .create(&pods(), "default", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .expect("created");
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["status"]["phase"], "Running");
        assert!(pod["metadata"]["uid"].is_string());
        let again = store.create(&pods(), "default", json!({"metadata": {"name": "p"}}));
        assert_eq!(again.expect_err("exists").reason, "AlreadyExists");

        let mut stale = pod.clone();
        stale["metadata"]["labels"] = json!({"a": "b"});
        let updated = store
            .update(&pods(), "default", "p", stale.clone(), false)
            .expect("current version");
        assert!(version_of(&updated) > version_of(&pod));
        let conflict = store.update(&pods(), "default", "p", stale, false);
        assert_eq!(conflict.expect_err("stale").reason, "Conflict");
    }

    #[test]
    fn create_in_missing_namespace_is_not_found() {
        let store = Store::new();
        let err = store
            .create(&pods(), "nope", json!({"metadata": {"name": "p"}}))
            .expect_err("no namespace");
        assert_eq!(err.message, "namespaces \"nope\" not found");
    }

    #[test]
    fn watch_from_version_replays_later_changes_only() {
        let store = Store::new();
        let first = store
            .create(&pods(), "default", json!({"metadata": {"name": "a"}}))
            .expect("created");
        store
            .create(&pods(), "default", json!({"metadata": {"name": "b"}}))
            .expect("created");
        let (events, _) = store.watch(
            &pods(),
            Some("default"),
            WatchFrom::After(version_of(&first)),
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].object["metadata"]["name"], "b");
        let (current, _) = store.watch(&pods(), None, WatchFrom::Current);
        assert_eq!(current.len(), 2);
    }

    #[test]
    fn deleting_a_namespace_deletes_its_objects() {
        let store = Store::new();
        let namespaces = DISCOVERY
            .resource("", "v1", "namespaces")
            .expect("namespaces");
        store
            .create(&namespaces, "", json!({"metadata": {"name": "team"}}))
            .expect("created");
        store
            .create(&pods(), "team", json!({"metadata": {"name": "a"}}))
            .expect("created");
        store.delete(&namespaces, "", "team").expect("deleted");
        assert_eq!(store.list(&pods(), Some("team")).0.len(), 0);
    }
}
