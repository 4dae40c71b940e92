# services.voxnix evaluated with nixpkgs' real lib (lib.evalModules), the
# NixOS options it uses (./nixos-options.nix) and a stand-in pkgs.
#
#   nix-instantiate --eval --strict --json --readonly-mode nix/tests/eval/host.nix -A cases.defaults
#
# Each case is a NixOS configuration fragment on top of
# `services.voxnix.enable = true`; its result is everything the module
# produces, forced: the whole configuration (every unit, every file under
# environment.etc with its text, tmpfiles, users, networking), the value the
# daemon's config.toml is rendered from, the failed assertions' messages and
# the warnings. `assertionCases` each make one assertion fire.
#
# `root` is the voxnix tree to evaluate (the mutation tests pass a copy).
{ root ? ../../..
, nixpkgsLib ? import ./nixpkgs-lib.nix { }
}:

let
  inherit (nixpkgsLib) lib;
  pkgs = import ./pkgs.nix { inherit lib; };

  # A module given as a path, as the flake exports it.
  voxnixModule = root + "/nix/module.nix";

  evalHost = fragment: lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = pkgs; }
      voxnixModule
      { services.voxnix.enable = true; }
      fragment
    ];
  };

  plain = import ./plain.nix;

  # What a forced configuration looks like to a test.
  summarize = config:
    let
      etcText = f: f.source.drvAttrs.text or null;
      library = config.services.voxnix.settings.nix.library_dir or null;
    in
    {
      config = plain (builtins.removeAttrs config [ "_module" ]);
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      assertionCount = builtins.length config.assertions;
      inherit (config) warnings;
      etc = builtins.mapAttrs
        (_: f: {
          inherit (f) enable target mode;
          source = toString f.source;
          text = etcText f;
        })
        config.environment.etc;
      # The value pkgs.formats.toml's generate turns into config.toml.
      configToml = plain config.environment.etc."voxnix/config.toml".source.drvAttrs.value;
      # The script that assembles the module library (extraModules' stubs).
      library = config.services.voxnix.library.drvAttrs.buildCommand;
      package = {
        name = config.services.voxnix.package.name;
        src = toString (config.services.voxnix.package.drvAttrs.src or "");
      };
    };

  run = fragment: summarize (evalHost fragment).config;

  # A store-shaped stand-in for a secret's path (never a Nix path value).
  secret = name: "/run/agenix/${name}";

  # Every option of services.voxnix away from its default.
  everything = {
    services.voxnix = {
      package = pkgs.stdenv.mkDerivation { pname = "voxnix-custom"; version = "9.9"; meta.mainProgram = "voxnix"; };
      nixpkgs = /srv/nixpkgs;
      network = {
        bridge = "br-test";
        address = "10.1.2.1/24";
        dhcpRange = "10.1.2.10,10.1.2.20,1h";
        externalInterface = "eth9";
        nat = false;
      };
      storage = {
        backend = "zfs";
        root = "/srv/voxnix";
        userQuota = "25G";
        zfs = { pool = "rpool"; parent = "vox/ws"; importPool = false; };
      };
      telegram = {
        enable = true;
        tokenFile = secret "telegram";
        allowedChatIds = [ 1 2 ];
        adminChatIds = [ 3 ];
      };
      llm = {
        baseUrl = "http://127.0.0.1:11434/v1";
        model = "some-model";
        apiKeyFile = secret "llm";
      };
      tailscale = {
        authKeyFile = secret "tailscale";
        oauthClientId = "k123CNTRL";
        oauthClientSecretFile = secret "tailscale-oauth";
      };
      accessFile = secret "access";
      expose = { hostPorts = { from = 30000; to = 30009; }; openFirewall = false; };
      extraModules.my-tools = ./fixtures/extra-modules/my-tools/my-tools.nix;
      settings = {
        max_containers_per_owner = 3;
        start_timeout_secs = 300;
        admin_owners = [ "unix:1000" ];
        nix.build_timeout_secs = 600;
        nix.extra_options = [ [ "sandbox" "false" ] ];
        storage.keep_days = 30;
      };
    };
  };

  cases = {
    defaults = run { };
    everything = run everything;
    # Only `settings` says where storage is and which backend it uses: the
    # unit's writable paths, tmpfiles and hardening must follow it.
    settingsStorage = run {
      services.voxnix.settings.storage = {
        backend = "zfs";
        dir_root = "/srv/by-settings";
        mount_root = "/srv/by-settings-zfs";
      };
    };
    settingsDirRoot = run { services.voxnix.settings.storage.dir_root = "/srv/by-settings"; };
    networkd = run { networking.useNetworkd = true; };
    # The bot on, but nobody let in: a warning, not an error.
    botForNobody = run { services.voxnix.telegram = { enable = true; tokenFile = secret "telegram"; }; };
    # Who may use it only in the access file: nothing about people in the
    # store, and no warning.
    botWithAccessFile = run {
      services.voxnix.telegram = { enable = true; tokenFile = secret "telegram"; };
      services.voxnix.accessFile = secret "access";
    };
    networkManager = run { networking.networkmanager.enable = true; };
    oldStateVersion = run { system.stateVersion = "21.11"; };
    extraModuleDir = run { services.voxnix.extraModules.my-dir = ./fixtures/extra-modules/my-dir; };
    # Host ports for `voxnix expose --to host`: the daemon's range; the host
    # firewall's input rules opened for it only when asked (forwarded
    # traffic never meets them).
    exposeHostPorts = run { services.voxnix.expose.hostPorts = { from = 20000; to = 20099; }; };
    exposeOpenFirewall = run {
      services.voxnix.expose = { hostPorts = { from = 20000; to = 20099; }; openFirewall = true; };
    };
  };

  # One configuration per assertion of the module, and a word of the message
  # it must give.
  assertionCases = {
    frontendGroup = { config.services.voxnix.settings.frontend_group = "staff"; expect = "frontend_group must stay"; };
    bridge = { config.services.voxnix.settings.bridge = "br-other"; expect = "services.voxnix.network.bridge"; };
    builder = { config.services.voxnix.settings.builder = "host-image"; expect = "builder must be \"nix\""; };
    dhcpRange = { config.services.voxnix.network.address = "10.9.0.1/16"; expect = "dhcpRange: set it"; };
    extraName = { config.services.voxnix.extraModules.My_Tools = ./fixtures/extra-modules/my-tools/my-tools.nix; expect = "invalid module name(s) My_Tools"; };
    extraClash = { config.services.voxnix.extraModules.git = ./fixtures/extra-modules/my-tools/my-tools.nix; expect = "git already in the library"; };
    extraMissing = { config.services.voxnix.extraModules.gone = ./fixtures/extra-modules/missing.nix; expect = "extraModules.gone: "; };
    telegramToken = { config.services.voxnix.telegram.enable = true; expect = "tokenFile must be set"; };
    llmModel = { config.services.voxnix.llm.baseUrl = "http://127.0.0.1:1/v1"; expect = "llm.model must be set"; };
    nixEnable = { config.nix.enable = false; expect = "nix.enable must be true"; };
    confDir = { config.services.voxnix.settings.conf_dir = "/etc/elsewhere"; expect = "conf_dir must be /etc/nixos-containers"; };
    containersDir = { config.services.voxnix.settings.containers_dir = "/srv/roots"; expect = "containers_dir must be /var/lib/nixos-containers"; };
    tailscaleOAuth = { config.services.voxnix.tailscale.oauthClientId = "k123CNTRL"; expect = "oauthClientId and oauthClientSecretFile go together"; };
    exposeLowPorts = { config.services.voxnix.expose.hostPorts = { from = 80; to = 2000; }; expect = "hostPorts: from must be at least 1024"; };
    exposeReversed = { config.services.voxnix.expose.hostPorts = { from = 20099; to = 20000; }; expect = "hostPorts: from must not be above to, got 20099-20000"; };
    confDirOld = { config = { system.stateVersion = "21.11"; services.voxnix.settings.conf_dir = "/etc/nixos-containers"; }; expect = "conf_dir must be /etc/containers"; };
  };
in
{
  inherit (nixpkgsLib) source fallbacks;
  inherit cases;
  # services.voxnix's option paths (`telegram.tokenFile`, ...).
  optionPaths = map (o: lib.concatStringsSep "." (lib.drop 2 o.loc))
    (lib.collect lib.isOption (evalHost { }).options.services.voxnix);
  # Where the extra-module fixtures land in the store (their directories).
  extraCopies = {
    my-tools = builtins.path { path = ./fixtures/extra-modules/my-tools; name = "voxnix-extra-my-tools"; };
    my-dir = builtins.path { path = ./fixtures/extra-modules/my-dir; name = "voxnix-extra-my-dir"; };
  };
  # Configurations the option types refuse: the test evaluates each and
  # reads the error.
  typeErrors = {
    exposePortTooHigh = run { services.voxnix.expose.hostPorts = { from = 60000; to = 70000; }; };
  };
  assertions = builtins.mapAttrs
    (_: c: { inherit (c) expect; failed = (run c.config).failedAssertions; })
    assertionCases;
}
