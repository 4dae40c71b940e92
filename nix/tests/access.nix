# Feature: only root and the front-end group reach the daemon; a local user
# outside the group is refused by the bus; the front-end user may ask the
# host's health only for an owner listed in admin_owners.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-access";

  nodes.machine = {
    imports = [ (import ./common.nix { inherit package; }) ];
    services.voxnix.settings.admin_owners = [ "telegram:7" ];
  };

  testScript = ''
    voxnix = "/run/current-system/sw/bin/voxnix"
    manager = "org.voxnix.Voxnix1 /org/voxnix/Voxnix1 org.voxnix.Voxnix1.Manager"

    machine.wait_for_unit("voxnix.service")

    with subtest("a local user outside the voxnix group is refused by the bus"):
        code, out = machine.execute(f"runuser -u alice -- {voxnix} list 2>&1")
        assert code == 6, (code, out)
        assert "AccessDenied" in out, out
        code, out = machine.execute(f"runuser -u alice -- busctl call {manager} List s ''' 2>&1")
        assert code != 0, out
        machine.fail("runuser -u alice -- busctl introspect org.voxnix.Voxnix1 /org/voxnix/Voxnix1")

    with subtest("a front-end group member may call the Manager for telegram owners only"):
        machine.succeed(f"runuser -u voxnix-telegram -- {voxnix} --as telegram:42 list")
        code, out = machine.execute(f"runuser -u voxnix-telegram -- {voxnix} list 2>&1")
        assert code == 2, (code, out)
        code, out = machine.execute(f"runuser -u voxnix-telegram -- {voxnix} --as unix:0 list 2>&1")
        assert code != 0, (code, out)
        code, out = machine.execute(f"runuser -u voxnix-telegram -- busctl call {manager} HostHealth s telegram:42 2>&1")
        assert code != 0, out
        code, out = machine.execute(f"runuser -u voxnix-telegram -- {voxnix} --as telegram:42 health 2>&1")
        assert code == 6, (code, out)
        machine.succeed(f"runuser -u voxnix-telegram -- {voxnix} --as telegram:7 health")
        machine.fail("runuser -u voxnix-telegram -- busctl introspect org.voxnix.Voxnix1 /org/voxnix/Voxnix1")

    with subtest("root may call everything"):
        machine.succeed(f"busctl call {manager} HostHealth s '''")
        machine.succeed("busctl introspect org.voxnix.Voxnix1 /org/voxnix/Voxnix1")
  '';
}
