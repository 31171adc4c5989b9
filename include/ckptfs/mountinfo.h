/* mountinfo.h -- kernel-side tuning of a mount after it exists.
 * Finds the mount's device in /proc/self/mountinfo (no request to our own daemon) and sets its readahead. */
#ifndef CKPTFS_MOUNTINFO_H
#define CKPTFS_MOUNTINFO_H

/* Find the device number "MAJ:MIN" of the mount at `mountpoint` (the last
 * one mounted there). Returns 0 or a negative errno. */
int mountinfo_find_dev(const char *mountpoint, char *dev, unsigned long cap);

/* Best effort: set /sys/class/bdi/MAJ:MIN/read_ahead_kb so the kernel sends
 * large read requests. Needs root; returns a negative errno when it could not. */
int mountinfo_set_readahead(const char *mountpoint, unsigned kb);

#endif
