# The voxnix daemon's configuration as the NixOS module renders it.
#
# Builtins only (no nixpkgs), so the test suite can evaluate it with Debian's
# Nix and compare it with the daemon's own loader (tests/nixos_module.rs):
#
#   nix-instantiate --eval --strict --json nix/default-settings.nix -A settings
#
# Result:
#   options       : the daemon's configuration keys (src/config.rs), each a
#                   setting { type, default, description }; a table is an
#                   attribute set of settings.  nix/module.nix turns every one
#                   into a typed option services.voxnix.settings.<key>.
#   defaults      : key -> the daemon's own default
#   typedDefaults : the defaults of services.voxnix's typed options
#   overlay       : { cfg, paths } -> the keys the typed options set
#   render        : { cfg, paths } -> the whole configuration file
#   settings      : render with every option at its default, i.e. what
#                   `services.voxnix.enable = true;` writes to
#                   /etc/voxnix/config.toml (nix/example-config.toml)
#   mapping       : typed option -> the configuration keys it sets
#   computed      : keys the module computes -> what they are
#   credentials   : typed options that become systemd credentials instead
#   units, credentialIds : names of the module's units and credentials
#
# A setting's `type` is one of the names nix/module.nix's `settingTypes` maps
# to an option type ("absolute path", "positive integer", "toml value" ...).
# A key whose default is "unset" (an Option that is None) cannot be rendered
# to TOML: leave it out here (it stays settable, `settings` is free-form).
#
# Tables the daemon does not have yet ([nix], [storage], [telegram], [llm],
# [credentials]) are rendered only once `options` declares them: until then
# the configuration still loads with the daemon of the same tree, and the
# typed options that feed them only produce a warning.  Adding a table to
# src/config.rs means adding it here (the test suite says so).
{ library ? import ./library.nix { } }:

