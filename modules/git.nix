{
  description = "Git with sensible system-wide defaults in /etc/gitconfig (main as default branch, rebase on pull).";

  settings = {
    user_name = {
      type = "string";
      default = "";
      description = "user.name for git in the container; empty leaves it unset.";
      personal = true;
    };
    user_email = {
      type = "string";
      default = "";
      description = "user.email for git in the container; empty leaves it unset.";
      personal = true;
    };
  };

  module = { config, lib, pkgs, ... }:
    let
      git = config.programs.git.package;
      identity = "/run/voxnix/gitconfig";
      # The identity is personal (never in the store): written at boot from
      # the personal settings the host hands over, and included by the
      # system gitconfig. git skips an include that does not exist.
      writeIdentity = pkgs.writeShellScript "voxnix-git-identity" ''
        set -eu
        rm -f ${identity}
        for key in name email; do
          value=$(${pkgs.jq}/bin/jq -r --arg k "user_$key" '.git[$k] // ""' ${config.voxnix.personalFile})
          if [ -n "$value" ]; then
            ${git}/bin/git config --file ${identity} "user.$key" "$value"
          fi
        done
        if [ -e ${identity} ]; then chmod 0644 ${identity}; fi
      '';
    in
    {
      programs.git = {
        enable = true;
        config = {
          init.defaultBranch = "main";
          pull.rebase = true;
          rebase.autoStash = true;
          push.autoSetupRemote = true;
          fetch.prune = true;
          diff.colorMoved = "default";
          merge.conflictStyle = "zdiff3";
          # /workspace is bind-mounted from the host and may be owned by a
          # different (mapped) uid; trust it and the repositories under it.
          safe.directory = [ "/workspace" "/workspace/*" ];
          include.path = identity;
        };
      };

      systemd.services.voxnix-git-identity = {
        description = "The git identity from the personal settings (voxnix)";
        wantedBy = [ "multi-user.target" ];
        after = [ "voxnix-personal.service" ];
        requires = [ "voxnix-personal.service" ];
        unitConfig.ConditionPathExists = config.voxnix.personalFile;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${writeIdentity}";
        };
      };
    };
}
