# Feature: the system cache on a real NixOS host. Two containers of two
# owners with the same modules share one system (the second create runs no
# Nix evaluation), nothing in it names either, and its GC root goes with the
# last user once the retention is 0.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-cache";

  nodes.machine = {
    imports = [ (import ./common.nix { inherit package; }) ];
    services.voxnix.settings.nix.cache_keep_days = 0;
  };

  testScript = ''
    import json

    machine.wait_for_unit("voxnix.service")

    def work():
        h = json.loads(machine.succeed("voxnix --json health"))
        return (h["systems"]["evaluations"], h["systems"]["builds"])

    def profile(name):
        return machine.succeed(f"readlink -f /nix/var/nix/profiles/per-container/{name}/system").strip()

    with subtest("the second create of a module set runs no Nix work"):
        machine.succeed("voxnix --json create alpha git")
        before = work()
        machine.succeed("voxnix --json create bravo git")
        assert work() == before, (work(), before)
        assert profile("alpha") == profile("bravo")

    with subtest("nothing in the shared system names a container"):
        system = profile("alpha")
        machine.fail(f"grep -rl alpha {system}/etc/voxnix")
        assert machine.succeed("voxnix exec bravo -- hostname").strip() == "bravo"
        assert machine.succeed("voxnix exec alpha -- hostname").strip() == "alpha"

    with subtest("its root goes with its last user"):
        machine.succeed("voxnix destroy --yes alpha")
        machine.succeed(f"ls -l /nix/var/nix/gcroots/voxnix/cache | grep -q {system}")
        machine.succeed("voxnix destroy --yes bravo")
        machine.fail(f"ls -l /nix/var/nix/gcroots/voxnix/cache | grep -q {system}")
  '';
}
