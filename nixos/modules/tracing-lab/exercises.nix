# The exercises (exercises/*.json, read by ../../lib/exercises.nix): the one
# the system boots with, the others as specialisations when asked for (the
# lab VM does; a host importing the module builds only its own system), and
# `lab-exercise`, which lists them and switches between them.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  exercises = import ../../lib/exercises.nix;
  cfg = config.services.tracing-lab;

  # "<name>\t<summary>" per line, in the exercises' order.
  table = lib.concatMapStrings (
    name: "${name}\t${exercises.byName.${name}.summary}\n"
  ) exercises.names;
  # The name column fits the longest name.
  nameWidth = toString (lib.foldl' lib.max 0 (map lib.stringLength exercises.names));

  # What each exercise asks the learner to look for, by name.
  lookFor = pkgs.writeText "tracing-lab-exercises.json" (
    builtins.toJSON (lib.mapAttrs (_: exercise: exercise.lookFor) exercises.byName)
  );

  lab-exercise = pkgs.writeShellApplication {
    name = "lab-exercise";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.curl
      pkgs.jq
    ];
    text = ''
      # Every exercise is a specialisation of the system the VM booted, whose
      # own exercise is the one its lab.json names.
      booted=/run/booted-system
      booted_exercise=$(jq -r .exercise "$booted/etc/tracing-lab/lab.json")
      current=$(jq -r .exercise /etc/tracing-lab/lab.json)

      list() {
        while IFS=$'\t' read -r name summary; do
          mark=" "
          [[ $name == "$current" ]] && mark="*"
          printf '%s %-${nameWidth}s %s\n' "$mark" "$name" "$summary"
        done <<'EOF'
      ${table}EOF
      }

      if (($# == 0)); then
        echo "Exercises (* is running; switch with: lab-exercise NAME):"
        list
        exit 0
      fi
      if (($# > 1)) || [[ $1 == -* ]]; then
        echo "usage: lab-exercise [NAME]   (no NAME: list the exercises)" >&2
        exit 2
      fi

      name=$1
      if [[ $name == "$booted_exercise" ]]; then
        system=$booted
      elif [[ -e $booted/specialisation/$name ]]; then
        system=$booted/specialisation/$name
      elif grep -q "^$name"$'\t' <<'EOF'
      ${table}EOF
      then
        ${
          if cfg.specialisations.enable then
            ''echo "lab-exercise: \`$name\` is not built into this system; add it to services.tracing-lab.specialisations.exercises and rebuild." >&2''
          else
            ''echo "lab-exercise: this system runs \`$booted_exercise\` only: the other exercises are not built into it. Set services.tracing-lab.specialisations.enable = true (or services.tracing-lab.exercise = \"$name\") and rebuild." >&2''
        }
        exit 2
      else
        echo "lab-exercise: no exercise \`$name\`; there are:" >&2
        list >&2
        exit 2
      fi

      echo "Switching the lab to $name ..."
      "$system/bin/switch-to-configuration" test
      entry=$(jq -r '.hops[0].url' /etc/tracing-lab/lab.json)
      for _ in $(seq 1 60); do
        curl --silent --fail --max-time 2 --output /dev/null "''${entry}readyz" && break
        sleep 1
      done
      echo
      echo "Exercise $name: $(jq -r --arg name "$name" '.[$name]' ${lookFor})" | fold -s -w 88
    '';
    meta.description = "List the tracing lab's exercises, or switch to one";
  };
in
{
  options.services.tracing-lab = {
    exercise = mkOption {
      type = types.enum exercises.allNames;
      default = "baseline";
      example = "slow-hop";
      description = ''
        The exercise the lab runs (exercises/<name>.json): its chain, unless
        {option}`services.tracing-lab.chain` is set, and what its collector
        needs (tail sampling). The others are specialisations of this system
        (see {option}`services.tracing-lab.specialisations.enable`).
      '';
    };

    specialisations = {
      enable = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to build the other exercises as specialisations of this
          system, which `lab-exercise <name>` switches to without a reboot.
          Each is a whole system more to evaluate and build: the lab VM turns
          this on, a host running the lab leaves it off and changes
          {option}`services.tracing-lab.exercise` instead.
        '';
      };

      exercises = mkOption {
        type = types.listOf (types.enum exercises.names);
        default = exercises.names;
        defaultText = lib.literalMD "every exercise";
        example = [
          "errors"
          "broken-propagation"
        ];
        description = ''
          The exercises built as specialisations when
          {option}`services.tracing-lab.specialisations.enable` is on (the one
          the system boots with is always there).
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable {
    specialisation = lib.mkIf cfg.specialisations.enable (
      lib.genAttrs (lib.filter (name: name != cfg.exercise) cfg.specialisations.exercises) (name: {
        configuration.services.tracing-lab = {
          exercise = lib.mkForce name;
          # An exercise brings its chain, also over a chain of the user's own.
          chain = lib.mkOverride 90 exercises.byName.${name}.hops;
          collector.tailSampling.replicas = lib.mkOverride 90 (
            (import ../../lib/collector-tiers.nix).exerciseReplicas exercises.byName.${name}
          );
        };
      })
    );

    environment.systemPackages = [ lab-exercise ];
  };
}
