/* mountinfo.c -- locating our mount in /proc/self/mountinfo and tuning its readahead.
 * Reading mountinfo instead of stat() on the mount point avoids a request to a daemon that is not serving yet. */
#include "ckptfs/mountinfo.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
		    r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int mountinfo_find_dev(const char *mountpoint, char *dev, unsigned long cap)
{
	char want[PATH_MAX];
	if (!realpath(mountpoint, want))
		return -errno;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char line[8192];
	int found = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		/* id parent MAJ:MIN root mountpoint ... */
		char *save = NULL, *tok[5];
		int k = 0;
		for (char *p = strtok_r(line, " ", &save); p && k < 5; p = strtok_r(NULL, " ", &save))
			tok[k++] = p;
		if (k < 5)
			continue;
		unescape(tok[4]);
		if (strcmp(tok[4], want) == 0 && strlen(tok[2]) < cap) {
			strcpy(dev, tok[2]);
			found = 0; /* keep scanning: the last mount on a path is the visible one */
		}
	}
	fclose(f);
	return found;
}

int mountinfo_set_readahead(const char *mountpoint, unsigned kb)
{
	char dev[64], path[128];
	int r = mountinfo_find_dev(mountpoint, dev, sizeof(dev));
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	FILE *f = fopen(path, "we");
	if (!f)
		return -errno;
	fprintf(f, "%u\n", kb);
	return fclose(f) == 0 ? 0 : -errno;
}
