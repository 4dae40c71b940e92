# nix/mkContainer.nix evaluated with nixpkgs' real lib: the container's NixOS
# configuration for each module of modules/ alone, for all of them together,
# and with every setting of every module set.
#
#   nix-instantiate --eval --strict --json --readonly-mode nix/tests/eval/container.nix -A cases.all
#
# A case's result is its whole configuration, forced (units, files, users,
# packages by name), with the failed assertions' messages. `failing` holds
# specs that must not evaluate; the test runs each alone and reads the error.
{ root ? ../../..
, nixpkgsLib ? import ./nixpkgs-lib.nix { }
}:

let
  inherit (nixpkgsLib) lib;
  pkgs = import ./pkgs.nix { inherit lib; };
  library = import (root + "/nix/library.nix") { modulesDir = root + "/modules"; };
  mkContainer = import (root + "/nix/mkContainer.nix") { inherit library; };

  # `extra`: NixOS settings of the container beside the spec's (as a module
  # could set them).
  evalContainerWith = extra: spec: lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = pkgs; }
      (mkContainer spec)
    ] ++ extra;
  };
  evalContainer = evalContainerWith [ ];

  plain = import ./plain.nix;

  run = runWith [ ];
  runWith = extra: spec:
    let config = (evalContainerWith extra spec).config; in
    {
      config = plain (builtins.removeAttrs config [ "_module" ]);
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      inherit (config) warnings;
      packages = map (p: p.name) config.environment.systemPackages;
      etc = builtins.mapAttrs (_: f: f.source.drvAttrs.text or null) config.environment.etc;
    };

  base = name: extra: { inherit name; owner = "unix:1000"; } // extra;

  # Every setting of every module away from its default.
  allSettings = {
    code-server = { port = 8443; open_firewall = false; };
    dev = { extra_packages = [ "nodejs" "python3Packages.requests" ]; documentation = [ "man" "nixos" ]; };
    git = { user_name = "Ada Lovelace"; user_email = "ada@example.invalid"; };
    ssh = { authorized_keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOo5bq0Mv7UugJwEF8AIfmXXuSbRkj/V1I0PO0WRhr8O ada@laptop" ]; port = 2222; editors = false; };
    tailscale = { userspace_networking = true; ssh = true; };
  };
  failing = {
    unknownPackage = { spec = base "bad" { modules = [ "dev" ]; settings.dev.extra_packages = [ "no-such-package" ]; }; expect = "no package 'no-such-package' in nixpkgs"; };
    underscoreName = { spec = base "dev_1" { }; expect = "is not a valid container name"; };
    longName = { spec = base "abcdefghijkl" { }; expect = "is not a valid container name"; };
    unknownModule = { spec = base "bad" { modules = [ "nope" ]; }; expect = "unknown module 'nope'"; };
  };
in
{
  inherit (nixpkgsLib) source;
  names = library.names;

  cases =
    builtins.listToAttrs (map
      (m: { name = "only-${m}"; value = run (base "only-${builtins.substring 0 6 m}" { modules = [ m ]; }); })
      library.names)
    // {
      none = run (base "empty" { });
      all = run (base "all" { modules = library.names; });
      everySetting = run (base "settings" { modules = library.names; settings = allSettings; state_version = "24.11"; });
      workspaceFlag = run (base "ws" { modules = [ "git" ]; workspace = true; });
      # A container whose firewall is nftables-based (a module could turn
      # it on): the exposed ports are opened by a unit instead.
      nftablesFirewall = runWith [ { networking.nftables.enable = true; } ] (base "nft" { });
      # ssh without the remote editors' loader (nix-ld).
      sshNoEditors = run (base "noed" { modules = [ "ssh" ]; settings.ssh.editors = false; });
      # The same module set for two containers of two owners, with other
      # names, personal settings and resource limits: the configuration must
      # not differ (nothing of either is in it), so one system serves both.
      personalA = run { name = "alphabox"; owner = "unix:1000"; modules = library.names; settings = allSettings; };
      personalB = run {
        name = "bravobox";
        owner = "telegram:987654321";
        resources = { memory_max = 1073741824; tasks_max = 64; };
        modules = library.names;
        settings = allSettings // {
          git = { user_name = "Grace Hopper"; user_email = "grace@example.invalid"; };
          ssh = allSettings.ssh // { authorized_keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGrace grace@desk" ]; };
        };
      };
    };

  # Specs that evaluate, but whose assertions must refuse them.
  refused = {
    sshPort = { failed = (run (base "bad" { modules = [ "ssh" ]; settings.ssh.port = 0; })).failedAssertions; expect = "'ssh.port' must be between 1 and 65535"; };
    devDocumentation = { failed = (run (base "bad" { modules = [ "dev" ]; settings.dev.documentation = [ "manual" ]; })).failedAssertions; expect = "'dev.documentation' takes only"; };
    codeServerPort = { failed = (run (base "bad" { modules = [ "code-server" ]; settings.code-server.port = 70000; })).failedAssertions; expect = "'code-server.port' must be between 1 and 65535"; };
  };

  # Specs that must not evaluate at all (name -> { spec, expect }): the test
  # evaluates `evalFailing NAME` and reads the error.
  inherit failing;
  evalFailing = name: builtins.deepSeq (run failing.${name}.spec) "evaluated";
}
