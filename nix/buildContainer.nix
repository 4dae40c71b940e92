# Entry point for the daemon: build a container's NixOS system from a spec.
#
#   nix-build --no-out-link nix/buildContainer.nix \
#     --arg nixpkgs /path/to/nixpkgs --argstr specFile /var/lib/voxnix/specs/dev.json
#
# (or `nix-instantiate` the same arguments to get the .drv).  `nixpkgs` may be
# a path, a string or a flake input (anything with outPath); it is only
# imported when the result is evaluated, so this file parses and the spec
# can be checked without it.  Returns config.system.build.toplevel.
{ nixpkgs
, specFile
, system ? builtins.currentSystem
}:

let
  mkContainer = import ./mkContainer.nix { };

  spec = builtins.fromJSON (builtins.readFile specFile);

  # toString keeps a path argument from being copied into the store.
  evalConfig = import "${toString nixpkgs}/nixos/lib/eval-config.nix";

  nixos = evalConfig {
    inherit system;
    modules = [ (mkContainer spec) ];
  };
in
nixos.config.system.build.toplevel
