// Variants of "count this syscall if the task is in a watched cgroup", each a separate
// program, to price every ingredient of lucid's syscall_exit on one kernel. See README.md.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define TABLE_SIZE 4096
#define SLOTS 512

// The watched cgroup (the harness's), as a hash key, an array-table entry and a cgroup
// storage; the counters of "slot 3".
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 256); __type(key, __u64); __type(value, __u64); } watched_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, TABLE_SIZE); __type(key, __u32); __type(value, __u64); } watched_table SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_CGRP_STORAGE); __uint(map_flags, BPF_F_NO_PREALLOC); __type(key, int); __type(value, __u64); } watched_storage SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, SLOTS * 256); __type(key, __u32); __type(value, __u64[2]); } counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, SLOTS * 256); __type(key, __u32); __type(value, __u64[2]); } counts_percpu SEC(".maps");

const volatile __u64 watched_id = 0;
const volatile __u32 watched_level = 1;

static __always_inline void count_atomic(struct pt_regs *regs, long ret)
{
	__u32 i = (regs->orig_ax & (SLOTS - 1)) + SLOTS * 3;
	__u64 *c = bpf_map_lookup_elem(&counts, &i);
	if (!c)
		return;
	__sync_fetch_and_add(&c[0], 1);
	if (ret < 0 && ret >= -4095)
		__sync_fetch_and_add(&c[1], 1);
}

static __always_inline void count_percpu(struct pt_regs *regs, long ret)
{
	__u32 i = (regs->orig_ax & (SLOTS - 1)) + SLOTS * 3;
	__u64 *c = bpf_map_lookup_elem(&counts_percpu, &i);
	if (!c)
		return;
	c[0]++;
	if (ret < 0 && ret >= -4095)
		c[1]++;
}

static __always_inline __u64 btf_cgroup_id(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->cgroups->dfl_cgrp->kn->id;
}

static __always_inline int in_table(__u64 id)
{
	__u32 k = (id * 0x9e3779b97f4a7c15ULL) >> 52;
	__u64 *v = bpf_map_lookup_elem(&watched_table, &k);
	return v && *v == id;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(empty_exit) { return 0; }

SEC("tp_btf/sys_enter")
int BPF_PROG(empty_enter) { return 0; }

SEC("raw_tp/sys_exit")
int empty_raw_exit(void *ctx) { return 0; }

SEC("tp_btf/sys_exit")
int BPF_PROG(helper_cgid, struct pt_regs *regs, long ret)
{
	return bpf_get_current_cgroup_id() == watched_id;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_cgid, struct pt_regs *regs, long ret)
{
	return btf_cgroup_id() == watched_id;
}

// lucid's layout version 1: ancestor id by helper, hash map, atomic counts.
SEC("tp_btf/sys_exit")
int BPF_PROG(ancestor_hash_count, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_ancestor_cgroup_id(watched_level);
	if (!bpf_map_lookup_elem(&watched_hash, &id))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(helper_hash_count, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&watched_hash, &id))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_hash_count, struct pt_regs *regs, long ret)
{
	__u64 id = btf_cgroup_id();
	if (!bpf_map_lookup_elem(&watched_hash, &id))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(helper_table_count, struct pt_regs *regs, long ret)
{
	if (!in_table(bpf_get_current_cgroup_id()))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

// lucid's layout version 2.
SEC("tp_btf/sys_exit")
int BPF_PROG(btf_table_count, struct pt_regs *regs, long ret)
{
	if (!in_table(btf_cgroup_id()))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_table_percpu, struct pt_regs *regs, long ret)
{
	if (!in_table(btf_cgroup_id()))
		return 0;
	count_percpu(regs, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(cgrp_storage_count, struct pt_regs *regs, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (!bpf_cgrp_storage_get(&watched_storage, t->cgroups->dfl_cgrp, 0, 0))
		return 0;
	count_atomic(regs, ret);
	return 0;
}

// Counting on entry: no return value, so no error counts.
SEC("tp_btf/sys_enter")
int BPF_PROG(enter_table_count, struct pt_regs *regs, long id)
{
	if (!in_table(btf_cgroup_id()))
		return 0;
	count_atomic(regs, 0);
	return 0;
}
