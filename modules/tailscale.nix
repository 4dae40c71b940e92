{
  description = "Tailscale, joined with an auth key passed as the systemd credential 'tailscale-auth-key' (Tailscale SSH enabled).";

  settings = {
    userspace_networking = {
      type = "bool";
      default = false;
      description = "Run tailscaled without a TUN device (use when the host does not give the container /dev/net/tun).";
    };
  };

  credentials = {
    tailscale-auth-key = "Tailscale auth key used once by 'tailscale up' to join the tailnet.";
  };

  module = { config, lib, pkgs, ... }:
    let
      cfg = config.voxnix.settings.tailscale;
      tailscale = config.services.tailscale.package;
      hostName = config.networking.hostName;

      up = pkgs.writeShellScript "voxnix-tailscale-up" ''
        set -eu
        state=$(${tailscale}/bin/tailscale status --json --peers=false \
          | ${pkgs.jq}/bin/jq -r '.BackendState // ""' || true)
        if [ "$state" = "Running" ]; then
          echo "tailscale already up"
          exit 0
        fi
        # The key never leaves the credential file: tailscale reads it itself.
        exec ${tailscale}/bin/tailscale up \
          --ssh \
          --hostname=${lib.escapeShellArg hostName} \
          --auth-key="file:$CREDENTIALS_DIRECTORY/tailscale-auth-key"
      '';
    in
    {
      services.tailscale = {
        enable = true;
        openFirewall = true;
        interfaceName = lib.mkIf cfg.userspace_networking "userspace-networking";
      };

      networking.firewall = {
        trustedInterfaces = lib.mkIf (!cfg.userspace_networking) [ config.services.tailscale.interfaceName ];
        checkReversePath = lib.mkDefault "loose";
      };

      # The host passes the auth key into the container with
      # `--load-credential=tailscale-auth-key:<file>` (systemd-nspawn); this
      # unit imports it.  It is skipped when the credential was not passed
      # (e.g. a restart after the key was consumed) and exits early when the
      # node is already logged in.
      systemd.services.voxnix-tailscale-up = {
        description = "Join the tailnet (voxnix)";
        after = [ "tailscaled.service" "network-online.target" ];
        wants = [ "network-online.target" ];
        requires = [ "tailscaled.service" ];
        wantedBy = [ "multi-user.target" ];
        unitConfig.ConditionCredential = "tailscale-auth-key";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          LoadCredential = "tailscale-auth-key";
          ExecStart = "${up}";
        };
      };
    };
}
