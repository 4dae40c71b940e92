# The flake's outputs, evaluated with nixpkgs' real lib and a stand-in
# nixpkgs input (legacyPackages are ./pkgs.nix per system), forced as far as
# `nix flake check` looks: every package, check and dev shell is a
# derivation (its arguments evaluated), nixosModules.default is a module
# file, and the overlay has the argument names the checker wants.
#
#   nix-instantiate --eval --strict --json --readonly-mode nix/tests/eval/flake-outputs.nix
{ root ? ../../..
, nixpkgsLib ? import ./nixpkgs-lib.nix { }
}:

let
  inherit (nixpkgsLib) lib;
  flake = import (root + "/flake.nix");
  systems = [ "x86_64-linux" "aarch64-linux" ];
  nixpkgs = {
    inherit lib;
    outPath = "/nix/store/00000000000000000000000000000000-source";
    legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system; });
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };

  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";
  # name -> true when it is a derivation; its name forces its arguments.
  drvs = set: builtins.mapAttrs (_: v: isDrv v && builtins.isString v.name && builtins.isString v.outPath) set;
  perSystem = output: builtins.mapAttrs (_: drvs) output;

  library = import (root + "/nix/library.nix") { };
  module = outputs.nixosModules.default;

  # Imported twice (e.g. by a host and by a profile it imports): a module
  # given as a path is deduplicated by the module system.
  twice = lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = nixpkgs.legacyPackages.x86_64-linux; }
      module
      module
      { services.voxnix.enable = true; }
    ];
  };
in
{
  outputs = builtins.attrNames outputs;
  inputs = builtins.attrNames flake.inputs;
  packages = perSystem outputs.packages;
  checks = perSystem outputs.checks;
  devShells = perSystem outputs.devShells;
  packageSrc = toString outputs.packages.x86_64-linux.default.drvAttrs.src;
  nixosModule = {
    isPath = builtins.isPath module;
    file = if builtins.isPath module then toString module else null;
    importedTwice = twice.config.services.voxnix.settings.bridge;
  };
  overlay = {
    isFunction = builtins.isFunction outputs.overlays.default;
    voxnix = (outputs.overlays.default nixpkgs.legacyPackages.x86_64-linux { }).voxnix.name;
  };
  mkContainer = builtins.isFunction outputs.lib.mkContainer;
  catalog = outputs.lib.catalog == library.catalog;
  modules = builtins.attrNames outputs.lib.modules;
  libraryNames = outputs.lib.names;
}
