//! The writes of RBAC reconcile: create, update or delete one binding (ClusterRoleBinding or
//! RoleBinding) until the cluster holds the one wanted, touching only this destination's.

use std::fmt;

use k8s_openapi::api::rbac::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::desired::{DesiredBinding, owned_by};
use super::{ReconcileError, Target};

fn code_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Bindings of both kinds.

pub(super) trait Binding:
    Resource<DynamicType = ()>
    + Clone
    + fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn api(client: &kube::Client, namespace: Option<&str>) -> Api<Self>;
    fn role_ref(&self) -> &k8s::RoleRef;
    fn subjects(&self) -> &[k8s::Subject];
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>);
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self;
}

impl Binding for k8s::ClusterRoleBinding {
    fn api(client: &kube::Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client.clone())
    }
    fn role_ref(&self) -> &k8s::RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[k8s::Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>) {
        self.subjects = Some(subjects);
    }
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self {
        Self {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

impl Binding for k8s::RoleBinding {
    fn api(client: &kube::Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    fn role_ref(&self) -> &k8s::RoleRef {
        &self.role_ref
    }
    fn subjects(&self) -> &[k8s::Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn set_subjects(&mut self, subjects: Vec<k8s::Subject>) {
        self.subjects = Some(subjects);
    }
    fn build(metadata: ObjectMeta, role_ref: k8s::RoleRef, subjects: Vec<k8s::Subject>) -> Self {
        Self {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

fn target_of<K: Binding>(object: &K) -> Target {
    Target {
        kind: if object.meta().namespace.is_some() {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        },
        namespace: object.meta().namespace.clone(),
        name: object.name_any(),
    }
}

fn key_of<K: Binding>(namespace: Option<&str>, name: &str) -> ObjectRef<K> {
    let key = ObjectRef::new(name);
    match namespace {
        Some(ns) => key.within(ns),
        None => key,
    }
}

/// Writes the bindings of one destination.
pub(super) struct Writer {
    client: kube::Client,
    destination: String,
}

impl Writer {
    /// A writer of `destination`'s bindings through `client`.
    pub(super) fn new(client: kube::Client, destination: String) -> Self {
        Self {
            client,
            destination,
        }
    }

    /// Makes the cluster hold `want`.
    pub(super) async fn ensure<K: Binding>(
        &self,
        store: &Store<K>,
        want: &DesiredBinding,
    ) -> Result<(), ReconcileError> {
        match store.get(&key_of::<K>(want.namespace.as_deref(), &want.name)) {
            Some(current) if owned_by(current.meta(), &self.destination) => {
                self.converge(&*current, want).await
            }
            // Labelled as Infra's, but another destination's.
            Some(_) => Err(ReconcileError::NotOwned(want.describe())),
            None => self.create::<K>(want).await,
        }
    }

    async fn create<K: Binding>(&self, want: &DesiredBinding) -> Result<(), ReconcileError> {
        let api = K::api(&self.client, want.namespace.as_deref());
        let object = K::build(
            want.metadata(&self.destination),
            want.role_ref(),
            want.subjects(),
        );
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(destination = %self.destination, binding = %want.describe(), "RBAC reconcile: created");
                Ok(())
            }
            Err(error) if code_of(&error) == Some(409) => {
                // There already (a replica made it, or the watch is behind): read and converge.
                match api.get_opt(&want.name).await {
                    Ok(Some(current)) if owned_by(current.meta(), &self.destination) => {
                        self.converge(&current, want).await
                    }
                    Ok(Some(_)) => Err(ReconcileError::NotOwned(want.describe())),
                    Ok(None) => Err(ReconcileError::Create(want.describe(), error)),
                    Err(read) => Err(ReconcileError::Read(want.describe(), read)),
                }
            }
            Err(error) => Err(ReconcileError::Create(want.describe(), error)),
        }
    }

    /// Brings an owned binding to `want`: nothing when it already is; new subjects by a replace
    /// (re-read once on a 409); a new `roleRef` (immutable) by delete and create.
    async fn converge<K: Binding>(
        &self,
        current: &K,
        want: &DesiredBinding,
    ) -> Result<(), ReconcileError> {
        let subjects = want.subjects();
        if *current.role_ref() == want.role_ref() && current.subjects() == subjects.as_slice() {
            return Ok(());
        }
        let api = K::api(&self.client, want.namespace.as_deref());
        if *current.role_ref() != want.role_ref() {
            self.remove(current).await?;
            let object = K::build(want.metadata(&self.destination), want.role_ref(), subjects);
            return api
                .create(&PostParams::default(), &object)
                .await
                .map(drop)
                .map_err(|e| ReconcileError::Create(want.describe(), e));
        }
        let mut next = current.clone();
        next.set_subjects(subjects.clone());
        match api.replace(&want.name, &PostParams::default(), &next).await {
            Ok(_) => {
                tracing::info!(destination = %self.destination, binding = %want.describe(), "RBAC reconcile: updated");
                Ok(())
            }
            Err(error) if code_of(&error) == Some(409) => {
                let fresh = match api.get_opt(&want.name).await {
                    Ok(Some(fresh)) => fresh,
                    Ok(None) => return Err(ReconcileError::Update(want.describe(), error)),
                    Err(read) => return Err(ReconcileError::Read(want.describe(), read)),
                };
                if !owned_by(fresh.meta(), &self.destination) {
                    return Err(ReconcileError::NotOwned(want.describe()));
                }
                if *fresh.role_ref() == want.role_ref() && fresh.subjects() == subjects.as_slice() {
                    return Ok(());
                }
                let mut next = fresh;
                next.set_subjects(subjects);
                api.replace(&want.name, &PostParams::default(), &next)
                    .await
                    .map(drop)
                    .map_err(|e| ReconcileError::Update(want.describe(), e))
            }
            Err(error) => Err(ReconcileError::Update(want.describe(), error)),
        }
    }

    /// Deletes an owned binding, on the condition that it is still the object seen (uid and
    /// `resourceVersion`); when it changed since, it is read again and deleted only if still
    /// this destination's.
    pub(super) async fn remove<K: Binding>(&self, current: &K) -> Result<(), ReconcileError> {
        let target = target_of(current);
        let api = K::api(&self.client, current.meta().namespace.as_deref());
        let name = current.name_any();
        let params = |meta: &ObjectMeta| DeleteParams {
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params(current.meta())).await {
            Ok(_) => {}
            Err(error) if code_of(&error) == Some(404) => return Ok(()),
            Err(error) if code_of(&error) == Some(409) => {
                let fresh = match api.get_opt(&name).await {
                    Ok(Some(fresh)) if owned_by(fresh.meta(), &self.destination) => fresh,
                    Ok(_) => return Ok(()),
                    Err(read) => return Err(ReconcileError::Read(target, read)),
                };
                match api.delete(&name, &params(fresh.meta())).await {
                    Ok(_) => {}
                    Err(error) if code_of(&error) == Some(404) => return Ok(()),
                    Err(error) => return Err(ReconcileError::Delete(target, error)),
                }
            }
            Err(error) => return Err(ReconcileError::Delete(target, error)),
        }
        tracing::info!(destination = %self.destination, binding = %target, "RBAC reconcile: deleted");
        Ok(())
    }
}
