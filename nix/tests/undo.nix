# Feature: checkpoints and undo on a real NixOS host. An update adds a module,
# a file is changed, and `voxnix undo` puts back the earlier system (the
# per-container profile switched to its generation) and the workspace; the
# undo itself is undone with the checkpoint it names.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-undo";

  nodes.machine = { imports = [ (import ./common.nix { inherit package; }) ]; };

  testScript = ''
    import json

    machine.wait_for_unit("voxnix.service")

    def profile():
        return machine.succeed("readlink -f /nix/var/nix/profiles/per-container/box/system").strip()

    with subtest("a create is the first checkpoint"):
        machine.succeed("voxnix --json create box git")
        history = json.loads(machine.succeed("voxnix --json history box"))
        assert [c["kind"] for c in history] == ["create"], history
        first = profile()
        assert history[0]["system"] == first, history

    with subtest("an update is checkpointed before it changes anything"):
        machine.succeed("voxnix exec box -- sh -c 'echo v1 > /workspace/notes'")
        op = machine.succeed("voxnix update box git fish")
        machine.wait_until_succeeds("voxnix --json status box | jq -e '.modules == [\"git\", \"fish\"]'", timeout=600)
        assert "fish" in machine.succeed("voxnix exec box -- getent passwd root")
        second = profile()
        assert second != first
        machine.succeed("voxnix exec box -- sh -c 'echo v2 > /workspace/notes'")
        history = json.loads(machine.succeed("voxnix --json history box"))
        assert history[-1]["kind"] == "update" and history[-1]["system"] == first, history

    with subtest("undo puts back the earlier system and the workspace"):
        code, _ = machine.execute("voxnix undo box < /dev/null")
        assert code == 2, "no confirmation without a terminal or --yes"
        undone = json.loads(machine.succeed("voxnix --json undo box --yes"))
        assert profile() == first
        status = json.loads(machine.succeed("voxnix --json status box"))
        assert status["modules"] == ["git"], status
        assert status["state"] == "running", status
        assert "fish" not in machine.succeed("voxnix exec box -- getent passwd root")
        assert machine.succeed("voxnix exec box -- cat /workspace/notes").strip() == "v1"

    with subtest("the undo is undone with the checkpoint it names"):
        machine.succeed(f"voxnix undo box {undone['safety']} --yes")
        assert profile() == second
        assert machine.succeed("voxnix exec box -- cat /workspace/notes").strip() == "v2"
        machine.succeed("voxnix destroy --yes --purge box")
        machine.succeed("test ! -e /var/lib/voxnix/checkpoints/box.json")
  '';
}
