//! Resource usage of the node and its containers, sampled in the background,
//! for the Metrics API (`kubectl top`, [`crate::api`]'s `metrics.k8s.io`).
//!
//! A CPU number worth showing is a rate, and a rate needs two cumulative
//! readings. Every `--metric-resolution` the sampler reads each running
//! container's cumulative CPU time and working set (the runtime's
//! `ListContainerStats`, or its cgroup when that call fails: [`cgroup`]) and
//! the host's (`/proc`, [`host`]), and keeps the
//! reading before it, so an answer is computed from memory at once:
//! `(cpu_last - cpu_previous) / (t_last - t_previous)`, the interval being
//! the answer's `window`. A container seen once has no rate yet and is left
//! out, as metrics-server leaves it out.
//!
//! The runtime's own `usage_nano_cores` is not used: containerd 1.6/1.7
//! computes it against the previous call of *any* client (the kubelet,
//! `crictl`, this agent), so its window is unknown and it is 0 on a first call.

pub mod cgroup;
pub mod host;
pub mod quantity;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::inventory::{ContainerState, Inventory};

/// One cumulative reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read, in Unix nanoseconds.
    pub at: i64,
    /// CPU time used since the container (or the host) started, nanoseconds.
    pub cpu_nanos: u64,
    /// Memory in use now: the working set, bytes.
    pub memory_bytes: u64,
}

/// Usage over one window: what the Metrics API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The end of the window (the last reading), Unix nanoseconds.
    pub timestamp: i64,
    pub window: Duration,
    /// The average CPU rate over the window, in billionths of a CPU.
    pub cpu_nanocores: u64,
    /// The working set at the last reading.
    pub memory_bytes: u64,
}

/// The usage between two readings of the same container, or `None` when
/// they make no rate: no time between them, or a counter that went back
/// (the readings are not of one container life).
pub fn rate(previous: Sample, last: Sample) -> Option<Usage> {
    let elapsed = u64::try_from(last.at.checked_sub(previous.at)?)
        .ok()
        .filter(|&ns| ns > 0)?;
    let used = last.cpu_nanos.checked_sub(previous.cpu_nanos)?;
    // used ns of CPU per elapsed ns = CPUs; times 1e9 = nanocores.
    let nanocores = u128::from(used) * 1_000_000_000 / u128::from(elapsed);
    Some(Usage {
        timestamp: last.at,
        window: Duration::from_nanos(elapsed),
        cpu_nanocores: u64::try_from(nanocores).unwrap_or(u64::MAX),
        memory_bytes: last.memory_bytes,
    })
}

/// The last two readings of one container or of the host.
#[derive(Debug, Clone, Copy)]
struct Series {
    previous: Option<Sample>,
    last: Sample,
}

impl Series {
    fn new(sample: Sample) -> Self {
        Self {
            previous: None,
            last: sample,
        }
    }

    /// Adds a reading; one no newer than the last (a runtime that caches
    /// its stats) changes nothing.
    fn push(&mut self, sample: Sample) {
        if sample.at > self.last.at {
            self.previous = Some(self.last);
            self.last = sample;
        }
    }

    fn usage(&self) -> Option<Usage> {
        rate(self.previous?, self.last)
    }
}

#[derive(Default)]
struct Readings {
    /// By container ID; containers gone from the runtime are dropped.
    containers: HashMap<String, Series>,
    host: Option<Series>,
}

/// The sampler and what it has read.
pub struct Sampler {
    /// The runtime to ask, and the running containers to read from their
    /// cgroups when it fails.
    inventory: Arc<Inventory>,
    proc_root: PathBuf,
    readings: Mutex<Readings>,
}

impl Sampler {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self {
            proc_root: inventory.proc_root().path().to_path_buf(),
            inventory,
            readings: Mutex::default(),
        }
    }

    /// The usage of container `id` over the last window, if it has two readings.
    pub fn container(&self, id: &str) -> Option<Usage> {
        self.lock().containers.get(id)?.usage()
    }

    /// The host's usage over the last window, if it has two readings.
    pub fn host(&self) -> Option<Usage> {
        self.lock().host?.usage()
    }

    /// The host's size.
    pub fn capacity(&self) -> Result<host::Capacity, host::HostError> {
        host::capacity(&self.proc_root)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readings> {
        // The readings stay consistent even if a holder panicked.
        self.readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads every running container and the host once.
    pub async fn sample(&self) {
        let containers = match self.inventory.cri().list_container_stats().await {
            Ok(stats) => Some(stats.iter().filter_map(container_sample).collect()),
            Err(err) => {
                tracing::debug!(error = %crate::error_chain(&err), "no container stats from the runtime; reading cgroups");
                self.cgroup_samples().await
            }
        };
        let proc_root = self.proc_root.clone();
        let host = tokio::task::spawn_blocking(move || host::usage(&proc_root))
            .await
            .ok()
            .and_then(|read| {
                read.map_err(|err| tracing::debug!(error = %crate::error_chain(&err), "no host usage this round"))
                    .ok()
            })
            .map(|(cpu_nanos, memory_bytes)| Sample {
                at: now_nanos(),
                cpu_nanos,
                memory_bytes,
            });
        self.record(containers, host);
    }

    /// Every running container of the last inventory, read from its cgroup.
    async fn cgroup_samples(&self) -> Option<Vec<(String, Sample)>> {
        let snapshot = self.inventory.cached();
        let running: Vec<(String, u32)> = snapshot
            .pods
            .iter()
            .flat_map(|pod| &pod.containers)
            .filter(|c| c.state == ContainerState::Running)
            .filter_map(|c| Some((c.id.clone(), c.process.as_ref()?.pid)))
            .collect();
        let proc_root = self.proc_root.clone();
        tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .filter_map(|(id, pid)| {
                    let (cpu_nanos, memory_bytes) = cgroup::reading(&proc_root, pid)?;
                    let at = now_nanos();
                    Some((
                        id,
                        Sample {
                            at,
                            cpu_nanos,
                            memory_bytes,
                        },
                    ))
                })
                .collect()
        })
        .await
        .ok()
    }

    /// Adds one round of readings; `None`: that source failed this round and
    /// keeps what it had.
    fn record(&self, containers: Option<Vec<(String, Sample)>>, host: Option<Sample>) {
        let mut readings = self.lock();
        if let Some(containers) = containers {
            let mut next = HashMap::with_capacity(containers.len());
            for (id, sample) in containers {
                let series = match readings.containers.remove(&id) {
                    Some(mut series) => {
                        series.push(sample);
                        series
                    }
                    None => Series::new(sample),
                };
                next.insert(id, series);
            }
            readings.containers = next;
        }
        if let Some(sample) = host {
            match &mut readings.host {
                Some(series) => series.push(sample),
                None => readings.host = Some(Series::new(sample)),
            }
        }
    }

    /// Samples now and then every `interval` until `cancel` fires.
    pub async fn keep_sampling(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => self.sample().await,
            }
        }
    }
}

