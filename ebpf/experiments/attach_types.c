// Loads and attaches each program of attach_types.bpf.c alone and prints what the kernel
// answered, with the verifier log. See README.md.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static char log_buf[1 << 16];

int main(void)
{
	const char *names[] = {
		"tp_btf_sys_exit", "raw_tp_sys_exit", "tp_sys_exit", "iter_task", "fentry_do_exit",
		"fexit_x64_sys_call", "fmod_ret_file_open", "lsm_file_open", "fentry_bpf_prog",
	};
	int target_fd = -1;
	libbpf_set_print(NULL);
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		struct bpf_object *obj = bpf_object__open_file("attach_types.bpf.o", NULL);
		if (!obj)
			return perror("attach_types.bpf.o"), 1;
		struct bpf_program *p;
		bpf_object__for_each_program(p, obj)
			bpf_program__set_autoload(p, strcmp(bpf_program__name(p), names[i]) == 0);
		p = bpf_object__find_program_by_name(obj, names[i]);
		if (strcmp(names[i], "fentry_bpf_prog") == 0) {
			if (target_fd < 0) {
				printf("%-20s skipped: tp_btf_sys_exit did not load\n", names[i]);
				continue;
			}
			bpf_program__set_attach_target(p, target_fd, "tp_btf_sys_exit");
		}
		log_buf[0] = 0;
		bpf_program__set_log_buf(p, log_buf, sizeof log_buf);
		bpf_program__set_log_level(p, 1);
		int err = bpf_object__load(obj);
		printf("%-20s load: %s", names[i], err ? strerror(-err) : "ok");
		if (!err) {
			if (strcmp(names[i], "tp_btf_sys_exit") == 0)
				target_fd = dup(bpf_program__fd(p));
			struct bpf_link *link = bpf_program__attach(p);
			printf(", attach: %s", link ? "ok" : strerror(errno));
			bpf_link__destroy(link);
		}
		if (err)
			printf("; verifier log: %s", log_buf[0] ? "\n" : "(empty)");
		printf("%s\n", err ? log_buf : "");
		bpf_object__close(obj);
	}
	return 0;
}
