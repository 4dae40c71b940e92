# Validate a spec file without nixpkgs and print what it resolves to.
#
#   nix-instantiate --eval --strict --json nix/checkSpec.nix \
#     --argstr specFile /var/lib/voxnix/specs/dev.json
#
# prints { name, modules, paths, settings, credentials, stateVersion, specJSON }
# or fails with an "error: voxnix: ..." message.
{ specFile }:
(import ./spec.nix { }).describe (builtins.fromJSON (builtins.readFile specFile))
