{
  description = "OpenSSH server; root logs in with the spec's authorized keys, password login disabled.";

  settings = {
    authorized_keys = {
      type = "list of string";
      default = [ ];
      description = "Public keys (authorized_keys lines) allowed to log in as root.";
      personal = true;
    };
    port = {
      type = "int";
      default = 22;
      description = "TCP port sshd listens on (opened in the container firewall).";
    };
  };

  module = { config, lib, pkgs, ... }:
    let
      cfg = config.voxnix.settings.ssh;
      keysDir = "/run/voxnix/authorized_keys";
      # The keys are personal (never in the store): written at boot from
      # the personal settings the host hands over, before sshd starts.
      writeKeys = pkgs.writeShellScript "voxnix-ssh-keys" ''
        set -eu
        mkdir -p -m 0755 ${keysDir}
        ${pkgs.jq}/bin/jq -r '(.ssh.authorized_keys // [])[]' ${config.voxnix.personalFile} > ${keysDir}/.root
        chmod 0644 ${keysDir}/.root
        mv ${keysDir}/.root ${keysDir}/root
      '';
    in
    {
      assertions = [{
        assertion = cfg.port > 0 && cfg.port < 65536;
        message = "voxnix: setting 'ssh.port' must be between 1 and 65535, got ${toString cfg.port}";
      }];

      services.openssh = {
        enable = true;
        ports = [ cfg.port ];
        openFirewall = true;
        authorizedKeysFiles = [ "${keysDir}/%u" ];
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "prohibit-password";
        };
      };

      systemd.services.voxnix-ssh-keys = {
        description = "Root's SSH keys from the personal settings (voxnix)";
        wantedBy = [ "multi-user.target" ];
        before = [ "sshd.service" ];
        after = [ "voxnix-personal.service" ];
        requires = [ "voxnix-personal.service" ];
        unitConfig.ConditionPathExists = config.voxnix.personalFile;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${writeKeys}";
        };
      };
    };
}
