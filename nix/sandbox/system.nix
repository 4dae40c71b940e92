# Stand-in for nix/buildContainer.nix in the sandbox, where nixpkgs is not
# reachable: builtins only, yet a REAL derivation, so that a sandbox
# container has a .drv that `voxnix status` reads its modules and packages
# from.  The container itself boots the appliance's /usr.
#
#   nix-instantiate nix/sandbox/system.nix --argstr specFile spec.json
#
# The spec is checked by nix/spec.nix exactly as for a real build (an
# unknown module is an evaluation error naming it).  The result mirrors the
# shape of a NixOS toplevel as current nixpkgs builds it, with structured
# attributes (the toplevel since nixpkgs PR #521677's series, buildEnv since
# #434815): every attribute lives in the .drv's `__json` variable.
# `structured = false` gives the older layout (one variable per attribute,
# buildEnv's `pkgs`), which the .drv reader reads too:
#
#   nixos-system-unnamed-<stateVersion>     voxnixModules (JSON list, a string)
#   ├── system-path                          chosenOutputs (old: pkgs, JSON)
#   │   ├── <package>-<version>  ...         the "installed" packages
#   │   └── perl-5.40.0                      a builder tool, not installed
#   └── voxnix-module-<module>-1.0  ...      one per selected module
#       └── <package>-<version>  ...         that module's packages
#
# Every build is a one-line shell script, so a whole system builds in well
# under a second.  With structured attributes Nix sets no variable per
# attribute: the builder reads .attrs.sh (bash) for its output path.
{ specFile
, system ? builtins.currentSystem
, structured ? true
, ...
}:

let
  specLib = import ../spec.nix { };

  # As nix/mkContainer.nix: never the owner or personal settings (the
  # daemon passes neither; this is the second line).
  spec = specLib.impersonal (builtins.fromJSON (builtins.readFile specFile));

  # Throws "voxnix: ..." for an invalid spec, before anything else.
  modules = specLib.moduleNames spec;
  stateVersion = specLib.stateVersion spec;

  # What each module would install on a real host (name-version).
  packagesOf = {
    code-server = [ "code-server-4.99.3" "nodejs-20.19.2" "jq-1.7.1" ];
    dev = [ "gcc-14.2.1" "gnumake-4.4.1" "python3-3.12.10" "ripgrep-14.1.1" "jq-1.7.1" ];
    fish = [ "fish-3.6.0" ];
    git = [ "git-2.39.5" "less-668" ];
    ssh = [ "openssh-9.9p2" ];
    tailscale = [ "tailscale-1.82.5" "iptables-1.8.11" ];
    workspace = [ ];
  };

  # What every NixOS system has.
  basePackages = [ "bash-5.2p37" "coreutils-9.7" "systemd-257.5" ];

  leaf = pname: builtins.derivation {
    name = pname;
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "echo ${pname} > $out" ];
  };

  moduleDrv = m: builtins.derivation {
    name = "voxnix-module-${m}-1.0";
    inherit system;
    builder = "/bin/sh";
    packages = map leaf (packagesOf.${m} or [ ]);
    args = [ "-c" "echo $packages > $out" ];
  };

  installed = builtins.sort builtins.lessThan
    (basePackages ++ builtins.concatLists (map (m: packagesOf.${m} or [ ]) modules));

  # Deduplicated: the same package may come from two modules.
  unique = builtins.attrNames (builtins.listToAttrs (map (p: { name = p; value = true; }) installed));

  # Like nixpkgs' buildEnv: the installed outputs, each { paths, priority }.
  chosenOutputs = map (p: { paths = [ (leaf p) ]; priority = 5; }) unique;

  # A derivation in the chosen layout; `script` writes "$out".
  drv = attrs: script:
    if structured then
      builtins.derivation (attrs // {
        inherit system;
        __structuredAttrs = true;
        builder = "/bin/bash";
        args = [ "-c" "source .attrs.sh; out=\${outputs[out]}; ${script}" ];
      })
    else
      builtins.derivation (attrs // {
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" script ];
      });

  systemPath = drv
    ({ name = "system-path"; perl = leaf "perl-5.40.0"; }
      // (if structured then { inherit chosenOutputs; } else { pkgs = builtins.toJSON chosenOutputs; }))
    "echo installed > $out";
in
drv
{
  # As NixOS names a system without a hostName (mkContainer sets none).
  name = "nixos-system-unnamed-${stateVersion}";
  voxnixModules = builtins.toJSON modules;
  voxnixSettings = builtins.toJSON (specLib.settings spec);
  # What mkContainer puts in /etc/voxnix/spec.json.
  voxnixSpec = specLib.specJSON spec;
  modulesDrvs = map moduleDrv modules;
  inherit systemPath;
}
  ''
    /bin/mkdir $out
    echo "$voxnixModules" > $out/voxnix-modules
    echo "$voxnixSpec" > $out/spec.json
    echo "$systemPath" > $out/sw
    echo ${stateVersion} > $out/nixos-version
  ''
