// One minimal program per attach type, to tell which ones the running kernel accepts.
// See README.md.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

__u64 hits = 0;

SEC("tp_btf/sys_exit")
int BPF_PROG(tp_btf_sys_exit) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("raw_tp/sys_exit")
int raw_tp_sys_exit(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("tp/raw_syscalls/sys_exit")
int tp_sys_exit(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("iter/task")
int iter_task(struct bpf_iter__task *ctx) { return 0; }

SEC("fentry/do_exit")
int BPF_PROG(fentry_do_exit, long code) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("fexit/x64_sys_call")
int BPF_PROG(fexit_x64_sys_call, struct pt_regs *regs, unsigned int nr, long ret)
{
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(fmod_ret_file_open, struct file *f) { return 0; }

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *f) { return 0; }

// Attached to tp_btf_sys_exit by the loader: a trampoline on a BPF program, no ftrace.
SEC("fentry/tp_btf_sys_exit")
int BPF_PROG(fentry_bpf_prog) { return 0; }
