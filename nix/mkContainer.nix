# Turn a voxnix spec into a NixOS module for a container.
#
#   mkContainer = import ./nix/mkContainer.nix { };
#   module      = mkContainer spec;        # spec: attrset, or a path to a JSON file
#
# The result is an ordinary NixOS module; evaluate it with nixpkgs'
# nixos/lib/eval-config.nix (see nix/buildContainer.nix) or use it as the
# `config` of a declarative `containers.<name>`.
#
# Everything that does not need nixpkgs (checking the spec, resolving module
# names to files, the embedded JSON) lives in nix/spec.nix.
{ library ? import ./library.nix { }
, specLib ? import ./spec.nix { inherit library; }
}:

specOrFile:

let
  spec =
    if builtins.typeOf specOrFile == "path"
    then builtins.fromJSON (builtins.readFile specOrFile)
    else specOrFile;

  given = specLib.check spec;
  # What the system is built from: never the owner or personal settings,
  # which would sit in the world-readable store for every local user and
  # every container to read (the daemon passes none; see `personal` below).
  checked = specLib.impersonal given;
  personal = specLib.personalSettings given;
  names = specLib.moduleNames checked;

  personalFile = "/run/voxnix/personal.json";

  # Wrap each library module so that errors point at its file and the same
  # module is never imported twice.
  moduleImport = n:
    let entry = library.modules.${n}; in
    {
      _file = toString entry.path;
      key = "voxnix:module:${n}";
      imports = [ entry.module ];
    };
in
{ config, lib, pkgs, ... }:
let
  # The host's forwarded ports (voxnix expose --to host), opened in this
  # container's firewall from the credential at each start.
  # (The same script runs in the sandbox's stand-in firewall.)
  openExposedPortsScript = pkgs.writeText "voxnix-open-exposed-ports.sh"
    (builtins.readFile ./open-exposed-ports.sh);
  openExposedPorts = mode:
    "${pkgs.bash}/bin/sh ${openExposedPortsScript} /run/credentials/@system/voxnix-personal ${mode} ${pkgs.jq}/bin/jq";
in
{
  _file = toString ./mkContainer.nix;
  key = "voxnix:container";

  imports = map moduleImport names;

  options.voxnix = {
    spec = lib.mkOption {
      type = lib.types.attrs;
      readOnly = true;
      description = "The container's voxnix spec as its system may hold it: secret-looking keys removed, and without its name, owner and resource limits.";
    };
    modules = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      description = "Names of the voxnix library modules selected for this container.";
    };
    personalFile = lib.mkOption {
      type = lib.types.str;
      readOnly = true;
      description = ''
        Where the container finds its personal settings at run time (a JSON
        object `{ <module>: { <setting>: value } }`, root-only), copied at
        boot from the systemd credential `voxnix-personal` the host passes.
        Modules with personal settings read them from here, never from
        `config.voxnix.settings`, which holds only their defaults.
      '';
    };
    settings = lib.mkOption {
      type = lib.types.attrsOf lib.types.attrs;
      readOnly = true;
      description = ''
        Settings of each selected module, with the module's declared defaults
        filled in: `config.voxnix.settings.<module>.<setting>`.
      '';
    };
  };

  config = {
    voxnix.spec = specLib.systemSpec checked;
    voxnix.modules = names;
    voxnix.settings = specLib.settings checked;
    voxnix.personalFile = personalFile;

    warnings = lib.optional (personal != { }) (
      "voxnix: the personal settings ${builtins.concatStringsSep ", " (lib.concatLists (lib.mapAttrsToList (m: v: map (k: "${m}.${k}") (builtins.attrNames v)) personal))} "
      + "are left out of the system (the Nix store is world-readable); the voxnix daemon hands them to the container at start"
    );

    # The host passes the container's personal settings as the credential
    # `voxnix-personal` (systemd-nspawn --load-credential); this copies them
    # where the modules read them, before anything that uses them starts.
    systemd.services.voxnix-personal = {
      description = "Personal settings from the host (voxnix)";
      wantedBy = [ "multi-user.target" ];
      before = [ "multi-user.target" ];
      unitConfig.ConditionCredential = "voxnix-personal";
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        LoadCredential = "voxnix-personal";
        ExecStart = pkgs.writeShellScript "voxnix-personal" ''
          set -eu
          mkdir -p -m 0755 /run/voxnix
          install -m 0600 "$CREDENTIALS_DIRECTORY/voxnix-personal" ${personalFile}
        '';
      };
    };

    # As NixOS's declarative containers: an nspawn container (NixOS then
    # leaves /proc, /dev, /run ... to systemd-nspawn instead of mounting
    # them itself), and so a container.
    boot.isNspawnContainer = true;
    boot.isContainer = true;

    # Lean: what a dev container never reads, off by default (the NixOS
    # manual alone is a large part of an evaluation). The dev module's
    # `documentation` setting turns each back on.
    documentation = {
      enable = lib.mkDefault false;
      man.enable = lib.mkDefault false;
      info.enable = lib.mkDefault false;
      doc.enable = lib.mkDefault false;
      nixos.enable = lib.mkDefault false;
    };

    # No name in the system: nspawn gives the container its machine name as
    # its hostname at start (the kernel's UTS name), so one system serves
    # any container of the same modules (the daemon's system cache).
    networking.hostName = "";
    # The host attaches the container to its bridge; the container's side of
    # the veth pair is eth0 and gets its address (and DNS) by DHCP.
    networking.useDHCP = false;
    networking.interfaces.eth0.useDHCP = true;
    # Identify to the DHCP server by the interface's MAC, which nspawn derives
    # from the container's name, instead of a DUID (new with every new root):
    # a container destroyed and created again under its name gets its lease
    # and address back instead of taking another one from the pool each time.
    networking.dhcpcd.extraConfig = "clientid";
    # DNS comes from the DHCP lease, not from the host's resolv.conf (which
    # may point at a resolver on the host's loopback).
    networking.useHostResolvConf = false;
    networking.firewall.enable = true;
    # A port the host forwards here (nspawn's DNAT) arrives on eth0 and would
    # be refused like any other: the ones voxnix exposed are opened, from
    # the credential the host passes at start (firewall.service runs before
    # voxnix-personal, so it reads the credential itself).
    networking.firewall.extraCommands =
      lib.mkIf (!config.networking.nftables.enable) (openExposedPorts "iptables");
    # With the nftables firewall: a unit after it, run again when it is
    # restarted (partOf) or reloaded (a reload flushes the ruleset).
    systemd.services.voxnix-exposed-ports = lib.mkIf config.networking.nftables.enable {
      description = "Open the ports the host forwards here (voxnix)";
      wantedBy = [ "multi-user.target" ];
      after = [ "nftables.service" ];
      partOf = [ "nftables.service" ];
      path = [ pkgs.nftables ];
      unitConfig = {
        ConditionCredential = "voxnix-personal";
        ReloadPropagatedFrom = "nftables.service";
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = openExposedPorts "nft";
        ExecReload = openExposedPorts "nft";
      };
    };

    system.stateVersion = specLib.stateVersion checked;

    environment.etc."voxnix/spec.json".text = specLib.specJSON checked;

    # The module list as an attribute of the toplevel derivation, so that
    # `voxnix status` reads it from the system's .drv (src/nix/drv.rs).
    system.systemBuilderArgs.voxnixModules = builtins.toJSON names;
  };
}
