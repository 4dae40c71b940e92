{
  description = "Git with sensible system-wide defaults in /etc/gitconfig (main as default branch, rebase on pull).";

  settings = {
    user_name = {
      type = "string";
      default = "";
      description = "user.name written to /etc/gitconfig; empty leaves it unset.";
    };
    user_email = {
      type = "string";
      default = "";
      description = "user.email written to /etc/gitconfig; empty leaves it unset.";
    };
  };

  module = { config, lib, ... }:
    let
      cfg = config.voxnix.settings.git;
      user = lib.filterAttrs (_: v: v != "") {
        name = cfg.user_name;
        email = cfg.user_email;
      };
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
        } // lib.optionalAttrs (user != { }) { inherit user; };
      };
    };
}
