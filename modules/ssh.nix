{
  description = "OpenSSH server; root logs in with the spec's authorized keys, password login disabled.";

  settings = {
    authorized_keys = {
      type = "list of string";
      default = [ ];
      description = "Public keys (authorized_keys lines) allowed to log in as root.";
    };
    port = {
      type = "int";
      default = 22;
      description = "TCP port sshd listens on (opened in the container firewall).";
    };
  };

  module = { config, lib, ... }:
    let cfg = config.voxnix.settings.ssh; in
    {
      assertions = [{
        assertion = cfg.port > 0 && cfg.port < 65536;
        message = "voxnix: setting 'ssh.port' must be between 1 and 65535, got ${toString cfg.port}";
      }];

      services.openssh = {
        enable = true;
        ports = [ cfg.port ];
        openFirewall = true;
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "prohibit-password";
        };
      };

      users.users.root.openssh.authorizedKeys.keys = cfg.authorized_keys;
    };
}
