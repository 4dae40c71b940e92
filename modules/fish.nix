{
  description = "fish as the default login shell, with short aliases (ll, la, gs, gd, gl, ...).";

  settings = { };

  module = { pkgs, ... }: {
    programs.fish = {
      enable = true;
      interactiveShellInit = ''
        set -g fish_greeting
      '';
      # `..` needs no alias: fish changes into a directory typed as a command.
      shellAliases = {
        ll = "ls -lh";
        la = "ls -lAh";
        gs = "git status";
        gd = "git diff";
        gds = "git diff --staged";
        gl = "git log --oneline --graph --decorate -n 20";
        ga = "git add";
        gc = "git commit";
        gp = "git push";
      };
    };

    # root's shell defaults to users.defaultUserShell.
    users.defaultUserShell = pkgs.fish;
  };
}
