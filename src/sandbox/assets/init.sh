#!/bin/sh
# Stage 1 of the sandbox appliance. Runs as PID 1 of fresh PID, mount, network,
# UTS, IPC and cgroup namespaces (set up by `unshare`), then becomes systemd.
#
# Everything it mounts lives only in the private mount namespace: the overlay
# root, its tmpfs upper layer, /run and /tmp. When the namespace's last process
# dies, the kernel drops all of it; the real /, /tmp, /etc and /nix are never
# written to (they are only the read-only lower layer of the overlay).
set -eu
state="$1"
name="$2"

# Never propagate a mount back to the host.
mount --make-rprivate /

# The upper layer lives in memory, so a killed appliance leaves no files behind.
mount -t tmpfs -o mode=0755 voxnix-sandbox "$state/mnt"
mkdir -p "$state/mnt/upper" "$state/mnt/work" "$state/mnt/root"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$state/mnt/upper,workdir=$state/mnt/work" "$state/mnt/root"
root="$state/mnt/root"

# The files that make the overlay an appliance (units, machine id, ...).
cp -a "$state/seed/." "$root/"

# Host files made visible inside, read-only (e.g. the voxnix binary, wherever
# it was built: even under /tmp, which the appliance covers with its own tmpfs).
# One "SOURCE<TAB>TARGET" per line.
if [ -f "$state/binds" ]; then
    tab=$(printf '\t')
    while IFS="$tab" read -r src dst; do
        [ -n "$src" ] || continue
        mkdir -p "$root$(dirname "$dst")"
        if [ -d "$src" ]; then mkdir -p "$root$dst"; else : > "$root$dst"; fi
        mount --bind "$src" "$root$dst"
        mount -o remount,bind,ro "$root$dst"
    done < "$state/binds"
fi

mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
# Give systemd its own cgroup2 hierarchy, rooted (through the cgroup namespace)
# at the cgroup the launcher created for this sandbox.
umount -R "$root/sys/fs/cgroup" 2>/dev/null || umount -l "$root/sys/fs/cgroup" 2>/dev/null || true
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# Containers' roots, workspaces, per-container profiles and GC roots on a
# file system that can be idmapped (user-namespaced containers bind them with
# :idmap, NixOS's /nix binds too), as ext4, btrfs or ZFS are on a NixOS host;
# the overlay root cannot be.
for d in var/lib/nixos-containers:0700 var/lib/voxnix/storage:0700 \
    nix/var/nix/profiles/per-container:0700 nix/var/nix/gcroots/per-container:0755; do
    mkdir -p "$root/${d%:*}"
    mount -t tmpfs -o "mode=${d##*:}" tmpfs "$root/${d%:*}"
done

echo "$name" > /proc/sys/kernel/hostname

cd "$root"
mkdir -p .voxnix-old-root
pivot_root . .voxnix-old-root
cd /
umount -l /.voxnix-old-root
rmdir /.voxnix-old-root

exec env -i container=voxnix-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit=multi-user.target
