# Feature: the daemon's D-Bus API is on the system bus, as docs/dbus-api.md says.
{ pkgs, package }:

pkgs.testers.runNixOSTest {
  name = "voxnix-dbus-api";

  nodes.machine = { imports = [ (import ./common.nix { inherit package; }) ]; };

  testScript = ''
    machine.wait_for_unit("voxnix.service")

    with subtest("busctl introspect shows the Manager interface"):
        out = machine.succeed("busctl introspect org.voxnix.Voxnix1 /org/voxnix/Voxnix1")
        assert "org.voxnix.Voxnix1.Manager" in out, out
        for member in [".Create", ".GetOperation", ".List", ".Status", ".Start", ".Stop",
                       ".Restart", ".Destroy", ".Logs", ".Exec", ".Modules", ".HostHealth",
                       ".Version", ".OperationProgress", ".OperationFinished",
                       ".ContainerStateChanged"]:
            assert member in out, f"{member} missing from:\n{out}"
        xml = machine.succeed(
            "busctl introspect --xml-interface org.voxnix.Voxnix1 /org/voxnix/Voxnix1"
        )
        assert '<interface name="org.voxnix.Voxnix1.Manager">' in xml, xml

    with subtest("the version is the package's"):
        version = machine.succeed(
            "busctl get-property org.voxnix.Voxnix1 /org/voxnix/Voxnix1 org.voxnix.Voxnix1.Manager Version"
        )
        assert '"${package.version}"' in version, version

    with subtest("the module library the configuration names is what the daemon offers"):
        modules = machine.succeed(
            "busctl call org.voxnix.Voxnix1 /org/voxnix/Voxnix1 org.voxnix.Voxnix1.Manager Modules"
        )
        for name in ${builtins.toJSON (import ../library.nix { }).names}:
            assert name in modules, f"{name} missing from {modules}"

    with subtest("admin methods answer root"):
        machine.succeed(
            "busctl call org.voxnix.Voxnix1 /org/voxnix/Voxnix1 org.voxnix.Voxnix1.Manager HostHealth s '''"
        )
  '';
}
