# The NixOS options voxnix's Nix code sets or reads, declared for the
# evaluation suite (nixpkgs' nixos/ is not available here, only its lib).
#
# Names, types and defaults follow current nixpkgs (read file by file):
# loose (`anything`, `attrs`) where only presence matters, real lib types
# where merging matters (lists, attrsOf, submodules, systemd unit sections),
# so that two modules defining the same thing merge, or conflict, as on NixOS.
# A definition of an option that is not declared here is an error, as on
# NixOS: that is how the suite catches a misspelt option.
{ lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  opt = type: default: mkOption { inherit type default; };
  bool = default: opt types.bool default;
  list = elem: opt (types.listOf elem) [ ];
  strs = list types.str;
  lines = opt types.lines "";
  nullOr = t: opt (types.nullOr t) null;

  # nixos/lib/systemd-unit-options.nix: a unit setting is one value, or a
  # list; lists from several definitions are concatenated, single values
  # must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd unit setting";
    check = v: builtins.isString v || builtins.isInt v || builtins.isBool v
      || builtins.isPath v || builtins.isList v || (builtins.isAttrs v && v ? outPath);
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if builtins.any (d: builtins.isList d.value) defs'
      then builtins.concatMap (d: lib.toList d.value) defs'
      else lib.mergeEqualOption loc defs';
  };
  unitSection = opt (types.attrsOf unitOption) { };

  port = types.port;

  service = types.submodule ({ name, config, ... }: {
    options = {
      enable = bool true;
      description = opt types.str "";
      wantedBy = strs;
      requiredBy = strs;
      wants = strs;
      requires = strs;
      after = strs;
      before = strs;
      bindsTo = strs;
      partOf = strs;
      conflicts = strs;
      restartTriggers = list types.unspecified;
      reloadTriggers = list types.unspecified;
      restartIfChanged = bool true;
      path = list (types.either types.package types.str);
      environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
      unitConfig = unitSection;
      serviceConfig = unitSection;
      script = lines;
      preStart = lines;
      postStart = lines;
      preStop = lines;
      postStop = lines;
      startAt = opt (types.either types.str (types.listOf types.str)) [ ];
      enableStrictShellChecks = bool false;
    };
  });

  network = types.submodule {
    options = {
      matchConfig = unitSection;
      linkConfig = unitSection;
      networkConfig = unitSection;
      address = strs;
      DHCP = nullOr types.str;
    };
  };

  etcFile = types.submodule ({ name, config, ... }: {
    options = {
      enable = bool true;
      target = opt types.str name;
      text = nullOr types.lines;
      source = mkOption { type = types.path; };
      mode = opt types.str "symlink";
      user = opt types.str "+0";
      group = opt types.str "+0";
    };
    # As NixOS: `text` becomes a file in the store.
    config.source = lib.mkIf (config.text != null)
      (lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text));
  });

  user = types.submodule ({ name, ... }: {
    options = {
      name = opt types.str name;
      isSystemUser = bool false;
      isNormalUser = bool false;
      uid = nullOr types.int;
      group = opt types.str "";
      extraGroups = strs;
      home = opt types.path "/var/empty";
      description = opt types.str "";
      shell = nullOr (types.either types.shellPackage types.path);
      openssh.authorizedKeys.keys = list types.singleLineStr;
    };
  });

  group = types.submodule {
    options = {
      gid = nullOr types.int;
      members = strs;
    };
  };

  interface = types.submodule ({ name, ... }: {
    options = {
      name = opt types.str name;
      useDHCP = nullOr types.bool;
      ipv4.addresses = list (types.submodule {
        options = {
          address = mkOption { type = types.str; };
          prefixLength = mkOption { type = types.ints.between 0 32; };
        };
      });
    };
  });

  # nixos/modules/services/networking/firewall.nix (commonOptions, also
  # per interface): ranges are attribute sets of ports ({ from; to; }).
  firewallPorts = {
    allowedTCPPorts = list port;
    allowedUDPPorts = list port;
    allowedTCPPortRanges = list (types.attrsOf port);
    allowedUDPPortRanges = list (types.attrsOf port);
  };
