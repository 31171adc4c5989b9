/* cache.h -- the hot-chunk cache: a bounded memory LRU in front of an on-disk zstd cache.
 * Computed bytes are produced in fixed-size chunks of an expression's output and kept here; source ranges never enter it.
 *
 * A chunk is identified by a key string (the expression and the identity
 * of every source file it reads: device, inode, size, mtime) and its index.
 * Memory tier: decompressed chunks, LRU, bounded by bytes; concurrent
 * readers of one missing chunk compute it once (the others wait).
 * Disk tier (optional): one file per chunk named by a 128-bit hash of the
 * key, the chunk size and the index, holding
 *   "CKPTFSC1", u32 key length, u64 offset of the chunk in the output (its
 *   index times the chunk size: with the raw size, the header names its
 *   bytes whatever chunk size wrote it), u64 raw size, key bytes,
 *   one zstd frame with its content checksum (at the configured level,
 *   or with raw literals when that level would save less than a quarter
 *   of the chunk: such a frame decodes several times slower than one
 *   with raw literals, often slower than recomputing the chunk);
 * or, for such a chunk in a directory of the user alone, "CKPTFSR1", the
 *   same fields and key, zeros to the next 4 KiB boundary and the chunk's
 *   bytes as they are: a hit is then a range of the file, handed to the
 *   kernel by splice (no decoding, no copy), checked by its header, key
 *   and exact size but not by a checksum (reading the bytes to check them
 *   would cost what splicing saves; the directory is the user's own)
 * written by a worker thread to a temp file and renamed, so a crash never
 * leaves a half entry under a final name. An entry whose header, key,
 * size or checksum does not match is deleted and recomputed. The directory
 * is bounded by bytes with LRU eviction by mtime (hits touch the file, at
 * most once a minute), so mounts sharing it share the bound; temp files
 * being written count too.
 * A directory that cannot be written turns the disk tier off with one
 * warning; readers never see its errors.
 * Trust: the directory must belong to the user and be closed to group and
 * others (else one warning, disk tier off), unless opts.shared: then each
 * user keeps a 32-byte secret in DIR/.ckptfs-key-UID (0600, made O_EXCL),
 * entries start "CKPTFSM1" and end with the HMAC-SHA256 of everything
 * before under that secret, and are named by the HMAC of key, index and chunk size, so
 * nobody without the secret can make an entry the mount accepts. Either way
 * an entry is read only if it is a regular file of the user (opened
 * O_NOFOLLOW|O_NONBLOCK); anything else at its name is a bad entry.
 * Policy: a chunk goes to disk unless computing it took less than half of
 * what reading it back is expected to take (CPU time of the thread, the
 * decompression rate measured on this machine, then on real hits); the
 * caller is told (cache_verdict) so it can stop routing a cheap expression
 * through the cache at all: the kernel page cache already keeps its pages.
 */
#ifndef CKPTFS_CACHE_H
#define CKPTFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptfs/error.h"
#include "ckptfs/expr.h"

#define CACHE_CHUNK_DEFAULT (1u << 20)
/* -o cache_chunk: a power of two in this range */
#define CACHE_CHUNK_MIN (64u << 10)
#define CACHE_CHUNK_MAX (16u << 20)

struct cache_opts {
	size_t chunk;          /* bytes per chunk */
	uint64_t mem_bytes;    /* memory tier bound; 0 disables it */
	const char *dir;       /* disk tier directory, NULL for none */
	uint64_t disk_bytes;   /* disk tier bound */
	int level;             /* zstd level */
	bool disk_always;      /* bypass the policy: every computed chunk goes to disk (tests) */
	bool shared;           /* trust a directory others can write: entries carry the user's MAC */
};

struct cache_tier_stats {
	uint64_t hits, misses, bytes_in, bytes_out, evictions, bytes_stored;
};