/// A container's reading out of the runtime's stats; `None` without CPU
/// numbers (a container starting or stopping).
fn container_sample(stats: &k8s_cri::v1::ContainerStats) -> Option<(String, Sample)> {
    let id = stats.attributes.as_ref()?.id.clone();
    let cpu = stats.cpu.as_ref()?;
    let cpu_nanos = cpu.usage_core_nano_seconds.as_ref()?.value;
    let memory_bytes = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    (cpu.timestamp > 0).then_some((
        id,
        Sample {
            at: cpu.timestamp,
            cpu_nanos,
            memory_bytes,
        },
    ))
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, cpu_ms: u64, memory_bytes: u64) -> Sample {
        Sample {
            at: at_ms * 1_000_000,
            cpu_nanos: cpu_ms * 1_000_000,
            memory_bytes,
        }
    }

    #[test]
    fn a_rate_is_cpu_time_over_wall_time() {
        // 250 ms of CPU in 10 s: 2.5 % of one CPU, 25 millicores.
        let usage = rate(sample(0, 1000, 1), sample(10_000, 1250, 4096)).unwrap();
        assert_eq!(usage.cpu_nanocores, 25_000_000);
        assert_eq!(usage.window, Duration::from_secs(10));
        assert_eq!(usage.timestamp, 10_000_000_000);
        assert_eq!(usage.memory_bytes, 4096);
        // Two CPUs busy for the whole window.
        let busy = rate(sample(0, 0, 0), sample(10_034, 20_068, 0)).unwrap();
        assert_eq!(busy.cpu_nanocores, 2_000_000_000);
        assert_eq!(busy.window, Duration::from_millis(10_034));
    }

    #[test]
    fn readings_that_make_no_rate_give_none() {
        assert_eq!(rate(sample(5, 1, 0), sample(5, 2, 0)), None);
        assert_eq!(rate(sample(6, 1, 0), sample(5, 2, 0)), None);
        assert_eq!(rate(sample(0, 2, 0), sample(5, 1, 0)), None);
    }

    #[test]
    fn a_series_keeps_the_last_two_readings() {
        let mut series = Series::new(sample(0, 0, 0));
        assert_eq!(series.usage(), None);
        series.push(sample(1000, 100, 0));
        assert_eq!(series.usage().unwrap().cpu_nanocores, 100_000_000);
        // A cached reading (same time) does not shorten the window to nothing.
        series.push(sample(1000, 100, 0));
        assert_eq!(series.usage().unwrap().cpu_nanocores, 100_000_000);
        series.push(sample(2000, 600, 0));
        assert_eq!(series.usage().unwrap().cpu_nanocores, 500_000_000);
    }

    #[tokio::test]
    async fn containers_gone_from_the_runtime_are_forgotten() {
        let cri = crate::cri::CriClient::new(
            std::path::Path::new("/nonexistent"),
            Duration::from_secs(1),
        );
        let runtime = crate::cri::RuntimeVersion {
            name: "test".into(),
            version: "0".into(),
            api_version: "v1".into(),
        };
        let inventory = Inventory::new(cri, runtime, crate::process::ProcRoot::new("/proc"));
        let sampler = Sampler::new(Arc::new(inventory));
        let round = |t: i64, ids: &[&str]| {
            Some(
                ids.iter()
                    .map(|id| (id.to_string(), sample(t, t as u64 / 2, 7)))
                    .collect(),
            )
        };
        sampler.record(round(0, &["a", "b"]), None);
        sampler.record(round(1000, &["a", "b"]), None);
        assert_eq!(sampler.container("a").unwrap().cpu_nanocores, 500_000_000);
        // A failed round keeps what was read.
        sampler.record(None, None);
        assert!(sampler.container("b").is_some());
        sampler.record(round(2000, &["a"]), None);
        assert!(sampler.container("a").is_some());
        assert_eq!(sampler.container("b"), None);
    }
}
