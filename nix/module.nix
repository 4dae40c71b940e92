# services.voxnix: the voxnix daemon and everything a NixOS host needs around
# it (the D-Bus policy, the container bridge with DHCP, DNS and NAT, storage,
# the Telegram front end).  Every option is documented in docs/nixos.md.
#
# The daemon's configuration (/etc/voxnix/config.toml) is rendered from
# `settings` with pkgs.formats.toml.  Every key the daemon has is a typed
# option under `settings` (generated from nix/default-settings.nix, which the
# test suite compares with src/config.rs); the typed options above it
# (network.bridge, storage.*, telegram.*, ...) feed their keys with
# mkDefault, so `settings` always has the last word.
{ config, lib, pkgs, ... }:

let
  inherit (lib)
    mkOption mkEnableOption mkIf mkMerge mkDefault types literalExpression
    optional optionals concatMapStrings concatStringsSep attrNames
    escapeShellArg escapeShellArgs;

  cfg = config.services.voxnix;

  library = import ./library.nix { };
  defaultSettings = import ./default-settings.nix { inherit library; };
  td = defaultSettings.typedDefaults;
  units = defaultSettings.units;

  format = pkgs.formats.toml { };
  configFile = format.generate "voxnix-config.toml" cfg.settings;

  # ---- settings: one typed option per daemon key ---------------------------

  settingTypes = {
    "absolute path" = types.strMatching "/.*";
    "interface name" = types.strMatching "[A-Za-z0-9_.-]{1,15}";
    "builder" = types.enum [ "nix" "host-image" ];
    "storage backend" = types.enum [ "dir" "zfs" ];
    "module names" = types.listOf (types.strMatching "[a-z0-9-]+");
    "positive integer" = types.ints.positive;
    "unsigned integer" = types.ints.unsigned;
    "u32" = types.ints.u32;
    "group name" = types.str;
    "strings" = types.listOf types.str;
    "string" = types.str;
    "boolean" = types.bool;
    "map of absolute paths" = types.attrsOf (types.strMatching "/.*");
    # Any TOML value (lists of pairs, floats ...), when nothing narrower fits:
    # the format's own type is exactly that (a oneOf of TOML's kinds).
    "toml value" = format.type;
  };

  settingType = t:
    settingTypes.${t} or (throw "voxnix: nix/default-settings.nix uses an unknown setting type '${t}'");

  mkSettingOptions = prefix: decls:
    lib.mapAttrs
      (name: decl:
        let key = concatStringsSep "." (prefix ++ [ name ]); in
        if defaultSettings.isSetting decl then
          mkOption {
            type = settingType decl.type;
            default = decl.default;
            description = "${decl.description} (daemon key `${key}`)";
          }
        else
          mkOption {
            type = types.submodule {
              freeformType = format.type;
              options = mkSettingOptions (prefix ++ [ name ]) decl;
            };
            default = { };
            description = "The daemon's `[${key}]` table.";
          })
      decls;

  # ---- network --------------------------------------------------------------

  bridge = cfg.network.bridge;
  addressParts = builtins.match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)/([0-9]+)" cfg.network.address;
  octet = i: builtins.elemAt addressParts i;
  hostAddress = concatStringsSep "." (map octet [ 0 1 2 3 ]);
  # What containers may send on the bridge (the sandbox loads the same file).
  bridgeFilter = pkgs.writeText "voxnix-bridge-filter.nft" (
    builtins.replaceStrings [ "@GATEWAY@" "@BRIDGE@" ] [ hostAddress bridge ]
      (builtins.readFile ../data/nftables/bridge-filter.nft)
  );
  # dnsmasq's lease script: keeps the filter's set of leases current.
  leaseHook = pkgs.writeShellScript "voxnix-lease-hook" (
    builtins.replaceStrings [ "@NFT@" "@PATH@" ]
      [ "${pkgs.nftables}/bin/nft" (lib.makeBinPath [ pkgs.coreutils pkgs.gnugrep pkgs.gnused ]) ]
      (builtins.readFile ../data/nftables/lease-hook.sh)
  );
  prefixLength = lib.toInt (octet 4);
  dhcpRange =
    if cfg.network.dhcpRange != null then cfg.network.dhcpRange
    else if prefixLength == 24 then
      let net = concatStringsSep "." (map octet [ 0 1 2 ]); in "${net}.100,${net}.200,12h"
    else null;

  # ---- host ports for `voxnix expose --to host` -------------------------------

  hostPorts = cfg.expose.hostPorts;
  # For messages only (assertions' messages are read even when they hold).
  hostPortsText = if hostPorts == null then "none" else "${toString hostPorts.from}-${toString hostPorts.to}";

  # ---- storage --------------------------------------------------------------

  # What the daemon is told is the one source of truth: the typed options
  # feed `settings` (with mkDefault), and everything the host needs around
  # storage (writable paths, tmpfiles, hardening, the parent dataset) is
  # derived from the final `settings`, so an override there moves it all.
  storageSettings = cfg.settings.storage;
  zfs = storageSettings.backend == "zfs";
  zfsPackage = config.boot.zfs.package;
  zfsParent = "${storageSettings.zfs_pool}/${storageSettings.zfs_parent}";
  # The directory workspaces are under: the dir backend's root, or where the
  # parent dataset is mounted.
  storageRoot = if zfs then storageSettings.mount_root else storageSettings.dir_root;

  # ---- NixOS's container paths ----------------------------------------------

  # nixos-containers.nix: hosts installed before 22.05 keep /etc/containers
  # and /var/lib/containers; container@.service reads the conf files there.
  containerPrefix = lib.optionalString (lib.versionAtLeast config.system.stateVersion "22.05") "nixos-";
  containerConfDir = "/etc/${containerPrefix}containers";
  containerStateDir = "/var/lib/${containerPrefix}containers";

  # ---- the module library the daemon builds containers from -----------------

  # nix/ without the host-side files (this module, the package, the tests).
  nixSources = builtins.path {
    name = "voxnix-nix";
    path = ./.;
    filter = path: type:
      type == "regular"
      && lib.hasSuffix ".nix" path
      && !(builtins.elem (baseNameOf path) [ "module.nix" "package.nix" "devshell.nix" "default-settings.nix" ]);
  };

  # An extra module is a file, or a directory with a default.nix. Its whole
  # directory is copied into the store (the file alone would break its
  # relative imports), so keep each extra module in a directory of its own:
  # everything beside it becomes world-readable in the store.
  extraModule = name:
    let
      given = cfg.extraModules.${name};
      isDir = builtins.pathExists (toString given + "/.");
      dir = if isDir then given else dirOf given;
      file = if isDir then "default.nix" else baseNameOf (toString given);
      copied = builtins.path { path = dir; name = "voxnix-extra-${name}"; };
    in
    {
      exists = builtins.pathExists given && (!isDir || builtins.pathExists (toString given + "/default.nix"));
      # The library's modules/NAME.nix: imports the file inside the copy.
      stub = "import ${copied}/${file}";
    };

  # nix/ and modules/ of this source, plus one file per extra module that
  # imports it from the copy of its directory.
  librarySource = pkgs.runCommandLocal "voxnix-library" { } (''
    mkdir -p $out/nix $out/modules
    cp ${nixSources}/*.nix $out/nix/
    cp ${../modules}/*.nix $out/modules/
  '' + concatMapStrings
    (name: ''
      echo ${escapeShellArg (extraModule name).stub} > $out/modules/${name}.nix
    '')
    (builtins.filter (n: (extraModule n).exists) extraNames));

  extraNames = attrNames cfg.extraModules;
  missingExtraNames = builtins.filter (n: !(extraModule n).exists) extraNames;
  badExtraNames = builtins.filter (n: builtins.match "[a-z][a-z0-9-]*" n == null) extraNames;
  clashingExtraNames = builtins.filter (n: builtins.elem n library.names) extraNames;

  # ---- what the typed options put into the configuration --------------------

  rendered = defaultSettings.overlay {
    inherit cfg;
    paths = {
      # toString: the path as it is, never a copy of nixpkgs in the store.
      nixpkgs = toString cfg.nixpkgs;
      containerConfDir = containerConfDir;
      containerStateDir = containerStateDir;
      library = "${librarySource}";
      nixBin = "${config.nix.package}/bin";
      zfsBin = "${zfsPackage}/bin/zfs";
    };
  };

  pending = table: builtins.elem table defaultSettings.pendingTables;
  pendingWarning = table: what:
    "services.voxnix: ${what} is not passed to the daemon: this voxnix has no [${table}] configuration table yet.";

  # ---- secrets --------------------------------------------------------------

  secretFile = description: mkOption {
    type = types.nullOr (types.strMatching "/.*");
    default = null;
    example = "/run/agenix/voxnix-secret";
    description = ''
      ${description} An absolute path as a string (e.g. `config.age.secrets.NAME.path`),
      read when the service starts; it is never copied into the Nix store (a Nix path
      value is refused for that reason).
    '';
  };

  # ---- the daemon's service --------------------------------------------------

  # The Nix builder's profiles and GC roots ([nix] profiles_dir and
  # gcroots_dir, with the builder's defaults while the table is not rendered).
  nixSettings = cfg.settings.nix or { };
  profilesDir = nixSettings.profiles_dir or "/nix/var/nix/profiles/per-container";
  gcrootsDir = nixSettings.gcroots_dir or "/nix/var/nix/gcroots/voxnix";

  daemonWritablePaths = lib.unique [
    cfg.settings.state_dir
    cfg.settings.conf_dir
    containerStateDir
    "-/etc/systemd/system.control"
    profilesDir
    "/nix/var/nix/gcroots/per-container"
    gcrootsDir
    storageRoot
  ];

  # See docs/nixos.md, "How the daemon is confined", for why each is needed.
  daemonCapabilities = [
    "CAP_CHOWN"
    "CAP_DAC_OVERRIDE"
    "CAP_DAC_READ_SEARCH"
    "CAP_FOWNER"
    "CAP_FSETID"
    "CAP_LINUX_IMMUTABLE"
    "CAP_SYS_PTRACE"
    # exec connects to a container's bus from inside its mount namespace
    # (setns); joining the mount namespace of a container without a user
    # namespace of its own takes both. (ZFS needs CAP_SYS_ADMIN as well.)
    "CAP_SYS_ADMIN"
    "CAP_SYS_CHROOT"
  ];

  # Hardening that needs no mount namespace of its own.
  daemonConfinement = {
    NoNewPrivileges = true;
    CapabilityBoundingSet = daemonCapabilities;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "~@clock"
      "~@cpu-emulation"
      "~@debug"
      "~@module"
      "~@obsolete"
      "~@raw-io"
      "~@reboot"
      "~@swap"
    ] ++ optional (!zfs) "~@mount";
    SystemCallErrorNumber = "EPERM";
    # No network sockets, but for the Tailscale API when the daemon mints
    # containers' keys with an OAuth client.
    RestrictAddressFamilies = [ "AF_UNIX" "AF_NETLINK" ]
      ++ optionals (cfg.tailscale.oauthClientId != null) [ "AF_INET" "AF_INET6" ];
    # Only the namespace kinds the daemon joins: user and mnt (exec reaches a
    # container's bus from inside it, src/host/ns_socket.rs) and net (its
    # address watch, src/host/addresses.rs); no unshare or clone of any kind.
    RestrictNamespaces = "user mnt net";
    RestrictRealtime = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    DevicePolicy = "closed";
    DeviceAllow = optional zfs "/dev/zfs rw";
  };

  # Hardening that gives the daemon a mount namespace: only when the daemon
  # mounts nothing itself (the dir backend).  ZFS datasets mounted inside a
  # unit's own namespace would never reach the host, where systemd-nspawn
  # (container@NAME.service) bind-mounts them.
  daemonNamespace = {
    ProtectSystem = "strict";
    ReadWritePaths = daemonWritablePaths;
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
  };

  # The bot finds them in $CREDENTIALS_DIRECTORY under these ids.
  telegramCredentials =
    optional (cfg.telegram.tokenFile != null)
      "${defaultSettings.credentialIds.telegramToken}:${cfg.telegram.tokenFile}"
    ++ optional (cfg.llm.apiKeyFile != null)
      "${defaultSettings.credentialIds.llmApiKey}:${cfg.llm.apiKeyFile}";
in
{
  options.services.voxnix = {
    enable = mkEnableOption "voxnix, personal NixOS containers managed by a D-Bus daemon";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The voxnix package (the daemon, the CLI and the front ends).";
    };

    nixpkgs = mkOption {
      type = types.path;
      default = pkgs.path;
      defaultText = literalExpression "pkgs.path";
      description = ''
        The nixpkgs containers are built from (the daemon's `nix.nixpkgs`). The default is
        the host's own nixpkgs, so containers share its store paths.
      '';
    };

    library = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      description = ''
        The module library the daemon builds containers from (nix/ and modules/ of this
        source, plus extraModules); the daemon's `nix.library_dir`.
      '';
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = format.type;
        options = mkSettingOptions [ ] defaultSettings.options;
      };
      default = { };
      example = literalExpression ''
        {
          max_containers_per_owner = 3;
          start_timeout_secs = 300;
        }
      '';
      description = ''
        The daemon's configuration, written to /etc/voxnix/config.toml. Every key the
        daemon has is an option here with the daemon's default; the typed options of
        services.voxnix set theirs with mkDefault, so a value here wins.
      '';
    };

    extraModules = mkOption {
      type = types.attrsOf types.path;
      default = td.extraModules;
      example = literalExpression "{ my-tools = ./voxnix/my-tools.nix; }";
      description = ''
        Your own container modules, name -> file (or a directory with a default.nix), added
        to the library (same format as the files in modules/: description, settings,
        credentials, module). Names must not clash with the library's. The file's whole
        directory is copied into the Nix store, so its relative imports keep working: keep
        each extra module in a directory of its own, with nothing secret beside it.
      '';
    };

    network = {
      bridge = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
        default = td.network.bridge;
        description = "The bridge containers join; the module creates it (daemon key `bridge`).";
      };

      address = mkOption {
        type = types.strMatching "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}";
        default = td.network.address;
        description = "The host's address on the bridge, with its prefix length: the containers' gateway and DNS server.";
      };

      dhcpRange = mkOption {
        type = types.nullOr types.str;
        default = td.network.dhcpRange;
        example = "10.100.0.50,10.100.0.250,12h";
        description = ''
          The addresses containers get, in dnsmasq's `dhcp-range` syntax (first,last[,lease time]).
          null: .100 to .200 of network.address's /24 (set it for other prefix lengths).
        '';
      };

      externalInterface = mkOption {
        type = types.nullOr types.str;
        default = td.network.externalInterface;
        example = "eth0";
        description = "The interface containers' traffic leaves by (NAT); null masquerades on every interface.";
      };

      nat = mkOption {
        type = types.bool;
        default = td.network.nat;
        description = "Give containers outside access through NAT from the bridge (also turns on IPv4 forwarding).";
      };
    };

    storage = {
      backend = mkOption {
        type = types.enum [ "zfs" "dir" ];
        default = td.storage.backend;
        description = ''
          Where containers' workspaces live: `dir` (plain directories under storage.root) or
          `zfs` (one dataset per workspace under storage.zfs.pool/storage.zfs.parent, mounted
          under storage.root). Daemon key `storage.backend`.
        '';
      };

      root = mkOption {
        type = types.strMatching "/.*";
        default = td.storage.root;
        description = "The host directory workspaces are under (the parent dataset's mountpoint with zfs). Daemon keys `storage.dir_root` and `storage.mount_root`.";
      };

      userQuota = mkOption {
        type = types.strMatching "none|[0-9]+(\\.[0-9]+)?[KMGTPkmgtp]";
        default = td.storage.userQuota;
        example = "50G";
        description = "Disk space one owner may use over all their workspaces (`none`: no limit). Daemon key `storage.user_quota`.";
      };

      zfs = {
        pool = mkOption {
          type = types.str;
          default = td.storage.zfs.pool;
          description = "The ZFS pool (daemon key `storage.zfs_pool`).";
        };

        parent = mkOption {
          type = types.strMatching "[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*";
          default = td.storage.zfs.parent;
          description = "The parent dataset, relative to the pool; the module creates it (daemon key `storage.zfs_parent`).";
        };

        importPool = mkOption {
          type = types.bool;
          default = td.storage.zfs.importPool;
          description = "Import the pool at boot (boot.zfs.extraPools) when it is not already imported for a file system.";
        };
      };
    };

    telegram = {
      enable = mkEnableOption "the Telegram bot (`voxnix telegram`), an unprivileged front end";

      tokenFile = secretFile "The file holding the bot token from @BotFather, passed to the bot as the systemd credential `telegram-token`.";

      allowedChatIds = mkOption {
        type = types.listOf types.int;
        default = td.telegram.allowedChatIds;
        example = [ 123456789 ];
        description = "Telegram chat ids that may use the bot; anyone else gets one refusal (daemon key `telegram.allowed_chat_ids`).";
      };

      adminChatIds = mkOption {
        type = types.listOf types.int;
        default = td.telegram.adminChatIds;
        example = [ 123456789 ];
        description = "Chat ids with the admin tools (host health); they may use the bot too (daemon key `telegram.admin_chat_ids`).";
      };
    };

    llm = {
      baseUrl = mkOption {
        type = types.nullOr types.str;
        default = td.llm.baseUrl;
        example = "http://127.0.0.1:11434/v1";
        description = "Base URL of an OpenAI-compatible API; null: no LLM, the bot answers slash commands only (daemon key `llm.base_url`).";
      };

      model = mkOption {
        type = types.nullOr types.str;
        default = td.llm.model;
        example = "qwen3:8b";
        description = "The model name to ask for (daemon key `llm.model`).";
      };

      apiKeyFile = secretFile "The file holding the API key, if the endpoint needs one, passed to the bot as the systemd credential `llm-api-key`.";
    };

    accessFile = secretFile ''
      A TOML file with the lists that name people: `admin_owners` and, under `[telegram]`,
      `allowed_chat_ids` and `admin_chat_ids`. They are added to the configuration's own
      and stay out of /etc/voxnix/config.toml, which is in the world-readable Nix store.
      It must be readable by root and the `voxnix` group only (agenix: owner root, group
      voxnix, mode 0440); a file every user can read is refused (daemon key `access_file`).
    '';

    tailscale = {
      oauthClientId = mkOption {
        type = types.nullOr (types.strMatching "[A-Za-z0-9]+");
        default = td.tailscale.oauthClientId;
        example = "k123456CNTRL";
        description = "The id of a Tailscale OAuth client with the `auth_keys` scope, allowed to apply the owners' tags (`settings.tailscale_tag_prefix`). With it, each start of a container with the tailscale module gets a key of its own: single-use, pre-authorized, tagged with the container's owner (daemon key `tailscale_oauth_client_id`).";
      };
      oauthClientSecretFile = secretFile "The file holding that OAuth client's secret (`tskey-client-...`), read by the daemon only (daemon key `tailscale_oauth_client_secret_file`).";
      authKeyFile = secretFile "A shared Tailscale auth key for containers with the tailscale module, used when no OAuth client is set; every such container's root can read it, so prefer the OAuth client (daemon key `tailscale_auth_key_file`).";
    };

    expose = {
      hostPorts = mkOption {
        type = types.nullOr (types.submodule {
          options = {
            from = mkOption {
              type = types.port;
              description = "The first host port of the range (at least 1024).";
            };
            to = mkOption {
              type = types.port;
              description = "The last host port of the range (at least `from`).";
            };
          };
        });
        default = td.expose.hostPorts;
        example = literalExpression "{ from = 20000; to = 20099; }";
        description = ''
          The host ports `voxnix expose --to host` may hand out, both ends included; each
          exposed container port gets one of them. null: no container port is put on the
          host (daemon key `expose_host_ports`, written `FROM-TO`).
        '';
      };

      openFirewall = mkOption {
        type = types.bool;
        default = td.expose.openFirewall;
        description = ''
          Also open expose.hostPorts in the host's own firewall
          (networking.firewall.allowedTCPPortRanges). Forwarding does not need it:
          systemd-nspawn rewrites the destination before routing (DNAT in
          PREROUTING), so that traffic is forwarded to the container and never
          meets the host's input rules. Opening the range lets in connections to
          host services that listen on those ports, too.
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = (cfg.tailscale.oauthClientId == null) == (cfg.tailscale.oauthClientSecretFile == null);
          message = "services.voxnix.tailscale.oauthClientId and oauthClientSecretFile go together: set both, or neither.";
        }
        {
          assertion = cfg.settings.frontend_group == "voxnix";
          message = "services.voxnix.settings.frontend_group must stay \"voxnix\": the D-Bus policy (org.voxnix.Voxnix1.conf) names that group.";
        }
        {
          assertion = cfg.settings.bridge == bridge;
          message = "services.voxnix: set the bridge with services.voxnix.network.bridge (the module creates that one), not settings.bridge.";
        }
        {
          assertion = cfg.settings.builder == "nix";
          message = "services.voxnix.settings.builder must be \"nix\" on a real host (host-image exists for the sandbox appliance only).";
        }
        {
          assertion = dhcpRange != null;
          message = "services.voxnix.network.dhcpRange: set it when network.address is not a /24.";
        }
        {
          assertion = badExtraNames == [ ];
          message = "services.voxnix.extraModules: invalid module name(s) ${concatStringsSep ", " badExtraNames} (use lower case letters, digits and '-', starting with a letter).";
        }
        {
          assertion = clashingExtraNames == [ ];
          message = "services.voxnix.extraModules: ${concatStringsSep ", " clashingExtraNames} already in the library; pick other names.";
        }
        {
          assertion = missingExtraNames == [ ];
          message = concatMapStrings
            (n: "services.voxnix.extraModules.${n}: ${toString cfg.extraModules.${n}} does not exist (give a .nix file, or a directory with a default.nix). ")
            missingExtraNames;
        }
        {
          assertion = cfg.settings.containers_dir == containerStateDir;
          message = "services.voxnix.settings.containers_dir must be ${containerStateDir}: NixOS keeps the containers' roots there on this host (system.stateVersion ${config.system.stateVersion}).";
        }
        {
          assertion = cfg.settings.conf_dir == containerConfDir;
          message = "services.voxnix.settings.conf_dir must be ${containerConfDir}: container@.service on this host (system.stateVersion ${config.system.stateVersion}) reads the containers' conf files there.";
        }
        {
          assertion = !cfg.telegram.enable || cfg.telegram.tokenFile != null;
          message = "services.voxnix.telegram.tokenFile must be set when the Telegram bot is enabled.";
        }
        {
          assertion = cfg.llm.baseUrl == null || cfg.llm.model != null;
          message = "services.voxnix.llm.model must be set when llm.baseUrl is.";
        }
        {
          assertion = config.nix.enable;
          message = "services.voxnix builds containers through the Nix daemon: nix.enable must be true.";
        }
        # The daemon refuses such a range at start-up (src/config.rs): say
        # so at evaluation instead.
        {
          assertion = hostPorts == null || hostPorts.from >= 1024;
          message = "services.voxnix.expose.hostPorts: from must be at least 1024 (lower ports are privileged), got ${hostPortsText}.";
        }
        {
          assertion = hostPorts == null || hostPorts.from <= hostPorts.to;
          message = "services.voxnix.expose.hostPorts: from must not be above to, got ${hostPortsText}.";
        }
      ];

      warnings =
        optional (pending "storage" && zfs) (pendingWarning "storage" "storage.backend = \"zfs\"")
        ++ optional (pending "telegram" && cfg.telegram.enable) (pendingWarning "telegram" "telegram.*")
        ++ optional (pending "llm" && cfg.llm.baseUrl != null) (pendingWarning "llm" "llm.*")
        ++ optional (pending "credentials" && cfg.tailscale.authKeyFile != null)
          (pendingWarning "credentials" "tailscale.authKeyFile")
        ++ optional (cfg.tailscale.authKeyFile != null && cfg.tailscale.oauthClientId == null)
          "services.voxnix.tailscale.authKeyFile is one key for every container with the tailscale module, readable by each one's root: any owner can copy it and join devices of their own. Set tailscale.oauthClientId and oauthClientSecretFile instead, for a single-use key per container and start."
        ++ optional (cfg.telegram.enable && cfg.telegram.allowedChatIds == [ ] && cfg.telegram.adminChatIds == [ ] && cfg.accessFile == null)
          "services.voxnix.telegram: allowedChatIds and adminChatIds are empty, so the bot refuses everyone."
        ++ optional (cfg.telegram.allowedChatIds != [ ] || cfg.telegram.adminChatIds != [ ] || (cfg.settings.admin_owners or [ ]) != [ ])
          "services.voxnix: telegram.allowedChatIds, telegram.adminChatIds and settings.admin_owners go into /etc/voxnix/config.toml in the world-readable Nix store, where every local user and every container can read who uses this appliance; put them in services.voxnix.accessFile instead.";

      services.voxnix.settings = lib.mapAttrsRecursive (_: mkDefault) rendered;
      services.voxnix.library = librarySource;

      environment.etc."voxnix/config.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      # container@.service, nixos-container and machined's integration.
      boot.enableContainers = true;

      # Before NixOS's start script runs mkdir/chmod/touch (as root, following
      # links) on a container's tree: links and odd files in those places are
      # removed, for every container of the host (src/host/container_root.rs).
      systemd.services."container@".serviceConfig.ExecStartPre = [
        "${lib.getExe cfg.package} container-pre-start ${containerStateDir}/%i"
      ];

      # Only root owns org.voxnix.Voxnix1; the front-end group may call the
      # Manager interface (share/dbus-1/system.d of the package).
      services.dbus.packages = [ cfg.package ];
      users.groups.voxnix = { };

      # Modes as NixOS's own container tools make them: the per-container
      # profiles (each container's system generations) root-only, as
      # nixos-container does.
      systemd.tmpfiles.rules = [
        "d ${cfg.settings.conf_dir} 0755 root root -"
        "d ${cfg.settings.state_dir} 0700 root root -"
        "d ${containerStateDir} 0700 root root -"
        "d /etc/systemd/system.control 0755 root root -"
        "d ${profilesDir} 0700 root root -"
        "d /nix/var/nix/gcroots/per-container 0755 root root -"
        "d ${gcrootsDir} 0755 root root -"
      ] ++ optional (!zfs) "d ${storageRoot} 0700 root root -";

      systemd.services.${units.daemon} = {
        description = "voxnix daemon: NixOS containers over D-Bus";
        wantedBy = [ "multi-user.target" ];
        wants = [ "systemd-machined.service" "${units.dhcp}.service" ];
        after = [
          "dbus.service"
          "systemd-machined.service"
          "network.target"
          "nix-daemon.socket"
          "${units.dhcp}.service"
        ] ++ optional zfs "${units.zfsParent}.service";
        requires = optional zfs "${units.zfsParent}.service";
        restartTriggers = [ configFile ];
        path = [ config.nix.package ] ++ optional zfs zfsPackage;
        environment = {
          # Evaluate and build through nix-daemon: builds run sandboxed as
          # build users, and the daemon needs no write access to the store.
          NIX_REMOTE = "daemon";
          HOME = "/var/cache/voxnix";
          XDG_CACHE_HOME = "/var/cache/voxnix";
          VOXNIX_LOG = "info";
        };
        serviceConfig = {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${lib.getExe cfg.package} daemon --config /etc/voxnix/config.toml";
          Restart = "on-failure";
          RestartSec = 2;
          WatchdogSec = 30;
          StateDirectory = "voxnix";
          StateDirectoryMode = "0700";
          CacheDirectory = "voxnix";
          CacheDirectoryMode = "0700";
        } // daemonConfinement // lib.optionalAttrs (!zfs) daemonNamespace;
      };
    }

    # ---- the bridge, DHCP and DNS on it, NAT out ----------------------------
    {
      networking.bridges.${bridge}.interfaces = [ ];
      networking.interfaces.${bridge} = {
        useDHCP = false;
        ipv4.addresses = [{ address = hostAddress; prefixLength = prefixLength; }];
      };
      networking.networkmanager.unmanaged = mkIf config.networking.networkmanager.enable [ bridge ];
      # With systemd-networkd the bridge is network 40-<bridge>: it has no
      # carrier until a container joins, so configure it anyway and do not
      # make network-online.target wait for it.
      systemd.network.networks."40-${bridge}" = mkIf config.networking.useNetworkd {
        networkConfig.ConfigureWithoutCarrier = true;
        linkConfig.RequiredForOnline = "no";
      };

      # Containers may ask the host for addresses and names, nothing else.
      networking.firewall.interfaces.${bridge} = {
        allowedUDPPorts = [ 53 67 ];
        allowedTCPPorts = [ 53 ];
      };

      # The host ports `voxnix expose --to host` hands out, which
      # systemd-nspawn forwards to the container's port.
      networking.firewall.allowedTCPPortRanges = mkIf (hostPorts != null && cfg.expose.openFirewall)
        [{ inherit (hostPorts) from to; }];

      # Containers never reach each other on the bridge, nor pose as a DHCP
      # or router-advertisement server, as the gateway or as a neighbour's
      # address (data/nftables).
      # Loaded again whenever the firewall's own rules are, restarted or
      # reloaded (a flush would drop this table).
      systemd.services."voxnix-bridge-filter" = {
        description = "voxnix: what containers may send on ${bridge}";
        wantedBy = [ "multi-user.target" ];
        before = [ "${units.daemon}.service" ];
        after = [ "network-pre.target" "nftables.service" "firewall.service" ];
        partOf = [ "nftables.service" "firewall.service" ];
        # nftables.service reloads with `flush ruleset`, which drops this
        # table too (restarts and stops already reach it through partOf).
        unitConfig.ReloadPropagatedFrom = [ "nftables.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.nftables}/bin/nft -f ${bridgeFilter}";
          # Loaded anew, the set of leases is empty: fill it from the lease file.
          ExecStartPost = "${leaseHook} reload /var/lib/${units.dhcp}/leases";
          ExecReload = [
            "-${pkgs.nftables}/bin/nft delete table bridge voxnix"
            "-${pkgs.nftables}/bin/nft delete table inet voxnix"
            "${pkgs.nftables}/bin/nft -f ${bridgeFilter}"
            "${leaseHook} reload /var/lib/${units.dhcp}/leases"
          ];
          ExecStop = [
            "-${pkgs.nftables}/bin/nft delete table bridge voxnix"
            "-${pkgs.nftables}/bin/nft delete table inet voxnix"
          ];
        };
      };

      # Exposed host ports reach only the container holding them: nspawn
      # forwards a HOST_PORT to whatever address the container gives itself
      # (a neighbour's, the host's), so the daemon writes a ruleset from its
      # records (src/host/expose_filter.rs) and restarts this unit after
      # each change; at boot it loads the last one, before any container.
      # No ExecStop: stopping it would only open the way.
      systemd.services."voxnix-expose-filter" = {
        description = "voxnix: each container port speaks as its own MAC, exposed host ports reach only their containers";
        wantedBy = [ "multi-user.target" ];
        before = [ "${units.daemon}.service" "machines.target" ];
        after = [ "network-pre.target" "nftables.service" "firewall.service" ];
        partOf = [ "nftables.service" "firewall.service" ];
        # nftables.service reloads with `flush ruleset`: load it again.
        unitConfig = {
          ReloadPropagatedFrom = [ "nftables.service" ];
          ConditionPathExists = "${cfg.settings.state_dir}/expose-filter.nft";
          # Restarted at every expose, unexpose and start of a container
          # with a host port: never refused for coming often (systemd's
          # default start limit, 5 in 10 s, would fail the sixth expose).
          StartLimitIntervalSec = 0;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.nftables}/bin/nft -f ${cfg.settings.state_dir}/expose-filter.nft";
          ExecReload = "${pkgs.nftables}/bin/nft -f ${cfg.settings.state_dir}/expose-filter.nft";
        };
      };

      networking.nat = mkIf cfg.network.nat {
        enable = true;
        internalInterfaces = [ bridge ];
        externalInterface = mkIf (cfg.network.externalInterface != null) cfg.network.externalInterface;
      };

      users.users.${units.dhcp} = {
        isSystemUser = true;
        group = units.dhcp;
        description = "voxnix DHCP and DNS for containers";
      };
      users.groups.${units.dhcp} = { };

      systemd.tmpfiles.rules = [ "d /var/lib/${units.dhcp} 0750 ${units.dhcp} ${units.dhcp} -" ];

      # A dnsmasq of its own, bound to the bridge only: it works with scripted
      # networking and systemd-networkd alike and leaves services.dnsmasq free.
      systemd.services.${units.dhcp} = {
        description = "voxnix: DHCP and DNS for containers on ${bridge}";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        before = [ "${units.daemon}.service" ];
        serviceConfig = {
          ExecStart = escapeShellArgs [
            "${pkgs.dnsmasq}/bin/dnsmasq"
            "--keep-in-foreground"
            "--conf-file=/dev/null"
            "--pid-file="
            "--log-facility=-"
            "--user=${units.dhcp}"
            "--group=${units.dhcp}"
            "--interface=${bridge}"
            "--except-interface=lo"
            # Binds to the bridge's addresses whenever they appear.
            "--bind-dynamic"
            "--dhcp-range=${if dhcpRange == null then "" else dhcpRange}"
            "--dhcp-authoritative"
            # Names containers send are not published: no owner can look up
            # or list the others' containers.
            "--dhcp-ignore-names"
            "--dhcp-leasefile=/var/lib/${units.dhcp}/leases"
            # Each lease (MAC and address) into the bridge filter, which lets
            # a container speak to the host only as its own address.
            "--dhcp-script=${leaseHook}"
          ];
          Restart = "on-failure";
          RestartSec = 2;
          ProtectSystem = "strict";
          ReadWritePaths = [ "/var/lib/${units.dhcp}" ];
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          NoNewPrivileges = true;
          CapabilityBoundingSet = [
            "CAP_NET_BIND_SERVICE"
            "CAP_NET_RAW"
            "CAP_NET_ADMIN"
            "CAP_SETUID"
            "CAP_SETGID"
            "CAP_CHOWN"
            "CAP_DAC_OVERRIDE"
          ];
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" "AF_PACKET" ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
        };
      };
    }

    # ---- ZFS: the pool and the parent dataset --------------------------------
    (mkIf zfs {
      boot.supportedFilesystems = [ "zfs" ];
      boot.zfs.extraPools = mkIf cfg.storage.zfs.importPool [ storageSettings.zfs_pool ];

      systemd.services.${units.zfsParent} = {
        description = "voxnix: the parent dataset ${zfsParent}";
        wants = [ "zfs-import.target" ];
        after = [ "zfs-import.target" "zfs-mount.service" ];
        before = [ "${units.daemon}.service" ];
        path = [ zfsPackage ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          set -eu
          parent=${escapeShellArg zfsParent}
          root=${escapeShellArg storageRoot}
          if ! zfs list -H -o name "$parent" >/dev/null 2>&1; then
            zfs create -p -o mountpoint="$root" "$parent"
          elif [ "$(zfs get -H -o value mountpoint "$parent")" != "$root" ]; then
            zfs set mountpoint="$root" "$parent"
          fi
          if [ "$(zfs get -H -o value mounted "$parent")" != yes ]; then
            zfs mount "$parent"
          fi
          chmod 0700 "$root"
        '';
      };
    })

    # ---- the Telegram front end ----------------------------------------------
    (mkIf cfg.telegram.enable {
      users.users.${units.telegram} = {
        isSystemUser = true;
        group = units.telegram;
        # The front-end group: the bus lets it call the Manager interface and
        # the daemon lets it act for telegram:<chat id> owners.
        extraGroups = [ "voxnix" ];
        home = "/var/lib/${units.telegram}";
        description = "voxnix Telegram bot";
      };
      users.groups.${units.telegram} = { };

      systemd.services.${units.telegram} = {
        description = "voxnix Telegram bot";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" "${units.daemon}.service" ];
        after = [ "network-online.target" "${units.daemon}.service" ];
        restartTriggers = [ configFile ];
        environment.VOXNIX_LOG = "info";
        serviceConfig = {
          ExecStart = "${lib.getExe cfg.package} telegram";
          User = units.telegram;
          Group = units.telegram;
          SupplementaryGroups = [ "voxnix" ];
          # Copies readable by this unit only, under $CREDENTIALS_DIRECTORY;
          # the files themselves can stay root-only (agenix, sops-nix).
          LoadCredential = telegramCredentials;
          Restart = "on-failure";
          RestartSec = 10;
          StateDirectory = units.telegram;
          StateDirectoryMode = "0700";
          WorkingDirectory = "/var/lib/${units.telegram}";
          UMask = "0077";

          NoNewPrivileges = true;
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateIPC = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          RemoveIPC = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
          SystemCallErrorNumber = "EPERM";
          DevicePolicy = "closed";
        };
      };
    })
  ]);
}
