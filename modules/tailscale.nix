{
  description = "Tailscale, joined with an auth key passed as the systemd credential 'tailscale-auth-key' (Tailscale SSH only when asked for).";

  settings = {
    userspace_networking = {
      type = "bool";
      default = false;
      description = "Run tailscaled without a TUN device (use when the host does not give the container /dev/net/tun).";
    };
    ssh = {
      type = "bool";
      default = false;
      description = "Turn on Tailscale SSH (tailscale up --ssh): the tailnet policy then decides who may log in.";
    };
  };

  credentials = {
    tailscale-auth-key = "Tailscale auth key used once by 'tailscale up' to join the tailnet.";
  };

  module = { config, lib, pkgs, ... }:
    let
      cfg = config.voxnix.settings.tailscale;
      tailscale = config.services.tailscale.package;

      up = pkgs.writeShellScript "voxnix-tailscale-up" ''
        set -eu
        state=$(${tailscale}/bin/tailscale status --json --peers=false \
          | ${pkgs.jq}/bin/jq -r '.BackendState // ""' || true)
        if [ "$state" = "Running" ]; then
          echo "tailscale already up"
          exit 0
        fi
        key="$CREDENTIALS_DIRECTORY/tailscale-auth-key"
        # voxnix hands over a single-use key for a start it makes, and an
        # empty file otherwise: then the node's saved login is all there is.
        if [ ! -s "$key" ]; then
          echo "no auth key for this start; tailscaled uses its saved login"
          exit 0
        fi
        # The key never leaves the credential file: tailscale reads it itself.
        exec ${tailscale}/bin/tailscale up \
          ${lib.optionalString cfg.ssh "--ssh"} \
          --hostname="$(cat /proc/sys/kernel/hostname)" \
          --auth-key="file:$key"
      '';
    in
    {
      services.tailscale = {
        enable = true;
        openFirewall = true;
        interfaceName = lib.mkIf cfg.userspace_networking "userspace-networking";
      };

      # tailscale0 is not a trusted interface: the container's firewall
      # treats the tailnet like any network (open ports with
      # networking.firewall as usual), so a device that joined with another
      # owner's key reaches nothing unasked.
      networking.firewall.checkReversePath = lib.mkDefault "loose";

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
