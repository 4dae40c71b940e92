{
  description = "voxnix: personal NixOS containers, managed by a D-Bus daemon, for you and the people you share a server with";

  # No flake.lock is committed yet (it cannot be generated where voxnix is
  # developed); `nix flake lock` creates one on first use.  See docs/nixos.md.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      library = import ./nix/library.nix { };
    in
    {
      packages = forAllSystems (pkgs: rec {
        voxnix = pkgs.callPackage ./nix/package.nix { };
        default = voxnix;
      });

      # services.voxnix; `imports = [ voxnix.nixosModules.default ];`.  A path,
      # not the imported function: errors name the file, and a host that
      # imports it twice gets it once.
      nixosModules.default = ./nix/module.nix;

      # `prev` by name: `nix flake check` wants the arguments called final and prev.
      overlays.default = final: prev: {
        voxnix = final.callPackage ./nix/package.nix { };
      };

      lib = {
        # spec (attrset or JSON file) -> a NixOS module for the container
        mkContainer = import ./nix/mkContainer.nix { };
        # the container module library: name -> { name, description, settings, credentials, module, path }
        inherit (library) modules names catalog;
      };

      checks = forAllSystems (pkgs:
        let package = self.packages.${pkgs.stdenv.hostPlatform.system}.default; in
        { build = package; } // import ./nix/tests { inherit pkgs package; });

      devShells = forAllSystems (pkgs: {
        default = import ./nix/devshell.nix { inherit pkgs; };
      });
    };
}