let
  setting = type: default: description: {
    _voxnixSetting = true;
    inherit type default description;
  };

  isSetting = v: builtins.isAttrs v && v ? _voxnixSetting;

  # Mirrors voxnix::config::Config::default(), key for key.
  options = {
    state_dir = setting "absolute path" "/var/lib/voxnix"
      "Where the daemon keeps its records of containers and operations.";
    conf_dir = setting "absolute path" "/etc/nixos-containers"
      "NixOS's container configuration directory (`container@NAME.service` reads `NAME.conf` there).";
    containers_dir = setting "absolute path" "/var/lib/nixos-containers"
      "NixOS's container state directory: each container's root is `<containers_dir>/NAME`, removed on destroy (the module sets it from `system.stateVersion`).";
    bridge = setting "interface name" "br-vox"
      "The bridge containers join (`HOST_BRIDGE`). Set `services.voxnix.network.bridge` instead: the module creates that bridge.";
    builder = setting "builder" "nix"
      "How containers' systems are built: `nix` (the only one on a real host; `host-image` exists for the sandbox appliance only).";
    modules = setting "module names" [ ]
      "Module names the daemon accepts until it reads the Nix module library. The module sets it to the library's modules plus `extraModules`.";
    start_timeout_secs = setting "positive integer" 120
      "Seconds to wait for a container's start job.";
    stop_timeout_secs = setting "positive integer" 60
      "Seconds to wait for a container's stop job.";
    address_wait_secs = setting "unsigned integer" 20
      "Seconds a create waits for the container's first IPv4 address.";
    view_reconcile_secs = setting "positive integer" 30
      "How often the daemon's in-memory view of its containers is checked against systemd and machined, repairing a missed signal (seconds).";
    proc_root = setting "absolute path" "/proc"
      "Where the host's `/proc` is (containers' buses are reached through it).";
    journal_root = setting "absolute path" "/"
      "Root under which the journal directories are.";
    exec_max_timeout_secs = setting "unsigned integer" 300
      "The longest an exec may run, in seconds.";
    exec_max_output_bytes = setting "unsigned integer" 1048576
      "Bytes of stdout and of stderr an exec returns at most.";
    frontend_group = setting "group name" "voxnix"
      "The group whose members (the front ends' service users) may call the API for owners they name. Must stay `voxnix`: the D-Bus policy names that group.";
    frontend_owner_kinds = setting "strings" [ "telegram" ]
      "Owner kinds front ends may act for (`telegram` lets them act as `telegram:<chat id>`).";
    max_containers_per_owner = setting "u32" 10
      "Containers one owner may have at once.";
    expose_host_ports = setting "string" ""
      "Host ports `voxnix expose --to host` may hand out, `LOW-HIGH` (e.g. `20000-20099`); empty: no container port is put on the host. Set `services.voxnix.expose.hostPorts` instead (checked by an assertion).";
    expose_max_per_owner = setting "u32" 4
      "Ports one owner may have exposed at once (host and tailnet), over all their containers.";
    connect_jump_host = setting "string" ""
      "What `voxnix connect` names as the ProxyJump to reach a container through the host (e.g. `me@myserver.example`); empty: the host's name.";
    default_memory_max = setting "string" "4G"
      "A container's memory limit when its spec gives none (`none`: no limit).";
    max_memory_max = setting "string" "32G"
      "The most memory a spec may ask for (`none`: no cap).";
    default_tasks_max = setting "unsigned integer" 4096
      "A container's task (process and thread) limit when its spec gives none (0: systemd's default).";
    max_tasks_max = setting "unsigned integer" 32768
      "The most tasks a spec may ask for (0: no cap).";
    max_cpu_weight = setting "positive integer" 1000
      "The highest CPU weight a spec may ask for (systemd's default weight is 100).";
    owner_memory_max = setting "string" "50%"
      "The memory all of one owner's containers may use together, held by the owner's slice: a size (`16G`), a share of the host's memory (`50%`), or `none`.";
    owner_tasks_max = setting "unsigned integer" 16384
      "The tasks all of one owner's containers may run together (0: no total).";
    owner_cpu_weight = setting "positive integer" 100
      "The CPU weight of each owner's slice: under contention owners share the CPU by these weights, however many containers each runs.";
    tailscale_api_url = setting "string" "https://api.tailscale.com"
      "The Tailscale API's base URL (for the OAuth client's keys).";
    tailscale_tailnet = setting "string" "-"
      "The tailnet containers' keys are minted for (`-`: the OAuth client's own).";
    tailscale_tag_prefix = setting "string" "tag:voxnix-"
      "Prefix of each owner's Tailscale tag (`tag:voxnix-telegram-123`); the tailnet policy must let the OAuth client apply these tags.";
    admin_owners = setting "strings" [ ]
      "Owners (`telegram:123`, `unix:1000`) a front end, or a local user as itself, may call the administrator's HostHealth for. The Telegram admins (`telegram.admin_chat_ids`) are included without being listed.";
    nix = {
      nix_bin_dir = setting "absolute path" "/run/current-system/sw/bin"
        "Directory holding nix-instantiate, nix-store and nix-env (the module sets it).";
      library_dir = setting "absolute path" "/usr/share/voxnix"
        "The voxnix tree holding nix/ and modules/ (the module sets it, with extraModules).";
      entry = setting "string" "nix/buildContainer.nix"
        "The expression evaluated for a container, relative to library_dir.";
      profiles_dir = setting "absolute path" "/nix/var/nix/profiles/per-container"
        "Per-container profiles (GC roots of the systems), as NixOS's imperative containers use.";
      gcroots_dir = setting "absolute path" "/nix/var/nix/gcroots/voxnix"
        "GC roots of containers' derivations.";
      build_timeout_secs = setting "positive integer" 3600
        "The longest a whole build may take.";
      eval_timeout_secs = setting "positive integer" 120
        "The longest a read-only evaluation (the module catalog) may take.";
      extra_options = setting "toml value" [ ]
        "`--option NAME VALUE` pairs for every Nix command, e.g. `[[\"sandbox\", \"false\"]]`.";
      cache_keep_days = setting "u32" 30
        "The system cache: days a built system no container uses any more is kept (0: it goes with its last container).";
      cache_max_entries = setting "u32" 64
        "The system cache: unused systems kept at most, the most recently used first (0: no limit).";
      prewarm = setting "toml value" [ ]
        "Module sets built into the system cache when the daemon starts (so after each activation that changes them), e.g. `[[\"git\" \"fish\"] [\"dev\"]]`: a first create with one of them needs no Nix work.";
    };
    storage = {
      backend = setting "storage backend" "dir"
        "Where workspaces live: `zfs` (datasets with quotas) or `dir` (plain directories; quotas accounted at create time).";
      dir_root = setting "absolute path" "/var/lib/voxnix/storage"
        "dir backend: where the owners' directories are.";
      zfs_pool = setting "string" "tank"
        "zfs backend: the pool.";
      zfs_parent = setting "string" "voxnix"
        "zfs backend: the dataset under the pool that holds everything (`tank/voxnix/users/...`).";
      mount_root = setting "absolute path" "/var/lib/voxnix/workspaces"
        "zfs backend: where `<zfs_pool>/<zfs_parent>` is mounted.";
      user_quota = setting "string" "10G"
        "Each owner's limit for everything they have, as a size (`10G`) or `none`.";
      keep_snapshots = setting "u32" 10
        "Retention: snapshots kept per container, newest first (0: no limit).";
      keep_days = setting "u32" 7
        "Retention: days a snapshot, and a destroyed container's workspace, is kept (0: no limit).";
      snapshot_schedule = setting "string" ""
        "Scheduled snapshots of every workspace, one an hour at most, and how many of them to keep: newest of each of the last N hours, days, weeks, months (`hourly=24,daily=7,weekly=4,monthly=6`; empty: no schedule). The schedule's snapshots are kept by these tiers, not by keep_snapshots and keep_days.";
      snapshot_schedule_max = setting "string" "hourly=48,daily=31,weekly=12,monthly=24"
        "The most of each tier a container's own schedule (`voxnix schedule NAME TIERS`) may keep; a tier left out is 0.";
      checkpoints_keep = setting "u32" 20
        "Checkpoints kept per container (its state before each change voxnix made, for `voxnix undo`), newest first; older ones go with their snapshots (0: no limit). Retention and the schedule never prune them.";
      zfs_bin = setting "string" "zfs"
        "The `zfs` program.";
    };
  };

  defaultsOf = opts:
    builtins.mapAttrs (_: v: if isSetting v then v.default else defaultsOf v) opts;

  defaults = defaultsOf options;

  # Recursive merge, right wins; lists and other values are replaced.
  update = a: b:
    a // builtins.mapAttrs
      (n: v:
        if builtins.isAttrs v && a ? ${n} && builtins.isAttrs a.${n} && !isSetting v
        then update a.${n} v
        else v)
      b;

  units = {
    daemon = "voxnix";
    telegram = "voxnix-telegram";
    dhcp = "voxnix-dnsmasq";
    zfsParent = "voxnix-zfs-parent";
  };

  # The systemd credentials (LoadCredential= ids) the bot reads from
  # $CREDENTIALS_DIRECTORY when [telegram] token_file and [llm] api_key_file
  # are not set (src/frontends/chat/config.rs).
  credentialIds = {
    telegramToken = "telegram-token";
    llmApiKey = "llm-api-key";
  };

  # The defaults of the typed options of services.voxnix (nix/module.nix uses
  # these as its option defaults, so there is one source for both).
  typedDefaults = {
    network = {
      bridge = "br-vox";
      address = "10.100.0.1/24";
      dhcpRange = null;
      externalInterface = null;
      nat = true;
    };
    storage = {
      backend = "dir";
      root = "/var/lib/voxnix/storage";
      userQuota = "10G";
      zfs = {
        pool = "tank";
        parent = "voxnix";
        importPool = true;
      };
    };
    telegram = {
      enable = false;
      tokenFile = null;
      allowedChatIds = [ ];
      adminChatIds = [ ];
    };
    llm = {
      baseUrl = null;
      model = null;
      apiKeyFile = null;
    };
    tailscale = {
      authKeyFile = null;
      oauthClientId = null;
      oauthClientSecretFile = null;
    };
    expose = {
      hostPorts = null;
      openFirewall = false;
    };
    accessFile = null;
    extraModules = { };
  };

  # Paths the module computes from packages; these stand in for them when the
  # configuration is rendered without nixpkgs (tests, the example file).
  examplePaths = {
    nixpkgs = "/nix/store/00000000000000000000000000000000-nixpkgs";
    library = "/nix/store/00000000000000000000000000000000-voxnix-library";
    nixBin = "/nix/store/00000000000000000000000000000000-nix/bin";
    zfsBin = "/nix/store/00000000000000000000000000000000-zfs/bin/zfs";
    # NixOS's container configuration and state directories for
    # system.stateVersion >= 22.05.
    containerConfDir = "/etc/nixos-containers";
    containerStateDir = "/var/lib/nixos-containers";
  };

  # Typed option -> the configuration key(s) it sets (`.` separates tables).
  mapping = {
    "network.bridge" = [ "bridge" ];
    "extraModules" = [ "modules" ];
    "nixpkgs" = [ "nix.nixpkgs" ];
    "storage.backend" = [ "storage.backend" ];
    "storage.root" = [ "storage.dir_root" "storage.mount_root" ];
    "storage.userQuota" = [ "storage.user_quota" ];
    "storage.zfs.pool" = [ "storage.zfs_pool" ];
    "storage.zfs.parent" = [ "storage.zfs_parent" ];
    "telegram.allowedChatIds" = [ "telegram.allowed_chat_ids" ];
    "telegram.adminChatIds" = [ "telegram.admin_chat_ids" ];
    "llm.baseUrl" = [ "llm.base_url" ];
    "llm.model" = [ "llm.model" ];
    "tailscale.authKeyFile" = [ "tailscale_auth_key_file" ];
    "tailscale.oauthClientId" = [ "tailscale_oauth_client_id" ];
    "tailscale.oauthClientSecretFile" = [ "tailscale_oauth_client_secret_file" ];
    "accessFile" = [ "access_file" ];
    "expose.hostPorts" = [ "expose_host_ports" ];
  };

  # Keys the module computes (no typed option of their own).
  computed = {
    "conf_dir" = "NixOS's container configuration directory: /etc/nixos-containers, or /etc/containers on hosts whose system.stateVersion is older than 22.05";
    "containers_dir" = "NixOS's container state directory: /var/lib/nixos-containers, or /var/lib/containers on hosts whose system.stateVersion is older than 22.05";
    "nix.library_dir" = "the module library: nix/ and modules/ of this source, plus extraModules";
    "nix.nix_bin_dir" = "the bin directory of nix.package";
    "storage.zfs_bin" = "boot.zfs.package's zfs (zfs backend only)";
  };

  # Typed options that reach a service, not the configuration file.
  credentials = {
    "telegram.tokenFile" = "LoadCredential ${credentialIds.telegramToken} of ${units.telegram}.service";
    "llm.apiKeyFile" = "LoadCredential ${credentialIds.llmApiKey} of ${units.telegram}.service";
  };

  # Tables the typed options feed that the daemon may not have yet.
  # [telegram] and [llm] are the front ends' tables: the daemon keeps them
  # opaque (no defaults to mirror), so they are always rendered when set.
  frontEndTables = [ "telegram" "llm" ];

  pendingTables = builtins.filter (t: !(options ? ${t}) && !(builtins.elem t frontEndTables))
    [ "nix" "storage" "telegram" "llm" ];

  table = name: value:
    if options ? ${name} || builtins.elem name frontEndTables then { ${name} = value; } else { };

  dropNulls = attrs:
    builtins.removeAttrs attrs (builtins.filter (n: attrs.${n} == null) (builtins.attrNames attrs));

  # The keys services.voxnix's typed options set.  `cfg` is shaped like
  # config.services.voxnix (only the typed options are read); `paths` has
  # nixpkgs, library, nixBin, zfsBin, containerConfDir and containerStateDir.
  overlay = { cfg, paths }:
    let
      tg = cfg.telegram;
      llm = cfg.llm;
      st = cfg.storage;
    in
    {
      bridge = cfg.network.bridge;
      conf_dir = paths.containerConfDir;
      containers_dir = paths.containerStateDir;
      modules = builtins.sort builtins.lessThan
        (library.names ++ builtins.attrNames cfg.extraModules);
    }
    // table "nix" {
      nixpkgs = toString paths.nixpkgs;
      library_dir = toString paths.library;
      nix_bin_dir = toString paths.nixBin;
    }
    // table "storage" ({
      backend = st.backend;
      dir_root = st.root;
      mount_root = st.root;
      user_quota = st.userQuota;
      zfs_pool = st.zfs.pool;
      zfs_parent = st.zfs.parent;
    } // (if st.backend == "zfs" then { zfs_bin = toString paths.zfsBin; } else { }))
    # The secrets are not keys: the bot reads them as credentials.
    // (if tg.enable then
      table "telegram" {
        allowed_chat_ids = tg.allowedChatIds;
        admin_chat_ids = tg.adminChatIds;
      }
    else { })
    // (if llm.baseUrl != null then
      table "llm" (dropNulls { base_url = llm.baseUrl; model = llm.model; })
    else { })
    # A path to a secret file (never the secret): the daemon passes it to
    # nspawn as the container's credential tailscale-auth-key.
    // (if cfg.tailscale.authKeyFile != null then
      { tailscale_auth_key_file = toString cfg.tailscale.authKeyFile; }
    else { })
    # The OAuth client: its id, and the path of its secret (never the secret).
    // (if cfg.tailscale.oauthClientId != null then
      { tailscale_oauth_client_id = cfg.tailscale.oauthClientId; }
    else { })
    // (if cfg.tailscale.oauthClientSecretFile != null then
      { tailscale_oauth_client_secret_file = toString cfg.tailscale.oauthClientSecretFile; }
    else { })
    # A path (never the lists): who may use the appliance stays out of the
    # store; the daemon and the bot read the file and add its lists.
    // (if cfg.accessFile != null then
      { access_file = toString cfg.accessFile; }
    else { })
    # { from, to } as the daemon reads it: "FROM-TO".
    // (if cfg.expose.hostPorts != null then
      { expose_host_ports = "${toString cfg.expose.hostPorts.from}-${toString cfg.expose.hostPorts.to}"; }
    else { });

  render = { cfg ? typedDefaults, paths ? examplePaths }:
    update defaults (overlay { cfg = update typedDefaults cfg; inherit paths; });
in
{
  inherit options defaults typedDefaults examplePaths mapping computed credentials
    pendingTables overlay render units credentialIds isSetting;
  settings = render { };
}
