# The chain corpus (tests/chains/*.json, which the lab runner's tests read
# too) against the NixOS lab's pure logic, no nixpkgs needed:
#   nix-instantiate --eval --strict nixos/tests/eval/pure-chains.nix
# Each file's hops must give exactly its `errors`, and each variant its
# `variantHops` or `variantError`. Evaluates to true, or throws naming every
# failing case.
let
  inherit (builtins)
    attrNames
    filter
    fromJSON
    listToAttrs
    readDir
    readFile
    stringLength
    substring
    ;
  topology = import ../../lib/topology.nix;
  chainSchema = import ../../lib/chain-schema.nix;

  dir = ../../../tests/chains;
  files = filter (file: substring (stringLength file - 5) 5 file == ".json") (
    attrNames (readDir dir)
  );
  read = file: fromJSON (readFile (dir + "/${file}"));

  errorCases = map (file: {
    name = "${file}: errors";
    value = {
      # `nixos`: the machines of a chain across hosts, as the module passes them.
      actual = (topology.chain ({ inherit (read file) hops; } // (read file).nixos or { })).errors;
      expected = (read file).errors ++ (read file).nixosErrors or [ ];
    };
  }) files;

  variantCases = map (
    file:
    let
      case = read file;
      laid = chainSchema.withSettings case.hops case.variant;
    in
    {
      name = "${file}: variant";
      value = {
        actual = laid;
        expected =
          if case ? variantError then { error = case.variantError; } else { hops = case.variantHops; };
      };
    }
  ) (filter (file: (read file) ? variant) files);

  cases = listToAttrs (errorCases ++ variantCases) // {
    "the corpus is there" = {
      actual = builtins.length files >= 10;
      expected = true;
    };
  };
in
import ./expect.nix "chain corpus tests" cases