struct cache_stats {
	struct cache_tier_stats mem, disk;
	uint64_t chunk; /* bytes per chunk (-o cache_chunk) */
	uint64_t computed_chunks, computed_bytes;
	/* Every chunk computed while the disk tier is on ends in exactly one of
	 * these once the writer is idle: written; skipped by the policy; a
	 * duplicate of one already queued or being written (mem_cache=0 or an
	 * evicted chunk recomputed before its entry landed); dropped because
	 * the queue was full or out of memory; failed (the write erred, or the
	 * tier went off while it waited). */
	uint64_t disk_written, disk_skipped_by_policy, disk_deduplicated, disk_dropped, disk_failed;
	uint64_t disk_bad_entries;
	uint64_t disk_pending; /* chunks queued, being written, or written and not yet named */
	double writer_cpu_s;   /* CPU time the disk writer has spent (compressing, writing, naming) */
	uint64_t disk_raw_bytes, disk_compressed_bytes;
	uint64_t disk_trials; /* chunks the writer compressed at the configured level to see whether they compress */
	/* disk hits handed out as ranges of raw entry files (cache_span), a part of disk.hits */
	uint64_t disk_range_hits, disk_range_bytes;
	bool disk_enabled;
	double compute_mbps, decompress_mbps; /* running estimates behind the policy */
	/* Reading back a raw entry costs one copy of its bytes (cache_span
	 * splices it): copy_mbps, measured with decompress_mbps. Chunks the
	 * policy judged at that cost, because the writer stores such chunks
	 * raw (the last entry it wrote was raw; before any, in a directory of
	 * the user alone: weights rarely compress by a quarter). */
	double copy_mbps;
	uint64_t judged_raw;
};

struct cache;

int cache_open(struct cache **out, const struct cache_opts *o, struct ckpt_err *err);

/* Flushes pending disk writes, then frees everything. */
void cache_close(struct cache *c);

/* Wait until every queued disk write is done (tests, unmount). */
void cache_flush(struct cache *c);

/* What computing a chunk taught about an expression: cheap ones compute
 * faster than a cache entry can be read back, so caching them only costs. */
enum cache_verdict { CACHE_UNKNOWN, CACHE_CHEAP, CACHE_DEAR };

/* Fill dst with bytes [off, off+len) of expression e, whose identity is
 * `key`, through the cache. *verdict (may be NULL) is set when a chunk had
 * to be computed. Returns 0 or a negative errno. */
int cache_read(struct cache *c, const struct expr *e, const char *key, uint64_t off, uint64_t len, void *dst,
	       enum cache_verdict *verdict);

/* A pinned chunk of the memory tier (opaque): eviction leaves it alone. */
struct cache_pin;

/* cache_read without the copy, for a caller that replies from memory:
 * bytes [off, off+len) of e, as far as the one chunk holding byte off
 * has them, are at *data, inside that chunk of the memory tier, which is
 * loaded or computed as cache_read would (a chunk another thread is
 * making is waited for) and stays put until cache_unpin(c, *pin), which
 * every caller owes, also when its reply fails. The memory tier exceeds
 * its bound by the pinned chunks meanwhile. Returns the bytes available
 * there (up to len, not past the chunk's end) or a negative errno. */
int64_t cache_pin_range(struct cache *c, const struct expr *e, const char *key, uint64_t off, uint64_t len,
			const uint8_t **data, struct cache_pin **pin, enum cache_verdict *verdict);
void cache_unpin(struct cache *c, struct cache_pin *pin);

/* A hit on a raw disk entry, for a caller that can hand file ranges to the
 * kernel (splice) rather than copy bytes: when the chunk holding byte off
 * of e is not in the memory tier and its disk entry holds it raw, *fd is a
 * new descriptor of that entry (the caller closes it; an eviction's unlink
 * meanwhile is harmless), *fd_off the entry's offset of byte off, and the
 * result the bytes available there: up to len, not past the chunk's end.
 * The entry was checked whole (header, key, exact size). -ENOENT
 * otherwise: read those bytes with cache_read. */
int64_t cache_span(struct cache *c, const struct expr *e, const char *key, uint64_t off, uint64_t len, int *fd,
		   uint64_t *fd_off);

/* Whether a read of byte off of the expression whose identity is key
 * would be served by the cache without computing, so never reads the
 * source: its chunk is in the memory tier (ready, being loaded or made, or
 * waiting for the disk writer, which keeps it there until its entry is
 * written), or a regular file of the user sits at its entry's final name
 * (one fstatat; no entry bytes are read, so a bad entry counts as held).
 * *chunk_end is the output offset where that chunk ends (the answer holds
 * up to there). For the read-ahead: cheap enough to ask once per chunk. */
bool cache_holds(struct cache *c, const char *key, uint64_t off, uint64_t *chunk_end);

/* Bytes per chunk. */
size_t cache_chunk_size(const struct cache *c);

void cache_get_stats(struct cache *c, struct cache_stats *out);

/* The identity string of an expression: its form plus each source file's
 * device, inode, size and mtime. Caller frees. */
char *cache_key(const struct expr *e);

/* 128-bit hash of key, chunk size and chunk index as 32 hex digits (the
 * file name in a directory of the user alone). */
void cache_entry_name(const char *key, uint64_t chunk_size, uint64_t chunk, char out[33]);

#endif
