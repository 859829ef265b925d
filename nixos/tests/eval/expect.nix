# Runs a suite of evaluation tests: `expect "suite" { "case" = { actual = …; expected = …; }; }`
# is true when every case's actual value equals its expected one, and
# otherwise throws a message listing every failing case with both values.
# Builtins only; values are shown as JSON, so keep paths out of them.
suite: cases:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    length
    map
    toJSON
    ;
  names = attrNames cases;
  failing = filter (name: cases.${name}.actual != cases.${name}.expected) names;
  report =
    name:
    concatStringsSep "\n" [
      "  ${name}:"
      "    expected ${toJSON cases.${name}.expected}"
      "    got      ${toJSON cases.${name}.actual}"
    ];
in
if failing == [ ] then
  true
else
  throw (
    concatStringsSep "\n" (
      [ "${suite}: ${toString (length failing)} of ${toString (length names)} cases failed:" ]
      ++ map report failing
    )
  )
