//! The ResourceManager's table of registered TaskManagers (Flink's
//! `taskExecutors` map in ResourceManager, with its heartbeat manager's view): who is
//! registered, on which connection, with which slots, and when it was last heard from. A
//! TaskManager is lost when its RPC connection closes (at once) or when it has not sent a
//! heartbeat for the heartbeat timeout (a hung process with its socket open).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::remote_task_executor::RemoteTaskExecutor;
use super::rpc::{
    Hardware, RegistrationAccepted, RegistrationRefused, SlotReport, TaskManagerRegistration,
    UnknownRegistration,
};

/// A registered TaskManager.
#[derive(Debug, Clone)]
pub struct RegisteredTaskManager {
    pub resource_id: String,
    pub registration: u64,
    pub data_address: String,
    pub metrics_address: Option<String>,
    /// The tenant it is reserved for; `None`: shared by every tenant.
    pub tenant: Option<String>,
    pub slots: SlotReport,
    pub hardware: Hardware,
    pub last_heartbeat: Instant,
    /// The RPC connection it registered on.
    connection: u64,
    /// Its process's instance number.
    instance: u64,
    /// How job masters reach it.
    pub gateway: Arc<RemoteTaskExecutor>,
}

/// See the module docs.
pub struct TaskManagerRegistry {
    task_managers: Mutex<BTreeMap<String, RegisteredTaskManager>>,
    next_registration: AtomicU64,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    /// The JobManager's term ended: nobody registers any more.
    closed: std::sync::atomic::AtomicBool,
}

