// Prices each variant of hook_costs.bpf.c on a getppid loop, inside and outside a watched
// cgroup: interleaved rounds, medians of the measuring thread's CPU time. See README.md.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static const char *variants[] = {
	"none", "empty_exit", "empty_enter", "empty_raw_exit", "helper_cgid", "btf_cgid",
	"ancestor_hash_count", "helper_hash_count", "btf_hash_count", "helper_table_count",
	"btf_table_count", "btf_table_percpu", "cgrp_storage_count", "enter_table_count",
};
#define NV (sizeof(variants) / sizeof(variants[0]))
#define MAX_ROUNDS 64

static double getppid_ns(const char *cgroup, long calls)
{
	int fds[2];
	if (pipe(fds))
		exit(1);
	pid_t pid = fork();
	if (pid == 0) {
		if (cgroup) {
			char path[512];
			snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
			int fd = open(path, O_WRONLY);
			if (fd < 0 || write(fd, "0", 1) != 1)
				_exit(1);
			close(fd);
		}
		struct timespec a, b;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
		for (long i = 0; i < calls; i++)
			syscall(SYS_getppid);
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
		double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
		if (write(fds[1], &ns, sizeof ns) != sizeof ns)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	double ns = 0;
	if (read(fds[0], &ns, sizeof ns) != sizeof ns) {
		fprintf(stderr, "child failed\n");
		exit(1);
	}
	close(fds[0]);
	waitpid(pid, NULL, 0);
	return ns;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof *v, cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 11;
	long calls = argc > 2 ? atol(argv[2]) : 300000;
	const char *cgroup = argc > 3 ? argv[3] : "/sys/fs/cgroup/unified/lucid-hook-costs";
	if (rounds < 1 || rounds > MAX_ROUNDS)
		return fprintf(stderr, "rounds: 1..%d\n", MAX_ROUNDS), 2;
	if (mkdir(cgroup, 0755) && errno != EEXIST)
		return perror(cgroup), 1;
	struct stat st;
	if (stat(cgroup, &st))
		return perror(cgroup), 1;
	__u64 id = st.st_ino;
	int level = 0;
	for (const char *p = cgroup + strlen("/sys/fs/cgroup/unified"); *p; p++)
		level += *p == '/';

	libbpf_set_print(NULL);
	struct bpf_object *obj = bpf_object__open_file("hook_costs.bpf.o", NULL);
	if (!obj)
		return perror("hook_costs.bpf.o"), 1;
	struct bpf_map *rodata = bpf_object__find_map_by_name(obj, ".rodata");
	struct { __u64 id; __u32 level; __u32 pad; } ro = { id, level, 0 };
	bpf_map__set_initial_value(rodata, &ro, sizeof ro);
	if (bpf_object__load(obj))
		return perror("loading"), 1;
	__u64 one = 1;
	__u32 home = (id * 0x9e3779b97f4a7c15ULL) >> 52;
	int cgroup_fd = open(cgroup, O_RDONLY);
	if (bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "watched_hash"), &id, &one, 0) ||
	    bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "watched_table"), &home, &id, 0) ||
	    bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "watched_storage"), &cgroup_fd, &one, 0))
		return perror("filling maps"), 1;

	static double in[NV][MAX_ROUNDS], out[NV][MAX_ROUNDS];
	for (int r = 0; r < rounds; r++) {
		for (size_t v = 0; v < NV; v++) {
			struct bpf_link *link = NULL;
			if (v) {
				link = bpf_program__attach(bpf_object__find_program_by_name(obj, variants[v]));
				if (!link)
					return perror(variants[v]), 1;
			}
			in[v][r] = getppid_ns(cgroup, calls);
			out[v][r] = getppid_ns(NULL, calls);
			bpf_link__destroy(link);
		}
	}
	double base_in = median(in[0], rounds), base_out = median(out[0], rounds);
	printf("%ld getppid per measurement, %d interleaved rounds, medians of thread CPU time\n",
	       calls, rounds);
	printf("%-20s %9s %6s %9s %6s\n", "variant", "inside", "ratio", "outside", "ratio");
	for (size_t v = 0; v < NV; v++) {
		double i = median(in[v], rounds), o = median(out[v], rounds);
		printf("%-20s %9.1f %5.2fx %9.1f %5.2fx\n", variants[v], i, i / base_in, o, o / base_out);
	}
	rmdir(cgroup);
	return 0;
}
