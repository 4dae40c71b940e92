# Feature: storage.backend = "zfs": the pool's parent dataset is created and
# mounted, and the daemon runs in the host's mount namespace (its dataset
# mounts must reach systemd-nspawn) with CAP_SYS_ADMIN and /dev/zfs.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-storage-zfs";

  nodes.machine = {
    imports = [ (import ./common.nix { inherit package; }) ];
    services.voxnix.storage = {
      backend = "zfs";
      # The test makes the pool itself, after boot.
      zfs.importPool = false;
    };
    networking.hostId = "8425e349";
    virtualisation.emptyDiskImages = [ 1024 ];
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("with a pool, the parent dataset is created and mounted at storage.root"):
        machine.succeed("zpool create -O mountpoint=none tank /dev/vdb")
        machine.succeed("systemctl restart voxnix-zfs-parent.service")
        machine.succeed("zfs list -H -o name tank/voxnix")
        assert machine.succeed("zfs get -H -o value mountpoint tank/voxnix").strip() == "/var/lib/voxnix/storage"
        assert machine.succeed("zfs get -H -o value mounted tank/voxnix").strip() == "yes"
        machine.succeed("stat -c %a /var/lib/voxnix/storage | grep -qx 700")
        # Running it again changes nothing.
        machine.succeed("systemctl restart voxnix-zfs-parent.service")

    with subtest("the daemon may drive zfs, and mounts where the host sees them"):
        machine.succeed("systemctl restart voxnix.service")
        machine.wait_for_unit("voxnix.service")
        props = machine.succeed(
            "systemctl show -p CapabilityBoundingSet -p DeviceAllow -p ProtectSystem voxnix.service"
        )
        assert "cap_sys_admin" in props, props
        assert "/dev/zfs rw" in props, props
        assert "ProtectSystem=no" in props, props
        pid = machine.succeed("systemctl show -P MainPID voxnix.service").strip()
        assert machine.succeed(f"readlink /proc/{pid}/ns/mnt") == machine.succeed("readlink /proc/1/ns/mnt")
        machine.succeed(f"nsenter --target {pid} --mount -- zfs list tank/voxnix")
  '';
}
