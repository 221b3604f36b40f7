//! Where the machine's CPU went during a phase: all of it (`/proc/stat`)
//! and each group of processes (`/proc/<pid>/stat`): the broker, the
//! database, the services under test, the load generator, and the rest.
//! Everything shares two cores here, so a latency figure means little
//! without saying whether the machine was saturated, and by whom.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::proc_stat::cpu_ticks;

/// Cores used over a phase, in all and by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSplit {
    /// Cores the machine has.
    pub cores: usize,
    /// Cores busy on average (anything but idle and I/O wait), whoever
    /// used them.
    pub busy_cores: f64,
    /// Cores used by each group, in [`Group`] order; `other` is what the
    /// machine used beyond the named groups (other processes, the kernel's
    /// interrupts, processes that ended during the phase).
    pub groups: Vec<(String, f64)>,
}

/// The processes a phase's CPU is counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    RabbitMq,
    PostgreSql,
    /// `idv-ingest`, `idv-worker`, and `bench_handler` (the actix
    /// ceiling ingest is measured against).
    Services,
    /// The other bench binaries and `wrk`.
    LoadGenerator,
}

impl Group {
    const ALL: [Group; 4] = [
        Group::RabbitMq,
        Group::PostgreSql,
        Group::Services,
        Group::LoadGenerator,
    ];

    fn label(self) -> &'static str {
        match self {
            Group::RabbitMq => "RabbitMQ",
            Group::PostgreSql => "PostgreSQL",
            Group::Services => "idv services",
            Group::LoadGenerator => "load generator",
        }
    }

    /// The group of a process by its command name (`comm`, at most 15
    /// bytes), if it is one of them.
    pub fn of(comm: &str) -> Option<Self> {
        if comm.starts_with("beam") || comm == "erl_child_setup" || comm == "inet_gethost" {
            Some(Group::RabbitMq)
        } else if comm.starts_with("postgres") || comm == "postmaster" {
            Some(Group::PostgreSql)
        } else if comm.starts_with("idv-") || comm == "bench_handler" {
            Some(Group::Services)
        } else if comm.starts_with("bench_") || comm == "wrk" || comm.starts_with("hostile_") {
            Some(Group::LoadGenerator)
        } else {
            None
        }
    }
}

/// The machine's and each process's CPU ticks at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    /// Busy and total ticks of all cores (`/proc/stat`'s `cpu` line).
    busy: u64,
    total: u64,
    /// The `cpuN` lines of `/proc/stat`: the cores `total` covers
    /// (whatever this process's affinity or quota).
    cores: usize,
    /// Per process: its group, its ticks, its start time (a pid reused
    /// by a new process is a new process).
    processes: HashMap<u32, (Option<Group>, u64, u64)>,
}

impl CpuSnapshot {
    /// Reads `/proc` now. A process that ends while it is read is left out.
    pub fn take() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map_err(|error| anyhow::anyhow!("cannot read /proc/stat: {error}"))?;
        let (busy, total) = machine_ticks(&stat)
            .ok_or_else(|| anyhow::anyhow!("/proc/stat has no readable cpu line"))?;
        let cores = core_lines(&stat).max(1);
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((comm, ticks, started)) = process_ticks(&text) {
                processes.insert(pid, (Group::of(comm), ticks, started));
            }
        }
        Ok(Self {
            busy,
            total,
            cores,
            processes,
        })
    }

    /// What was used between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSplit {
        let cores = self.cores;
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let to_cores = |ticks: u64| ticks as f64 / total * cores as f64;
        let mut by_group: HashMap<Group, u64> = HashMap::new();
        for (pid, (group, ticks, started)) in &self.processes {
            let Some(group) = group else { continue };
            let before = match earlier.processes.get(pid) {
                Some((_, ticks, earlier_start)) if earlier_start == started => *ticks,
                _ => 0, // started during the phase
            };
            *by_group.entry(*group).or_default() += ticks.saturating_sub(before);
        }
        let busy_cores = to_cores(self.busy.saturating_sub(earlier.busy));
        let mut groups: Vec<(String, f64)> = Group::ALL
            .iter()
            .map(|group| {
                let used = by_group.get(group).copied().unwrap_or(0);
                (group.label().to_owned(), to_cores(used))
            })
            .collect();
        let named: f64 = groups.iter().map(|(_, cores)| cores).sum();
        groups.push(("other".to_owned(), (busy_cores - named).max(0.0)));
        CpuSplit {
            cores,
            busy_cores,
            groups,
        }
    }
}

impl CpuSplit {
    /// `1.96 of 2 cores: RabbitMQ 0.81, PostgreSQL 0.52, …`.
    pub fn summary(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        format!(
            "{:.2} of {} cores busy: {}",
            self.busy_cores,
            self.cores,
            groups.join(", ")
        )
    }
}

/// Busy and total ticks from the text of `/proc/stat`: the first line,
/// `cpu user nice system idle iowait irq softirq steal …`.
pub fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

/// How many cores `/proc/stat` counts (its `cpu0`, `cpu1`, … lines).
pub fn core_lines(stat: &str) -> usize {
    stat.lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count()
}

/// The command name, utime + stime, and start time (field 22) from the
/// text of `/proc/<pid>/stat`.
fn process_ticks(stat: &str) -> Option<(&str, u64, u64)> {
    let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let ticks = cpu_ticks(stat)?;
    // After the name: field 3 is the first, so field 22 is the 20th.
    let started = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    Some((comm, ticks, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_gives_busy_and_total_ticks() {
        let stat = "cpu  100 5 50 800 20 3 2 1 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some((161, 981)));
        assert_eq!(core_lines(stat), 1);
        assert_eq!(core_lines("cpu  1\ncpu0 1\ncpu1 1\nintr 5\n"), 2);
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
        assert_eq!(machine_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn a_process_line_gives_its_name_ticks_and_start() {
        let stat = "4242 (idv (x) worker) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1500 250 0 0 20 0 6 0 98765 1000 200";
        assert_eq!(process_ticks(stat), Some(("idv (x) worker", 1750, 98765)));
    }

    #[test]
    fn processes_are_grouped_by_name() {
        assert_eq!(Group::of("beam.smp"), Some(Group::RabbitMq));
        assert_eq!(Group::of("postgres"), Some(Group::PostgreSql));
        assert_eq!(Group::of("idv-worker"), Some(Group::Services));
        assert_eq!(Group::of("bench_handler"), Some(Group::Services));
        assert_eq!(Group::of("bench_worker"), Some(Group::LoadGenerator));
        assert_eq!(Group::of("cargo"), None);
    }

    #[test]
    fn a_busy_loop_here_shows_in_the_load_generator_or_other() {
        let before = CpuSnapshot::take().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let split = CpuSnapshot::take().unwrap().since(&before);
        // This test binary is not a named group: its spin counts as other.
        let other = split.groups.last().map_or(0.0, |(_, cores)| *cores);
        assert!(split.busy_cores > 0.0 && other > 0.0, "{}", split.summary());
        assert!(split.busy_cores <= split.cores as f64 + 0.01);
    }
}
