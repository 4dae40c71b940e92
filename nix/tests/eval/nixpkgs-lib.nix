# nixpkgs' real lib for the evaluation suite, found without a step by hand.
#
#   (import ./nixpkgs-lib.nix { }).lib      the lib
#   (import ./nixpkgs-lib.nix { }).source   where it came from
#
# In this order (the first that exists wins):
#   1. $VOXNIX_NIXPKGS_LIB: a lib folder, a nixpkgs.lib checkout or a nixpkgs checkout;
#   2. <nixpkgs> on NIX_PATH (its lib/);
#   3. ../shared/nixpkgs-lib beside the repository (checked against the pinned hash);
#   4. the pinned revision of nix-community/nixpkgs.lib, fetched and checked by hash
#      (only on a machine that reaches it; elsewhere Nix's own error ends the run).
#
# Debian 12's Nix (2.8) has no builtins.readFileType, which lib.fileset uses.
# Then lib is imported with a fallback for it (from builtins.readDir of the
# parent) through scopedImport, so lib itself stays exactly as published.
{ }:

let
  pinned = {
    rev = "de42d44212d207476489bce163375d8306a26d59";
    # nix-hash --type sha256 --base32 of the unpacked tree
    sha256 = "1v7rldwwmxw2wq7b8zrsmz3mk1kav7q8v3m9b5g14ff4j04r69nj";
    # The store path Nix gives a tree of that hash named "source".
    storeName = "spjcdg6wiyqlnq0nv3ljxyw0c4g0zp2r-source";
  };

  # A folder holding lib/default.nix, or lib's own folder.
  libIn = dir:
    if builtins.pathExists (dir + "/lib/default.nix") then dir + "/lib"
    else if builtins.pathExists (dir + "/default.nix") && builtins.pathExists (dir + "/modules.nix") then dir
    else null;

  fromEnv =
    let v = builtins.getEnv "VOXNIX_NIXPKGS_LIB"; in
    if v == "" then null
    else if !builtins.pathExists v then
      throw "voxnix eval: VOXNIX_NIXPKGS_LIB=${v} does not exist"
    else
      let found = libIn (/. + v); in
      if found == null then
        throw "voxnix eval: VOXNIX_NIXPKGS_LIB=${v} holds no nixpkgs lib (neither lib/default.nix nor default.nix with modules.nix)"
      else found;

  fromNixPath =
    let r = builtins.tryEval (builtins.findFile builtins.nixPath "nixpkgs"); in
    if r.success then libIn r.value else null;

  sharedDir = ../../../../shared/nixpkgs-lib;
  fromShared =
    if !builtins.pathExists sharedDir then null
    else if baseNameOf (builtins.path { path = sharedDir; name = "source"; }) != pinned.storeName then
      throw "voxnix eval: ${toString sharedDir} is not the pinned nixpkgs lib (revision ${pinned.rev}, NAR hash ${pinned.sha256}): its content was changed"
    else libIn sharedDir;

  fetched = builtins.fetchTarball {
    url = "https://github.com/nix-community/nixpkgs.lib/archive/${pinned.rev}.tar.gz";
    inherit (pinned) sha256;
  };

  choice =
    if fromEnv != null then { dir = fromEnv; source = "VOXNIX_NIXPKGS_LIB"; }
    else if fromNixPath != null then { dir = fromNixPath; source = "<nixpkgs> on NIX_PATH"; }
    else if fromShared != null then { dir = fromShared; source = "../shared/nixpkgs-lib (pinned ${pinned.rev})"; }
    else { dir = fetched + "/lib"; source = "fetched: nix-community/nixpkgs.lib ${pinned.rev}"; };

  # ---- builtins newer than Debian's Nix -------------------------------------

  readFileTypeFallback = path:
    let
      name = baseNameOf path;
      parent = builtins.readDir (dirOf path);
    in
    if name == "" then "directory"
    else if parent ? ${name} then parent.${name}
    else throw "voxnix eval: readFileType: ${toString path} does not exist";

  patchedBuiltins = builtins // {
    readFileType = readFileTypeFallback;
  };

  # Every file lib imports sees the patched builtins (scopedImport replaces
  # the names of the base environment, and `import` passes the scope on).
  scope = {
    builtins = patchedBuiltins;
    import = scopedImport scope;
  };

  importLib = dir:
    if builtins ? readFileType then import dir
    else scopedImport scope dir;
in
{
  inherit (choice) source;
  dir = toString choice.dir;
  lib = importLib choice.dir;
  fallbacks = if builtins ? readFileType then [ ] else [ "readFileType" ];
}
