# The exercises, as the lab's Nix reads them: every ../../exercises/<name>.json
# (the files the lab runner reads too, see lab/src/exercises.rs) and each of
# its variants, by name:
#
#   { baseline = { name; order; title; summary; lookFor; hops; collector;
#       multiHost; netem; }; ...
#     fan-out-sequential = { ...; variant = "sequential"; }; }
#
# A variant is its file's chain with per-hop settings laid over it. Builtins
# only, like ./topology.nix (tested in ../tests/eval/pure-topology.nix).
let
  inherit (builtins)
    attrNames
    concatMap
    filter
    fromJSON
    listToAttrs
    map
    readDir
    readFile
    sort
    stringLength
    substring
    ;

  dir = ../../exercises;
  jsonFiles = filter (file: substring (stringLength file - 5) 5 file == ".json") (
    attrNames (readDir dir)
  );
  baseName = file: substring 0 (stringLength file - 5) file;

  # A variant's hops: its settings laid over its file's chain, or a throw
  # naming the file and the variant.
  withSettings =
    where: hops: settings:
    let
      laid = (import ./chain-schema.nix).withSettings hops settings;
    in
    if laid ? error then throw "${where}: ${laid.error}" else laid.hops;

  read =
    file:
    let
      name = baseName file;
      exercise = fromJSON (readFile (dir + "/${file}"));
      base = {
        inherit name;
        inherit (exercise)
          order
          title
          summary
          hops
          ;
        # What lab-exercise prints: the Grafana side of the file's guide.
        lookFor = builtins.concatStringsSep " " (
          (if exercise ? do then [ "Do: ${exercise.do}" ] else [ ])
          ++ [
            "Look at: ${exercise.lookAt.grafana}"
            "You should see: ${exercise.see}"
            "Question: ${exercise.question}"
          ]
        );
        collector = exercise.collector or { };
        # A hop that names its machine makes the exercise multi-host only.
        multiHost = builtins.any (hop: (hop.host or null) != null) exercise.hops;
        netem = exercise.netem or null;
        variant = null;
      };
      variant =
        variantName:
        let
          settings = exercise.variants.${variantName};
        in
        base
        // {
          name = "${name}-${variantName}";
          title = "${exercise.title} (${variantName})";
          inherit (settings) summary;
          hops = withSettings "exercises/${file}, variant `${variantName}`" exercise.hops settings.hops;
          # A variant may change the collector's settings too, key by key.
          collector = base.collector // (settings.collector or { });
          variant = variantName;
        };
    in
    [ base ] ++ map variant (attrNames (exercise.variants or { }));

  all = concatMap read jsonFiles;
  # In the files' order, each variant after its exercise.
  ordered = sort (
    a: b: a.order < b.order || (a.order == b.order && a.variant == null && b.variant != null)
  ) all;
in
{
  byName = listToAttrs (
    map (exercise: {
      inherit (exercise) name;
      value = exercise;
    }) all
  );

  # Those that run on one machine: the VM's specialisations, the local lab's.
  names = map (exercise: exercise.name) (filter (exercise: !exercise.multiHost) ordered);

  # Every one, also those whose hops name machines (docs/multi-host.md).
  allNames = map (exercise: exercise.name) ordered;
}