impl TaskManagerRegistry {
    pub fn new(heartbeat_interval: Duration, heartbeat_timeout: Duration) -> Self {
        TaskManagerRegistry {
            task_managers: Mutex::new(BTreeMap::new()),
            next_registration: AtomicU64::new(1),
            heartbeat_interval,
            heartbeat_timeout,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RegisteredTaskManager>> {
        self.task_managers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a TaskManager may register: another live process under the same resource id
    /// may not; the same process registering again (on this connection or a new one) may, and
    /// replaces its registration.
    pub fn check(&self, registration: &TaskManagerRegistration) -> Result<(), RegistrationRefused> {
        check_in(&self.table(), registration)
    }

    /// Registers a TaskManager that called on `connection` (see [`check`](Self::check)); the
    /// registration it replaces, whose tasks are lost.
    pub fn register(
        &self,
        registration: TaskManagerRegistration,
        connection: u64,
        gateway: Arc<RemoteTaskExecutor>,
    ) -> Result<(RegistrationAccepted, Option<RegisteredTaskManager>), RegistrationRefused> {
        let mut table = self.table();
        if self.closed.load(Ordering::SeqCst) {
            return Err(RegistrationRefused::NotLeader {
                asked: registration.leader_token,
                mine: registration.leader_token,
                leading: false,
            });
        }
        check_in(&table, &registration)?;
        let replaced = table.remove(&registration.resource_id);
        if let Some(old) = &replaced {
            old.gateway.mark_lost();
        }
        let id = self.next_registration.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "Registering TaskManager `{}` ({} slots, data port {}) under registration {id}",
            registration.resource_id, registration.slots, registration.data_address
        );
        table.insert(
            registration.resource_id.clone(),
            RegisteredTaskManager {
                slots: SlotReport {
                    total: registration.slots,
                    free: registration.slots,
                },
                resource_id: registration.resource_id,
                registration: id,
                data_address: registration.data_address,
                metrics_address: registration.metrics_address,
                tenant: registration.tenant,
                hardware: registration.hardware,
                last_heartbeat: Instant::now(),
                connection,
                instance: registration.instance,
                gateway,
            },
        );
        Ok((
            RegistrationAccepted {
                registration: id,
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            },
            replaced,
        ))
    }

    /// A heartbeat of registration `registration`.
    pub fn heartbeat(
        &self,
        resource_id: &str,
        registration: u64,
        slots: SlotReport,
    ) -> Result<(), UnknownRegistration> {
        let mut table = self.table();
        match table.get_mut(resource_id) {
            Some(tm) if tm.registration == registration => {
                tm.last_heartbeat = Instant::now();
                tm.slots = slots;
                *tm.gateway.slots.lock().unwrap_or_else(|p| p.into_inner()) =
                    (slots.total, slots.free);
                Ok(())
            }
            _ => Err(UnknownRegistration {
                resource_id: resource_id.to_string(),
                registration,
            }),
        }
    }

    /// The RPC connection `connection` closed: every TaskManager registered on it is lost.
    /// Their ids and why.
    pub fn connection_closed(&self, connection: u64) -> Vec<(String, String)> {
        self.remove_lost(
            |tm| tm.connection == connection,
            || "its connection closed".into(),
        )
    }

    /// Forgets TaskManager `id` if its gateway was declared lost (its RPC connection broke);
    /// its next heartbeat is refused, and it registers again.
    pub fn forget_lost(&self, id: &str) {
        let mut table = self.table();
        if table.get(id).is_some_and(|tm| tm.gateway.is_lost()) {
            table.remove(id);
        }
    }

    /// Removes TaskManagers not heard from for the heartbeat timeout; their ids and why.
    pub fn expire(&self) -> Vec<(String, String)> {
        let timeout = self.heartbeat_timeout;
        self.remove_lost(
            |tm| tm.last_heartbeat.elapsed() > timeout,
            || format!("no heartbeat for {timeout:?}"),
        )
    }

    /// Removes every TaskManager (its JobManager stopped leading); their ids and why.
    /// Closes the registry (none registers after) and removes every TaskManager; their ids
    /// and why.
    pub fn remove_all(&self, why: &str) -> Vec<(String, String)> {
        self.closed.store(true, Ordering::SeqCst);
        self.remove_lost(|_| true, || why.to_string())
    }

    /// Removes the TaskManagers `lost` picks, marking their gateways lost; their ids and why.
    fn remove_lost(
        &self,
        lost: impl Fn(&RegisteredTaskManager) -> bool,
        why: impl Fn() -> String,
    ) -> Vec<(String, String)> {
        let mut table = self.table();
        let ids: Vec<String> = table
            .values()
            .filter(|tm| lost(tm))
            .map(|tm| tm.resource_id.clone())
            .collect();
        ids.into_iter()
            .map(|id| {
                if let Some(tm) = table.remove(&id) {
                    tm.gateway.mark_lost();
                }
                let why = why();
                eprintln!("TaskManager `{id}` is lost: {why}");
                (id, why)
            })
            .collect()
    }

    /// The registered TaskManagers, by resource id.
    pub fn task_managers(&self) -> Vec<RegisteredTaskManager> {
        self.table().values().cloned().collect()
    }
}

fn check_in(
    table: &BTreeMap<String, RegisteredTaskManager>,
    registration: &TaskManagerRegistration,
) -> Result<(), RegistrationRefused> {
    if registration.slots == 0 {
        return Err(RegistrationRefused::NoSlots);
    }
    match table.get(&registration.resource_id) {
        Some(existing) if existing.instance != registration.instance => {
            Err(RegistrationRefused::DuplicateResourceId {
                resource_id: registration.resource_id.clone(),
                data_address: existing.data_address.clone(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str) -> TaskManagerRegistration {
        TaskManagerRegistration {
            resource_id: id.into(),
            data_address: format!("{id}:1"),
            slots: 2,
            hardware: Hardware {
                cpu_cores: 2,
                network_buffers: 16,
                segment_bytes: 1024,
            },
            rpc_address: format!("{id}:2"),
            metrics_address: None,
            tenant: None,
            instance: 7,
            leader_token: 0,
        }
    }

    #[test]
    fn a_task_manager_without_slots_is_refused() {
        let registry =
            TaskManagerRegistry::new(Duration::from_millis(10), Duration::from_millis(50));
        let mut none = registration("tm-0");
        none.slots = 0;
        assert_eq!(registry.check(&none), Err(RegistrationRefused::NoSlots));
        assert_eq!(registry.check(&registration("tm-1")), Ok(()));
        assert!(registry.expire().is_empty());
        assert!(
            registry
                .heartbeat("tm-1", 1, SlotReport { total: 2, free: 2 })
                .is_err()
        );
    }
}
