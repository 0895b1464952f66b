//! `lucid update`'s flags, runc's names, turned into the resources to change
//! (in linux.resources' JSON shape).

use std::path::PathBuf;

use anyhow::{bail, Context};

/// `update`'s flags (runc's names).
#[derive(Debug, Default, clap::Args)]
pub struct UpdateArgs {
    /// A JSON file of resources (linux.resources' format) to apply, `-` for
    /// stdin; cannot be combined with the other flags.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block I/O weight, 10 to 1000.
    #[arg(long = "blkio-weight", value_name = "N")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period (µs).
    #[arg(long = "cpu-period", value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (µs per period; -1 for none).
    #[arg(long = "cpu-quota", value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", value_name = "N")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period (µs).
    #[arg(long = "cpu-rt-period", value_name = "US")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime (µs per period).
    #[arg(long = "cpu-rt-runtime", value_name = "US", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs to run on (`0-2,4`).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a k/m/g suffix; -1 for none).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit).
    #[arg(
        long = "memory-reservation",
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (cgroup v1).
    #[arg(
        long = "kernel-memory",
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer limit (cgroup v1).
    #[arg(
        long = "kernel-memory-tcp",
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of processes (0 or less: no limit).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema", value_name = "SCHEMA")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema", value_name = "SCHEMA")]
    pub mem_bw_schema: Option<String>,
    /// The container ID.
    pub id: String,
}

/// A size as runc's update reads it (`units.RAMInBytes`): bytes, or with a
/// binary suffix (`k`, `m`, `g`, `t`, `p`, optionally followed by `b` or
/// `ib`); `-1` means no limit.
pub fn parse_size(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let unit = unit.trim().trim_end_matches("ib").trim_end_matches('b');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => bail!("{text:?} is not a size: use bytes or a k, m, g, t or p suffix"),
    };
    let value: f64 = number.parse().map_err(|_| {
        anyhow::anyhow!("{text:?} is not a size: use bytes or a k, m, g, t or p suffix")
    })?;
    Ok((value * (1u64 << shift) as f64) as i64)
}

/// The resources an `update` asks for, in linux.resources' JSON shape.
pub fn changes(args: &UpdateArgs) -> anyhow::Result<serde_json::Value> {
    use serde_json::{json, Map, Value};
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        bail!("--l3-cache-schema and --mem-bw-schema set Intel RDT, which this version of lucid does not support");
    }
    let mut memory = Map::new();
    let mut cpu = Map::new();
    let put = |map: &mut Map<String, Value>, key: &str, value: Value| {
        map.insert(key.to_owned(), value);
    };
    for (flag, key, value) in [
        ("--memory", "limit", &args.memory),
        (
            "--memory-reservation",
            "reservation",
            &args.memory_reservation,
        ),
        ("--memory-swap", "swap", &args.memory_swap),
        ("--kernel-memory", "kernel", &args.kernel_memory),
        ("--kernel-memory-tcp", "kernelTCP", &args.kernel_memory_tcp),
    ] {
        if let Some(v) = value {
            let bytes = parse_size(v).with_context(|| flag.to_owned())?;
            put(&mut memory, key, json!(bytes));
        }
    }
    if let Some(v) = args.cpu_share {
        put(&mut cpu, "shares", json!(v));
    }
    if let Some(v) = args.cpu_quota {
        put(&mut cpu, "quota", json!(v));
    }
    if let Some(v) = args.cpu_period {
        put(&mut cpu, "period", json!(v));
    }
    if let Some(v) = args.cpu_rt_runtime {
        put(&mut cpu, "realtimeRuntime", json!(v));
    }
    if let Some(v) = args.cpu_rt_period {
        put(&mut cpu, "realtimePeriod", json!(v));
    }
    if let Some(v) = &args.cpuset_cpus {
        put(&mut cpu, "cpus", json!(v));
    }
    if let Some(v) = &args.cpuset_mems {
        put(&mut cpu, "mems", json!(v));
    }
    let mut changes = Map::new();
    if !memory.is_empty() {
        changes.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        changes.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(v) = args.pids_limit {
        changes.insert("pids".into(), json!({ "limit": v }));
    }
    if let Some(v) = args.blkio_weight {
        changes.insert("blockIO".into(), json!({ "weight": v }));
    }
    let Some(file) = &args.resources else {
        if changes.is_empty() {
            bail!("nothing to update: give --resources FILE or a flag such as --memory");
        }
        return Ok(Value::Object(changes));
    };
    if !changes.is_empty() {
        bail!(
            "--resources cannot be combined with other update flags: put every change in the file"
        );
    }
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading resources from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    // Check the shape now, so a typo is named before anything changes.
    let _: oci_spec::runtime::LinuxResources = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| anyhow::anyhow!("{}: {} at {}", file.display(), e.inner(), e.path()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_like_runc() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("ten").is_err());
    }

    #[test]
    fn resources_file_and_flags_are_not_mixed() {
        let args = UpdateArgs {
            resources: Some(PathBuf::from("/dev/null")),
            memory: Some("1m".into()),
            id: "c1".into(),
            ..Default::default()
        };
        assert!(changes(&args)
            .unwrap_err()
            .to_string()
            .contains("cannot be combined"));
        let flags = UpdateArgs {
            memory: Some("1m".into()),
            pids_limit: Some(10),
            cpu_quota: Some(-1),
            id: "c1".into(),
            ..Default::default()
        };
        assert_eq!(
            changes(&flags).unwrap(),
            serde_json::json!({ "memory": { "limit": 1048576 }, "pids": { "limit": 10 }, "cpu": { "quota": -1 } })
        );
    }
}
