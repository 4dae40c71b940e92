# Feature: enabling the module brings the services up, wired as documented.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-services";

  nodes.machine = { imports = [ (import ./common.nix { inherit package; }) ]; };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("the daemon is up, ready (Type=notify, watchdog) and owns its bus name"):
        machine.wait_for_unit("voxnix.service")
        assert machine.succeed("systemctl show -P Type voxnix.service").strip() == "notify"
        assert machine.succeed("systemctl show -P WatchdogUSec voxnix.service").strip() == "30s"
        assert machine.succeed("systemctl show -P Restart voxnix.service").strip() == "on-failure"
        machine.succeed("busctl status org.voxnix.Voxnix1")
        machine.succeed("voxnix list")

    with subtest("the daemon runs the rendered configuration"):
        config = machine.succeed("cat /etc/voxnix/config.toml")
        assert 'bridge = "br-vox"' in config, config
        assert 'builder = "nix"' in config, config
        machine.succeed("systemctl show -P ExecStart voxnix.service | grep -q -- '--config /etc/voxnix/config.toml'")

    with subtest("the daemon is confined, and can write only where it must"):
        props = machine.succeed(
            "systemctl show -p ProtectSystem -p NoNewPrivileges -p CapabilityBoundingSet voxnix.service"
        )
        assert "ProtectSystem=strict" in props, props
        assert "NoNewPrivileges=yes" in props, props
        assert "cap_sys_ptrace" in props and "cap_sys_admin" not in props, props
        pid = machine.succeed("systemctl show -P MainPID voxnix.service").strip()
        enter = f"nsenter --target {pid} --mount --"
        for writable in ["/etc/nixos-containers", "/var/lib/voxnix", "/var/lib/voxnix/storage",
                         "/var/lib/nixos-containers", "/nix/var/nix/profiles/per-container",
                         "/nix/var/nix/gcroots/per-container"]:
            machine.succeed(f"{enter} touch {writable}/.voxnix-probe")
            machine.succeed(f"rm {writable}/.voxnix-probe")
        for read_only in ["/etc", "/nix/store", "/var/lib", "/usr"]:
            machine.fail(f"{enter} touch {read_only}/.voxnix-probe")
        machine.succeed("stat -c %a /var/lib/voxnix | grep -qx 700")

    with subtest("the bridge has its address; dnsmasq serves DHCP and DNS on it only"):
        machine.wait_for_unit("voxnix-dnsmasq.service")
        machine.succeed("ip -4 addr show dev br-vox | grep -q 'inet 10.100.0.1/24'")
        machine.wait_until_succeeds("ss -Hlnu 'sport = :53' | grep -q '10.100.0.1:53'")
        dns = machine.succeed("ss -Hlnu 'sport = :53'")
        assert "127.0.0.1:53" not in dns, dns
        machine.succeed("ss -Hlnu 'sport = :67' | grep -q .")
        assert machine.succeed("systemctl show -P User voxnix-dnsmasq.service").strip() in ("", "root")
        machine.succeed("pgrep -u voxnix-dnsmasq -x dnsmasq")

    with subtest("NAT and forwarding for containers"):
        machine.succeed("sysctl -n net.ipv4.conf.all.forwarding | grep -qx 1")

    with subtest("the container template and machined are there"):
        machine.succeed("systemctl cat container@.service >/dev/null")
        machine.succeed("busctl status org.freedesktop.machine1")

    with subtest("the Telegram bot is an unprivileged member of the front-end group"):
        assert machine.succeed("systemctl show -P User voxnix-telegram.service").strip() == "voxnix-telegram"
        machine.succeed("id -nG voxnix-telegram | grep -qw voxnix")
        machine.succeed("systemctl show -P LoadCredential voxnix-telegram.service | grep -q telegram-token")
        caps = machine.succeed("systemctl show -P CapabilityBoundingSet voxnix-telegram.service")
        assert caps.strip() == "", caps
        # The group is what lets it reach the daemon, for telegram owners.
        machine.succeed("runuser -u voxnix-telegram -- /run/current-system/sw/bin/voxnix --as telegram:42 list")
  '';
}
