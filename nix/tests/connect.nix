# Feature: from "create" to "inside it" (docs/connect.md), from another
# machine: a key registered once lets its owner in as root over ssh, through
# the host (ProxyJump), with the host key `connect` pinned and nix-ld there
# for remote editors; a wrong pinned key is refused by ssh; an exposed port
# reaches the container from the other machine through the container's own
# firewall, which keeps an unexposed one closed; a removed key no longer
# gets in.
{ pkgs, package }:

let
  # The container this test creates, built on the host side as common.nix
  # builds the lifecycle test's (the VM has no network).
  sshSystem = import ../buildContainer.nix {
    nixpkgs = pkgs.path;
    specFile = builtins.toFile "voxnix-connect-spec.json"
      (builtins.toJSON { name = "box"; modules = [ "ssh" ]; workspace = true; });
    system = pkgs.stdenv.hostPlatform.system;
  };
in
pkgs.testers.runNixOSTest {
  name = "voxnix-connect";

  nodes.machine = {
    imports = [ (import ./common.nix { inherit package; }) ];
    services.voxnix.expose.hostPorts = { from = 20000; to = 20009; };
    services.voxnix.settings.connect_jump_host = "root@machine";
    # The jump host: the laptop's administrator logs in to the host itself.
    services.openssh.enable = true;
    virtualisation.additionalPaths = [ sshSystem ];
  };

  nodes.laptop = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    import json

    start_all()
    machine.wait_for_unit("voxnix.service")
    machine.wait_for_unit("voxnix-dnsmasq.service")
    machine.wait_for_unit("sshd.service")
    laptop.wait_for_unit("multi-user.target")

    with subtest("the laptop's key, registered once"):
        pub = laptop.succeed(
            "mkdir -p -m 700 /root/.ssh && "
            "ssh-keygen -q -t ed25519 -N \"\" -C me@laptop -f /root/.ssh/id_ed25519 && "
            "cat /root/.ssh/id_ed25519.pub"
        ).strip()
        machine.succeed(f"mkdir -p -m 700 /root/.ssh && echo '{pub}' >> /root/.ssh/authorized_keys")
        laptop.succeed("printf 'Host machine\\n  StrictHostKeyChecking accept-new\\n' >> /root/.ssh/config")
        machine.succeed(f"voxnix keys add '{pub}'")

    with subtest("create, connect, ssh: in as root through the host, the host key pinned"):
        created = json.loads(machine.succeed("voxnix --json create box ssh"))
        assert created["state"] == "running", created
        machine.wait_until_succeeds("voxnix connect box --known-hosts", timeout=120)
        block = machine.succeed("voxnix connect box --ssh-config")
        known = machine.succeed("voxnix connect box --known-hosts").strip()
        assert "ProxyJump root@machine" in block, block
        assert "StrictHostKeyChecking yes" in block, block
        host_key = machine.succeed("voxnix exec box -- cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        assert host_key in known, known
        laptop.succeed(f"cat >> /root/.ssh/config <<'EOF'\n{block}EOF")
        laptop.succeed(f"echo '{known}' >> /root/.ssh/known_hosts")
        out = laptop.succeed("ssh -o BatchMode=yes box.voxnix 'echo in:$(hostname):$(id -u)'")
        assert out.strip() == "in:box:0", out

    with subtest("remote editors: the loader nix-ld puts where their servers look"):
        laptop.succeed("ssh -o BatchMode=yes box.voxnix test -e /lib64/ld-linux-x86-64.so.2")

    with subtest("a pinned key that is not the container's: ssh refuses"):
        other = laptop.succeed(
            "ssh-keygen -q -t ed25519 -N \"\" -f /root/other && cut -d' ' -f1,2 /root/other.pub"
        ).strip()
        laptop.succeed(f"echo 'box.voxnix {other}' > /root/wrong_known")
        laptop.fail("ssh -o BatchMode=yes -o UserKnownHostsFile=/root/wrong_known box.voxnix true")

    with subtest("an exposed port reaches the container from the laptop, through its own firewall"):
        exposed = json.loads(machine.succeed("voxnix --json expose box 8080"))
        host_port = exposed["exposure"]["host_port"]
        assert exposed["pending_restart"], exposed
        machine.succeed("voxnix restart box")
        # Absolute paths: a unit systemd-run starts in the container has
        # systemd's default PATH, which on NixOS holds none of the system's.
        serve = (
            "voxnix exec box -- systemd-run --unit={unit} --collect "
            "/run/current-system/sw/bin/systemd-socket-activate -l {port} -a --inetd "
            "/bin/sh -c 'printf \"HTTP/1.0 200 OK\\r\\n\\r\\nfrom-box\\n\"'"
        )
        machine.wait_until_succeeds("voxnix exec box -- true", timeout=60)
        machine.succeed(serve.format(unit="web", port=8080))
        machine.succeed(serve.format(unit="other", port=9090))
        laptop.wait_until_succeeds(
            f"curl -sf --max-time 5 http://machine:{host_port}/ | grep -q from-box", timeout=60
        )
        status = json.loads(machine.succeed("voxnix --json status box"))
        address = [a for a in status["addresses"] if a.startswith("10.100.0.")][0]
        machine.succeed(f"curl -sf --max-time 5 http://{address}:8080/ | grep -q from-box")
        # Listening, not exposed: the container's firewall refuses it, even to the host.
        machine.fail(f"curl -sf --max-time 5 http://{address}:9090/")

    with subtest("a removed key no longer gets in"):
        machine.succeed("voxnix keys remove me@laptop")
        laptop.fail("ssh -o BatchMode=yes box.voxnix true")
        machine.succeed("voxnix destroy --yes --purge box")
  '';
}
