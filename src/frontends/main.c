/* main.c -- the ckptfs command: parse options, open the source, mount, serve.
 * Everything that can fail on bad input fails before the mount exists, so a refused source never leaves a half-mounted directory. */
#define FUSE_USE_VERSION 312
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptfs/blas.h"
#include "ckptfs/catalog.h"
#include "ckptfs/cli.h"
#include "ckptfs/fuse_ops.h"
#include "ckptfs/guard.h"
#include "ckptfs/mountinfo.h"
#include "ckptfs/options.h"
#include "ckptfs/views.h"
#include "ckptfs/vtree.h"

struct ckptfs_opts {
	char *source;
	struct option_strings views;
	unsigned readahead_kb;
	unsigned prefetch_mb;
	unsigned read_gap; /* UINT_MAX: by the source's file system */
	unsigned direct_min;
	int no_splice;
	int show_help;
	int show_version;
};

enum { KEY_HELP, KEY_VERSION, KEY_FSTAB_ONLY, KEY_LORA };

#define CKPTFS_OPT(t, p, v) { t, offsetof(struct ckptfs_opts, p), v }

static const struct fuse_opt ckptfs_opt_spec[] = {
	CKPTFS_OPT("readahead=%u", readahead_kb, 0),
	CKPTFS_OPT("prefetch=%u", prefetch_mb, 0),
	CKPTFS_OPT("read_gap=%u", read_gap, 0),
	CKPTFS_OPT("direct_min=%u", direct_min, 0),
	CKPTFS_OPT("no_splice", no_splice, 1),
	CKPTFS_OPT("layout=%s", views.layout, 0),
	CKPTFS_OPT("dtype=%s", views.dtype, 0),
	CKPTFS_OPT("shard_size=%s", views.shard_size, 0),
	CKPTFS_OPT("per_layer=%s", views.per_layer, 0),
	CKPTFS_OPT("tp=%s", views.tp, 0),
	CKPTFS_OPT("revision=%s", views.revision, 0),
	CKPTFS_OPT("config=%s", views.config, 0),
	CKPTFS_OPT("head_dim=%s", views.head_dim, 0),
	CKPTFS_OPT("cache=%s", views.cache, 0),
	CKPTFS_OPT("cache_dir=%s", views.cache_dir, 0),
	CKPTFS_OPT("cache_size=%s", views.cache_size, 0),
	CKPTFS_OPT("mem_cache=%s", views.mem_cache, 0),
	CKPTFS_OPT("cache_level=%s", views.cache_level, 0),
	CKPTFS_OPT("cache_policy=%s", views.cache_policy, 0),
	CKPTFS_OPT("cache_chunk=%s", views.cache_chunk, 0),
	CKPTFS_OPT("cache_shared", views.cache_shared, 1),
	CKPTFS_OPT("lora_scale=%s", views.lora_scale, 0),
	FUSE_OPT_KEY("lora=", KEY_LORA),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	/* Options that only mean something to mount(8) and fstab. */
	FUSE_OPT_KEY("noauto", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("auto", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("user", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("users", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("nouser", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("_netdev", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("nofail", KEY_FSTAB_ONLY),
	FUSE_OPT_KEY("ro", KEY_FSTAB_ONLY),
	FUSE_OPT_END
};

static void usage(const char *prog)
{
	printf("usage: %s [options] SOURCE MOUNTPOINT\n\n"
	       "Mount the model checkpoint in directory SOURCE (HuggingFace safetensors:\n"
	       "model.safetensors, or model.safetensors.index.json and its shards) read-only\n"
	       "at MOUNTPOINT, with these views computed on read:\n"
	       "    README     what this mount shows\n"
	       "    hf/        HuggingFace layout (the source files, passed through)\n"
	       "    native/    the native fused layout, computed on read\n"
	       "    per-layer/ one safetensors file per block, and an index\n"
	       "    tp-N/rank-K/  tensor-parallel shard K of N (the N the heads allow)\n"
	       "    pp-N/stage-K/ pipeline stage K of N\n"
	       "    .ckptfs/stats bytes served and read, as JSON\n"
	       "    tensors/   one NAME.npy per tensor (BF16 and F8 widened to float32)\n"
	       "    VIEW@DTYPE/  any view cast to fp32, fp16 or bf16 (e.g. hf@bf16/)\n"
	       "    adapter/   with -o lora=, the adapter's files (every other view is merged)\n\n"
	       "general options:\n"
	       "    -h, --help             print this help and exit\n"
	       "    -V, --version          print the version and exit\n"
	       "    -f                     stay in the foreground\n"
	       "    -d, -o debug           print every FUSE request (implies -f)\n"
	       "    -s                     serve requests on one thread\n"
	       "    -o OPT[,OPT...]        mount options\n\n"
	       "ckptfs options:\n"
	       "    -o readahead=KIB       kernel readahead for the mount in KiB (default 1024;\n"
	       "                           0 keeps the kernel's default)\n"
	       "    -o prefetch=MIB        bound of the tensor-aware read-ahead of source\n"
	       "                           bytes per open file (default 64; 0 for none)\n"
	       "    -o read_gap=BYTES      source pieces closer than this are read (and read\n"
	       "                           ahead) as one request (default 4095: only the pages\n"
	       "                           pieces touch; a rotating disk may prefer 65536)\n"
	       "    -o direct_min=BYTES    on a network file system, strided pieces at least\n"
	       "                           this large (up to 64 KiB) not in the page cache are\n"
	       "                           read with O_DIRECT, their own bytes, not their pages\n"
	       "                           (default 4096; 0 for none)\n"
	       "    -o no_splice           copy file bytes through the daemon instead of\n"
	       "                           splicing them from the source\n"
	       "    -o layout=NAME|FILE    native layout: a built-in name (llama, phi3, gpt2)\n"
	       "                           or a layout JSON file (default: by architecture)\n"
	       "    -o dtype=fp32|fp16|bf16  cast every view (VIEW@DTYPE/ casts one view)\n"
	       "    -o shard_size=SIZE     split generated safetensors files above SIZE bytes\n"
	       "                           (suffixes K, M, G, KiB, MiB, GiB; default 5G)\n"
	       "    -o per_layer=hf|native names in per-layer/ (default hf)\n"
	       "    -o tp=native|hf        names in tp-N/ and pp-N/ (default native)\n"
	       "    -o revision=REV        snapshot of a hub repository source (default refs/main)\n"
	       "    -o config=FILE         the model's config.json, used instead of the source's\n"
	       "                           (a DCP step directory usually has none)\n"
	       "    -o head_dim=N          without a config.json: the attention head width, so\n"
	       "                           the heads follow from q's and k's rows (the rest of\n"
	       "                           the config is derived from the tensor shapes)\n"
	       "    -o cache=on|off        keep computed chunks (default on)\n"
	       "    -o cache_dir=DIR       disk cache directory (default $XDG_CACHE_HOME/ckptfs\n"
	       "                           or ~/.cache/ckptfs; 'none' for memory only)\n"
	       "    -o cache_size=SIZE     disk cache bound (default 10GiB)\n"
	       "    -o mem_cache=SIZE      memory cache bound (default 128MiB, 0 for none)\n"
	       "    -o cache_level=N       zstd level of disk entries (default 1)\n"
	       "    -o cache_policy=auto|always  store a chunk on disk only when recomputing\n"
	       "                           it is slower than reading it back (auto), or always\n"
	       "    -o cache_chunk=SIZE    bytes computed and cached as one piece: a power of\n"
	       "                           two from 64KiB to 16MiB (default 1MiB)\n"
	       "    -o cache_shared        use a cache_dir others may write: trust only entries\n"
	       "                           signed with your key (default: refuse such a dir)\n"
	       "    -o lora=DIR            merge the PEFT LoRA adapter in DIR (adapter_config.json,\n"
	       "                           adapter_model.safetensors or .bin) into every view;\n"
	       "                           its files appear in adapter/; repeat to stack adapters\n"
	       "                           in order\n"
	       "    -o lora_scale=S        use S as every LoRA scale (default lora_alpha/r, or\n"
	       "                           lora_alpha/sqrt(r) with use_rslora)\n\n"
	       "FUSE options:\n",
	       prog);
	fuse_lowlevel_help();
	printf("\n");
	cli_usage(stdout);
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct ckptfs_opts *o = data;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!o->source) {
			o->source = strdup(arg);
			return 0;
		}
		return 1; /* the mount point: left for fuse_parse_cmdline */
	case FUSE_OPT_KEY_OPT:
		return strncmp(arg, "x-", 2) == 0 ? 0 : 1; /* x-systemd.* and friends are fstab's */
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_FSTAB_ONLY:
		return 0;
	case KEY_LORA: /* repeated: the adapters stack in order */
		if (options_add_lora(&o->views, arg + strlen("lora=")) < 0) {
			fprintf(stderr, "ckptfs: -o %s: not a directory name\n", arg);
			return -1;
		}
		return 0;
	}
	return 1;
}

/* Refuse a source inside the mount point: the mount would hide it from itself. */
static int check_paths(const char *source, const char *mountpoint)
{
	char s[PATH_MAX], m[PATH_MAX];
	if (!realpath(source, s) || !realpath(mountpoint, m))
		return 0; /* the catalog and the mount report these errors with context */
	size_t ml = strlen(m);
	if (strncmp(s, m, ml) == 0 && (s[ml] == '\0' || s[ml] == '/' || ml == 1)) {
		fprintf(stderr, "ckptfs: %s: the source is inside the mount point %s\n", source, mountpoint);
		return -1;
	}
	return 0;
}

/* The largest pipe libfuse's splice can count on. It grows its pipe per
 * reply with F_SETPIPE_SZ, which is capped by fs.pipe-max-size (1 MiB by
 * default, too small for a 1 MiB read with its header) unless the process has
 * CAP_SYS_RESOURCE, as a root mount has: so try what a whole 1 MiB reply of
 * many pieces needs, and fall back to the cap. */
static size_t pipe_capacity(void)
{
	int p[2];
	if (pipe(p) != 0)
		return 0;
	int got = fcntl(p[0], F_SETPIPE_SZ, 2 << 20);
	if (got < 0) {
		unsigned long max = 1 << 20;
		FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
		if (f) {
			if (fscanf(f, "%lu", &max) != 1)
				max = 1 << 20;
			fclose(f);
		}
		got = fcntl(p[0], F_SETPIPE_SZ, max > INT_MAX ? INT_MAX : (int)max);
	}
	close(p[0]);
	close(p[1]);
	return got > 0 ? (size_t)got : 0;
}

int main(int argc, char *argv[])
{
	blas_select_core(argv);
	if (argc > 1 && cli_is_command(argv[1]))
		return cli_main(argc, argv);

	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct ckptfs_opts opts = { .readahead_kb = 1024, .prefetch_mb = 64, .read_gap = UINT_MAX,
				    .direct_min = 4096 };
	struct fuse_cmdline_opts cl = { 0 };
	struct catalog *cat = NULL;
	struct vtree tree = { 0 };
	struct fuse_session *se = NULL;
	struct cache *cache = NULL;
	int ret = 1;

	if (fuse_opt_parse(&args, &opts, ckptfs_opt_spec, opt_proc) != 0)
		goto out_args;
	if (opts.show_version) {
		printf("ckptfs %s\n", PACKAGE_VERSION);
		printf("FUSE library version %s\n", fuse_pkgversion());
		char blas[128];
		printf("BLAS: %s\n", blas_describe(blas, sizeof(blas)));
		ret = 0;
		goto out_args;
	}
	if (opts.show_help) {
		usage(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (fuse_parse_cmdline(&args, &cl) != 0)
		goto out_args;
	if (!opts.source || !cl.mountpoint) {
		fprintf(stderr, "ckptfs: usage: %s [options] SOURCE MOUNTPOINT (see --help)\n", argv[0]);
		goto out_args;
	}
	if (check_paths(opts.source, cl.mountpoint) < 0)
		goto out_args;
	/* Before the first access to a source mapping (the headers, below). */
	if (guard_install() < 0)
		goto out_args;

	struct view_opts vopts;
	struct ckpt_err err = { 0 };
	if (options_to_views(&vopts, &opts.views, &err) < 0 ||
	    options_open_views(opts.source, &vopts, &cat, &tree, NULL, &err) < 0) {
		fprintf(stderr, "ckptfs: %s\n", err.code ? err.msg : "out of memory");
		goto out_args;
	}
	for (size_t i = 0; i < cat->nwarnings; i++)
		fprintf(stderr, "ckptfs: warning: %s (not shown)\n", cat->warnings[i]);
	if (options_open_cache(&opts.views, &cache, &err) < 0) {
		fprintf(stderr, "ckptfs: %s\n", err.msg);
		goto out_tree;
	}

	struct ckptfs_fs fs = {
		.cat = cat,
		.tree = &tree,
		.uid = getuid(),
		.gid = getgid(),
		.splice = !opts.no_splice,
		.pipe_size = pipe_capacity(),
		.readahead_kb = opts.readahead_kb,
		.prefetch_conf = { .window_max = (uint64_t)opts.prefetch_mb << 20, .cache = cache },
		.cache = cache,
	};
	readstats_init(&fs.stats);
	prefetch_conf_for(&fs.prefetch_conf, cat->nfiles ? cat->files[0].fd : -1);
	if (opts.read_gap != UINT_MAX)
		fs.prefetch_conf.gap = opts.read_gap;
	/* The read-ahead knows what each view needs; the kernel's own, on the
	 * source files, would read on past a tensor into bytes no view asked
	 * for (another rank's rows: up to read_ahead_kb, 8 MiB on a local disk,
	 * at every jump). Advice still reads ahead. Not on a network file
	 * system: there the kernel's window is small (128 KiB on sshfs) and its
	 * requests in flight beside the advice measured faster. Each file by
	 * its own device: shards may sit on a local disk and a network mount. */
	for (size_t i = 0; i < cat->nfiles; i++) {
		if (cat->files[i].fd < 0)
			continue;
		if (prefetch_conf_add_file(&fs.prefetch_conf, &cat->files[i])) {
			if (fs.prefetch_conf.window_max)
				(void)posix_fadvise(cat->files[i].fd, 0, 0, POSIX_FADV_RANDOM);
		} else if (opts.direct_min && src_file_open_direct(&cat->files[i]) == 0) {
			/* A network file system: every byte of a page crosses the
			 * network, and a tp-N rank's pieces of a row share pages
			 * with other ranks' (sshfs, 4 mounts reading tp-4's ranks of
			 * a LLaMA-1B shape: 1.38x the model pulled by pages, 1.19x
			 * with down_proj's 4 KiB pieces read as their own bytes).
			 * Smaller pieces (o_proj's 1 KiB) stay with their pages:
			 * each request costs more than the page it saves. */
			fs.prefetch_conf.direct_min = opts.direct_min;
		}
	}
	/* Tell the kernel what this is and that it is read-only; a comma in the
	 * path would split the option list, so it is shown as '_'. */
	char fsname[PATH_MAX + 64], dirname[PATH_MAX];
	snprintf(dirname, sizeof(dirname), "%s", cat->dir);
	for (char *p = dirname; *p; p++)
		if (*p == ',')
			*p = '_';
	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=ckptfs,ro,default_permissions", dirname);
	if (fuse_opt_insert_arg(&args, 1, fsname) != 0)
		goto out_tree;

	/* A read that cannot be spliced is copied twice; one that fits the pipe
	 * is not copied here at all. So where the pipe cannot hold the kernel's
	 * largest read (1 MiB, and no CAP_SYS_RESOURCE to grow past
	 * fs.pipe-max-size), ask for reads that fit it with room for 16 pieces
	 * (a read across tensors of a converted file). */
	char maxread[64];
	const size_t room = SPLICE_PIPE_RESERVE + 15u * 4096u;
	if (fs.splice && fs.pipe_size > room && fs.pipe_size < (1u << 20) + room) {
		fs.max_read = (unsigned)((fs.pipe_size - room) & ~(size_t)4095);
		snprintf(maxread, sizeof(maxread), "-omax_read=%u", fs.max_read);
		if (fs.max_read >= 65536 && fuse_opt_insert_arg(&args, 1, maxread) != 0)
			goto out_tree;
		if (fs.max_read < 65536)
			fs.max_read = 0;
	}
	se = fuse_session_new(&args, &ckptfs_ll_ops, sizeof(ckptfs_ll_ops), &fs);
	if (!se)
		goto out_tree;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, cl.mountpoint) != 0) {
		fprintf(stderr, "ckptfs: %s: cannot mount\n", cl.mountpoint);
		goto out_signals;
	}
	if (opts.readahead_kb)
		mountinfo_set_readahead(cl.mountpoint, opts.readahead_kb);
	if (fuse_daemonize(cl.foreground) != 0)
		goto out_unmount;
	/* A thread only now, after the fork of fuse_daemonize. */
	static struct prefetch_queue prefetch_q;
	if (fs.prefetch_conf.window_max && prefetch_queue_start(&prefetch_q, &fs.prefetch, &fs.prefetch_conf) == 0)
		fs.prefetch_q = &prefetch_q;

	if (cl.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		if (!lc)
			goto out_unmount;
		fuse_loop_cfg_set_clone_fd(lc, cl.clone_fd);
		fuse_loop_cfg_set_max_threads(lc, cl.max_threads);
		/* libfuse's default lets idle workers exit and respawns them per
		 * request, which measured 10x slower for streaming reads; keep them. */
		fuse_loop_cfg_set_idle_threads(lc, cl.max_idle_threads == UINT_MAX ? cl.max_threads
										 : cl.max_idle_threads);
		ret = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	/* libfuse reports the signal that ended the loop; being asked to stop
	 * (and unmounting cleanly) is success. */
	ret = ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP ? 0 : 1;
out_unmount:
	if (fs.prefetch_q)
		prefetch_queue_stop(fs.prefetch_q);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
	readstats_destroy(&fs.stats);
out_tree:
	cache_close(cache);
	vtree_destroy(&tree);
	catalog_close(cat);
out_args:
	free(opts.source);
	option_strings_free(&opts.views);
	free(cl.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
