#!/usr/bin/env bash
# Installs what voxnix's sandbox appliance and test suite need on a Debian 12
# machine (root, Rust toolchain already there). Safe to run again.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "voxnix: run this as root (it installs packages and boots a sandbox with namespaces)" >&2
    exit 3
fi

packages=(
    systemd-container   # systemd-nspawn, machinectl, systemd-machined
    dbus                # the appliance's system bus
    dnsmasq-base        # DHCP for containers on br-vox
    nftables            # the bridge filter between containers (data/nftables)
    nix-bin             # real Nix for the builder and .drv tests
    iproute2            # the container bridge
    util-linux          # unshare, nsenter
    ca-certificates
    openssh-client      # ssh, ssh-keygen: the tests log in to containers
    jq                  # the sandbox's stand-in for modules/ssh.nix reads the personal file
    libwrap0            # a library Debian's sshd links (the sandbox's sshd, below)
    iptables            # the sandbox containers' stand-in for NixOS's firewall (iptables-nft)
)
missing=()
for p in "${packages[@]}"; do
    p=${p%%#*}
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages already installed"
fi

if ! grep -qw overlay /proc/filesystems; then
    say "Loading the overlay file system module"
    modprobe overlay || true
fi

# Every booted container runs its own systemd, and all of them count against
# root's inotify instances; Debian's default (128) runs out at about 20 containers.
if [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 8192 ]; then
    say "Raising fs.inotify.max_user_instances to 8192 (many containers, each with its own systemd)"
    sysctl -q -w fs.inotify.max_user_instances=8192
fi
if [ "$(cat /proc/sys/fs/inotify/max_user_watches)" -lt 524288 ]; then
    sysctl -q -w fs.inotify.max_user_watches=524288
fi

# Containers in the sandbox boot this machine's /usr, which has no sshd; the
# stand-in for modules/ssh.nix runs Debian's, taken out of its package into a
# path of the sandbox's own. The package is not installed, so no sshd starts on
# this machine and none of its host keys or config are made here.
sshd_dir=/usr/local/lib/voxnix-sandbox
if ! [ -x "$sshd_dir/sshd" ]; then
    say "Unpacking Debian's sshd into $sshd_dir (the package is not installed)"
    mkdir -p "$sshd_dir"
    unpack=$(mktemp -d "$sshd_dir/.unpack.XXXXXX")
    trap 'rm -rf "$unpack"' EXIT
    if ! (cd "$unpack" && apt-get download -qq openssh-server >/dev/null 2>&1); then
        apt-get update -qq
        (cd "$unpack" && apt-get download -qq openssh-server >/dev/null)
    fi
    dpkg-deb -x "$unpack"/openssh-server_*.deb "$unpack/x"
    install -m 0755 "$unpack/x/usr/sbin/sshd" "$sshd_dir/sshd.new"
    "$sshd_dir/sshd.new" -V 2>&1 | grep -q OpenSSH || { echo "voxnix: the unpacked sshd does not run (a library missing?)" >&2; exit 3; }
    mv "$sshd_dir/sshd.new" "$sshd_dir/sshd"
    rm -rf "$unpack"
    trap - EXIT
fi

command -v cargo >/dev/null || { echo "voxnix: cargo is missing; install the Rust toolchain (rustup) first" >&2; exit 3; }
