{
  description = "code-server (VS Code in the browser) on /workspace; password passed as the systemd credential 'code-server-password'.";

  settings = {
    port = {
      type = "int";
      default = 8080;
      description = "TCP port code-server listens on.";
    };
    open_firewall = {
      type = "bool";
      default = true;
      description = "Open the port in the container firewall (otherwise reach it over Tailscale or an SSH tunnel).";
    };
  };

  credentials = {
    code-server-password = "Password for the code-server web login.";
  };

  module = { config, lib, pkgs, ... }:
    let
      cfg = config.voxnix.settings.code-server;

      # Build the config file at start, in the unit's private runtime
      # directory, from the credential: the password never enters the Nix
      # store, the unit definition or an environment variable.
      start = pkgs.writeShellScript "voxnix-code-server" ''
        set -eu
        umask 077
        conf="$RUNTIME_DIRECTORY/config.yaml"
        # JSON is valid YAML, and jq quotes the password safely.
        ${pkgs.jq}/bin/jq -n \
          --rawfile pw "$CREDENTIALS_DIRECTORY/code-server-password" \
          --arg bind "0.0.0.0:${toString cfg.port}" \
          '{ "bind-addr": $bind, auth: "password", password: ($pw | rtrimstr("\n")), cert: false }' \
          > "$conf"
        dir=/root
        if [ -d /workspace ]; then dir=/workspace; fi
        exec ${pkgs.code-server}/bin/code-server \
          --config "$conf" \
          --disable-telemetry \
          --disable-update-check \
          "$dir"
      '';
    in
    {
      assertions = [{
        assertion = cfg.port > 0 && cfg.port < 65536;
        message = "voxnix: setting 'code-server.port' must be between 1 and 65535, got ${toString cfg.port}";
      }];

      networking.firewall.allowedTCPPorts = lib.mkIf cfg.open_firewall [ cfg.port ];

      systemd.services.voxnix-code-server = {
        description = "code-server (voxnix)";
        after = [ "network.target" ];
        wantedBy = [ "multi-user.target" ];
        # Tools the editor's terminal and extensions expect.
        path = [ pkgs.bash pkgs.coreutils pkgs.git pkgs.openssh ];
        environment.HOME = "/root";
        serviceConfig = {
          LoadCredential = "code-server-password";
          RuntimeDirectory = "voxnix-code-server";
          RuntimeDirectoryMode = "0700";
          ExecStart = "${start}";
          Restart = "on-failure";
          RestartSec = 5;
        };
      };
    };
}
