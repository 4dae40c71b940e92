{
  description = "Persistent /workspace (bind-mounted by the host); login shells start there.";

  settings = { };

  module = { ... }: {
    # The host bind-mounts the container's workspace directory here.  Make
    # sure the mount point exists even when it does not (e.g. first boot of
    # a container without one); an existing directory keeps its contents.
    systemd.tmpfiles.rules = [ "d /workspace 0755 root root -" ];

    # Start login shells in /workspace, unless they were started somewhere
    # other than the home directory on purpose.
    programs.bash.loginShellInit = ''
      if [ -d /workspace ] && [ "$PWD" = "$HOME" ]; then
        cd /workspace
      fi
    '';
    programs.fish.loginShellInit = ''
      if test -d /workspace; and test "$PWD" = "$HOME"
        cd /workspace
      end
    '';
  };
}
