# Feature: the CLI creates a container from the library; it gets an address on
# the bridge; exec works; destroy cleans up; created again, it gets its address
# back.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-lifecycle";

  nodes.machine = { imports = [ (import ./common.nix { inherit package; }) ]; };

  testScript = ''
    import json

    machine.wait_for_unit("voxnix.service")
    machine.wait_for_unit("voxnix-dnsmasq.service")

    with subtest("create a container from the library (the reference system: no network needed)"):
        created = json.loads(machine.succeed("voxnix --json create demo git fish"))
        assert created["name"] == "demo", created
        assert created["state"] == "running", created
        machine.succeed("systemctl is-active container@demo.service")
        machine.succeed("grep -q '^HOST_BRIDGE=br-vox' /etc/nixos-containers/demo.conf")
        machine.succeed("test -e /nix/var/nix/profiles/per-container/demo")

    with subtest("it gets an address on the bridge, from dnsmasq"):
        machine.wait_until_succeeds(
            "voxnix --json status demo"
            " | jq -e '.addresses | map(select(startswith(\"10.100.0.\"))) | length > 0'",
            timeout=60,
        )
        status = json.loads(machine.succeed("voxnix --json status demo"))
        address = [a for a in status["addresses"] if a.startswith("10.100.0.")][0]
        assert 100 <= int(address.split(".")[-1]) <= 200, address
        machine.succeed(f"grep -q ' {address} ' /var/lib/voxnix-dnsmasq/leases")
        machine.succeed("ip -o link show master br-vox | grep -q vb-demo")
        machine.succeed(f"ping -c 1 -W 5 {address}")
        # Its bridge port may send only as the MAC NixOS's nspawn gave it,
        # which the daemon computed without asking the container.
        mac = machine.succeed("voxnix exec demo -- cat /sys/class/net/host0/address").strip()
        machine.succeed(f"nft list set bridge voxnix_ports ports | grep -q '\"vb-demo\" . {mac}'")

    with subtest("exec runs commands in the container, with the library's modules"):
        assert "NixOS" in machine.succeed("voxnix exec demo -- cat /etc/os-release")
        assert "git version" in machine.succeed("voxnix exec demo -- git --version")
        assert "fish" in machine.succeed("voxnix exec demo -- getent passwd root")
        machine.succeed("voxnix exec demo -- test -d /workspace")
        code, _ = machine.execute("voxnix exec demo -- sh -c 'exit 7'")
        assert code == 7, code
        # DNS through the host's dnsmasq, gateway the bridge address.
        assert "10.100.0.1" in machine.succeed("voxnix exec demo -- cat /etc/resolv.conf")
        assert "10.100.0.1" in machine.succeed("voxnix exec demo -- ip route show default")

    with subtest("destroy cleans up"):
        machine.succeed("voxnix destroy --yes demo")
        code, _ = machine.execute("voxnix status demo")
        assert code == 4, code
        assert "demo" not in machine.succeed("voxnix list")
        machine.fail("machinectl status demo")
        machine.fail("systemctl is-active container@demo.service")
        machine.succeed("test ! -e /etc/nixos-containers/demo.conf")
        machine.succeed("test ! -e /var/lib/voxnix/containers/demo.json")
        machine.fail("ip link show vb-demo")
        machine.fail("ls /etc/systemd/system.control/container@demo.service.d")

    with subtest("created again under its name, it gets its address back"):
        again = json.loads(machine.succeed("voxnix --json create demo git"))
        assert again["state"] == "running", again
        machine.wait_until_succeeds(f"voxnix --json status demo | jq -e '.addresses | index(\"{address}\")'", timeout=60)
        machine.succeed("voxnix destroy --yes --purge demo")
  '';
}
