{
  description = "OpenSSH server; root logs in with the spec's and the owner's registered keys, password login disabled; nix-ld for remote editors.";

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
    editors = {
      type = "bool";
      default = true;
      description = "Turn on programs.nix-ld, so the servers VS Code/Cursor Remote-SSH and JetBrains Gateway download into the container run.";
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
          # Remote editors (VS Code/Cursor Remote-SSH, JetBrains Gateway)
          # talk to their server through a forwarded TCP connection. sshd
          # allows it by default; said here so it stays on.
          AllowTcpForwarding = lib.mkDefault true;
        };
      };

      # The editors' servers are generic Linux binaries that expect a dynamic
      # loader at /lib64/ld-linux-x86-64.so.2, which NixOS does not have:
      # nix-ld puts one there (and the common libraries behind it).
      programs.nix-ld.enable = cfg.editors;

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