in
{
  options = {
    assertions = list types.unspecified;
    warnings = strs;

    # nixos/modules/misc/documentation.nix (all on by default in NixOS).
    documentation = {
      enable = bool true;
      man.enable = bool true;
      info.enable = bool true;
      doc.enable = bool true;
      nixos.enable = bool true;
    };

    system = {
      stateVersion = opt types.str "26.05";
      systemBuilderArgs = opt (types.attrsOf types.unspecified) { };
    };

    boot = {
      isContainer = bool false;
      isNspawnContainer = bool false;
      enableContainers = bool true;
      # nixos/modules/tasks/filesystems.nix: a list is still accepted.
      supportedFilesystems = opt
        (types.coercedTo (types.listOf types.str)
          (names: lib.genAttrs names (_: true))
          (types.attrsOf types.bool))
        { };
      zfs = {
        package = opt types.package pkgs.zfs;
        extraPools = strs;
      };
    };

    nix = {
      enable = bool true;
      package = opt types.package pkgs.nix;
      settings = mkOption {
        type = types.submodule { freeformType = types.attrsOf types.anything; };
        default = { };
      };
    };

    environment = {
      etc = opt (types.attrsOf etcFile) { };
      systemPackages = list types.package;
    };

    users = {
      users = opt (types.attrsOf user) { };
      groups = opt (types.attrsOf group) { };
      defaultUserShell = nullOr (types.either types.shellPackage types.path);
    };

    services = {
      dbus.packages = list types.path;
      openssh = {
        enable = bool false;
        ports = opt (types.listOf port) [ 22 ];
        openFirewall = bool true;
        authorizedKeysFiles = list types.str;
        settings = mkOption {
          type = types.submodule { freeformType = types.attrsOf types.anything; };
          default = { };
        };
      };
      tailscale = {
        enable = bool false;
        openFirewall = bool false;
        interfaceName = opt types.str "tailscale0";
        package = opt types.package pkgs.tailscale;
      };
    };

    programs = {
      git = {
        enable = bool false;
        package = opt types.package pkgs.git;
        config = opt (types.either (types.attrsOf types.anything) (types.listOf (types.attrsOf types.anything))) { };
      };
      fish = {
        enable = bool false;
        interactiveShellInit = lines;
        loginShellInit = lines;
        shellAliases = opt (types.attrsOf (types.nullOr (types.either types.str types.path))) { };
      };
      bash.loginShellInit = lines;
      # nixos/modules/programs/nix-ld.nix: an enable option, and the
      # libraries as a list of packages (nixpkgs' default is a base set of
      # them; none here, nothing reads it).
      nix-ld = {
        enable = bool false;
        libraries = list types.package;
      };
    };

    systemd = {
      services = opt (types.attrsOf service) { };
      tmpfiles.rules = strs;
      network = {
        enable = bool false;
        networks = opt (types.attrsOf network) { };
      };
    };

    networking = {
      hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
      useDHCP = bool true;
      useNetworkd = bool false;
      useHostResolvConf = bool false;
      dhcpcd.extraConfig = lines;
      interfaces = opt (types.attrsOf interface) { };
      bridges = opt (types.attrsOf (types.submodule {
        options = {
          interfaces = mkOption { type = types.listOf types.str; };
          rstp = bool false;
        };
      })) { };
      networkmanager = {
        enable = bool false;
        unmanaged = strs;
      };
      firewall = firewallPorts // {
        enable = bool true;
        extraCommands = opt types.lines "";
        trustedInterfaces = strs;
        checkReversePath = opt (types.either types.bool (types.enum [ "strict" "loose" ])) true;
        interfaces = opt (types.attrsOf (types.submodule { options = firewallPorts; })) { };
      };
      nftables.enable = bool false;
      nat = {
        enable = bool false;
        internalInterfaces = strs;
        externalInterface = nullOr types.str;
      };
    };
  };
}
