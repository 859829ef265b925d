# checks.<system>.eval-wiring: the lab's wiring, asserted on evaluated NixOS
# configurations (./wiring-errors.nix) when the check is evaluated, so that
# both `nix flake check` and an evaluation without a Nix store run it. Broken
# variants show that each kind of miswiring is caught. Nothing here is built:
# the check's derivation only records that the evaluation passed.
{ pkgs, nixosSystem }:
let
  inherit (pkgs) lib;
  wiringErrors = import ./wiring-errors.nix { inherit lib; };
  topology = import ../../lib/topology.nix;
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;

  evaluate =
    modules:
    (nixosSystem {
      modules = modules ++ [ { nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system; } ];
    }).config;
  vm =
    extra:
    evaluate [
      ../../vm.nix
      extra
    ];
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # The `nix run` VM, and the module as someone imports it on a host.
  lab = vm { };
  onHost = evaluate [
    ../../modules/tracing-lab
    {
      services.tracing-lab.enable = true;
      boot.isContainer = true;
      system.stateVersion = "26.05";
    }
  ];
  # Fan-out over OTLP/gRPC, with every backend port moved.
  moved = vm {
    services.tracing-lab = {
      otlpProtocol = "grpc";
      chain = [
        {
          name = "gateway";
          port = 18080;
          calls = [
            "catalog"
            "pricing"
          ];
          callMode = "parallel";
        }
        {
          name = "catalog";
          port = 18081;
          calls = [ ];
        }
        {
          name = "pricing";
          port = 18082;
        }
      ];
      ports = {
        grafana = 13000;
        tempo = 13200;
        tempoGrpc = 19095;
        tempoOtlpGrpc = 14417;
        tempoOtlpHttp = 14418;
        prometheus = 19090;
        collectorOtlpGrpc = 14317;
        collectorOtlpHttp = 14318;
      };
    };
  };
  empty = vm { services.tracing-lab.chain = [ ]; };

  # The network exercise over four machines, as nixos/tests/lab-multi-host.nix
  # spreads it: one machine as `hostName` sees it, with `extra` on top.
  networkHops = exercises.byName.network.hops;
  acrossHosts =
    hostName: extra:
    evaluate [
      ../../modules/tracing-lab
      {
        services.tracing-lab = {
          enable = true;
          exercise = "network";
          inherit hostName;
          backendsHost = "backends";
          interface = "eth1";
          hosts = {
            backends.address = "192.168.1.1";
            hop1.address = "192.168.1.2";
            hop2.address = "192.168.1.3";
            hop3.address = "192.168.1.4";
          };
        };
        boot.isContainer = true;
        system.stateVersion = "26.05";
      }
      extra
    ];
  machineView = config: {
    hops = lib.attrNames config.services.microservice.instances;
    backends = config.services.opentelemetry-collector.enable;
    opened = lib.mapAttrs (_: i: i.allowedTCPPorts) config.networking.firewall.interfaces;
    everywhere = config.networking.firewall.allowedTCPPorts;
  };
  # A copy of the exercise's hops with `changes` laid over hop `name`.
  changedHop = name: changes: map (hop: if hop.name == name then hop // changes else hop) networkHops;

  # The dashboard's Tempo references (one per panel and per query of a Tempo
  # panel), as the message lists them.
  dashboardTempoRefs =
    let
      dashboard = lib.importJSON ../../modules/tracing-lab/dashboards/tracing-lab.json;
      tempoPanels = lib.filter (panel: (panel.datasource.type or null) == "tempo") dashboard.panels;
      count = lib.foldl' (sum: panel: sum + 1 + lib.length panel.targets) 0 tempoPanels;
    in
    builtins.toJSON (
      lib.replicate count {
        type = "tempo";
        uid = "tempo";
      }
    );
  renameTempoDatasource = ds: ds // lib.optionalAttrs (ds.type == "tempo") { uid = "traces"; };

  hostPortsOf =
    unit:
    let
      service = lab.systemd.services.${unit};
    in
    {
      startsAfterIt = builtins.all (builtins.elem "tracing-lab-host-ports.service") [
        service.wants
        service.after
      ];
      EnvironmentFile = service.serviceConfig.EnvironmentFile or null;
    };

  cases = {
    "the nix run VM is wired" = {
      actual = wiringErrors lab;
      expected = [ ];
    };
    "the module on a host is wired" = {
      actual = wiringErrors onHost;
      expected = [ ];
    };
    "a fan-out chain over gRPC with moved ports is wired" = {
      actual = wiringErrors moved;
      expected = [ ];
    };

    "on a host, nothing listens beyond loopback and the firewall stays shut" = {
      actual = {
        lab = (builtins.fromJSON onHost.environment.etc."tracing-lab/lab.json".text).listenAddress;
        entry = onHost.systemd.services.microservice-1.environment.HTTP_HOST;
        grafana = onHost.services.grafana.settings.server.http_addr;
        tempo = onHost.services.tempo.settings.server.http_listen_address;
        prometheus = onHost.services.prometheus.listenAddress;
        firewall = onHost.networking.firewall.allowedTCPPorts;
      };
      expected = {
        lab = "127.0.0.1";
        entry = "127.0.0.1";
        grafana = "127.0.0.1";
        tempo = "127.0.0.1";
        prometheus = "127.0.0.1";
        firewall = [ ];
      };
    };
    "the other exercises are specialisations in the VM only" = {
      actual = map (config: lib.attrNames config.specialisation) [
        onHost
        lab
      ];
      expected = [
        [ ]
        (lib.sort lib.lessThan (lib.remove "baseline" exercises.names))
      ];
    };
    "anonymous Grafana users are Viewers on a host and Admins in the VM" = {
      actual = map (config: config.services.grafana.settings."auth.anonymous".org_role) [
        onHost
        lab
      ];
      expected = [
        "Viewer"
        "Admin"
      ];
    };
    "the VM forwards each port that listens on 0.0.0.0, in the banner's order" = {
      actual = {
        inherit (lab.services.tracing-lab) listenAddress;
        forwarded = lab.system.build.tracingLabVm.forwardedPorts;
        # The app forwards them itself, with the host port moved by its offset.
        static = lab.virtualisation.forwardPorts;
      };
      expected = {
        listenAddress = "0.0.0.0";
        forwarded = [
          8080
          3000
          3200
          9090
        ];
        static = [ ];
      };
    };
    "the hops and Grafana read the host's ports from the unit that knows the offset" = {
      actual = map hostPortsOf [
        "microservice-1"
        "grafana"
      ];
      expected = [
        {
          startsAfterIt = true;
          EnvironmentFile = "-/run/tracing-lab/hops.env";
        }
        {
          startsAfterIt = true;
          EnvironmentFile = "-/run/tracing-lab/grafana.env";
        }
      ];
    };
    "an instance set with the settings' former names still gets them" = {
      actual =
        let
          config = evaluate [
            ../../modules/microservice.nix
            {
              services.microservice.instances.a = {
                responseTimeJitter = 7;
                externalCallMode = "parallel";
                externalCallTimeout = 300;
                externalCallRetries = 2;
              };
              boot.isContainer = true;
              system.stateVersion = "26.05";
            }
          ];
        in
        lib.getAttrs [
          "RESPONSE_TIME_JITTER"
          "EXTERNAL_CALL_MODE"
          "EXTERNAL_CALL_TIMEOUT"
          "EXTERNAL_CALL_RETRIES"
        ] config.systemd.services.microservice-a.environment;
      expected = {
        RESPONSE_TIME_JITTER = "7";
        EXTERNAL_CALL_MODE = "parallel";
        EXTERNAL_CALL_TIMEOUT = "300";
        EXTERNAL_CALL_RETRIES = "2";
      };
    };
    "the banner is shown once, by the login" = {
      actual = {
        inherit (lab.users) motd motdFile;
        gettyHelpShowsBanner = lib.hasInfix "Tracing lab" lab.services.getty.helpLine;
      };
      expected = {
        motd = "";
        motdFile = "/run/tracing-lab/motd";
        gettyHelpShowsBanner = false;
      };
    };

    "across machines, each runs its own hops and opens what others call, on eth1 only" = {
      actual = lib.genAttrs [ "backends" "hop1" "hop2" "hop3" ] (
        host: machineView (acrossHosts host { })
      );
      expected = {
        backends = {
          hops = [ ];
          backends = true;
          opened.eth1 = [ 4318 ];
          everywhere = [ ];
        };
        hop1 = {
          hops = [ "1" ];
          backends = false;
          opened = { };
          everywhere = [ ];
        };
        hop2 = {
          hops = [ "2" ];
          backends = false;
          opened.eth1 = [ 8081 ];
          everywhere = [ ];
        };
        hop3 = {
          hops = [ "3" ];
          backends = false;
          opened.eth1 = [ 8082 ];
          everywhere = [ ];
        };
      };
    };
    "across machines, calls and spans go by address; the collector listens on its own" = {
      actual = {
        hop1 = lib.getAttrs [
          "EXTERNAL_CALL_URL"
          "OTEL_EXPORTER_OTLP_ENDPOINT"
          "HTTP_HOST"
        ] (acrossHosts "hop1" { }).systemd.services.microservice-1.environment;
        hop3 = lib.getAttrs [
          "HTTP_HOST"
          "OTEL_EXPORTER_OTLP_ENDPOINT"
        ] (acrossHosts "hop3" { }).systemd.services.microservice-3.environment;
        collector =
          (acrossHosts "backends" { })
          .services.opentelemetry-collector.settings.receivers.otlp.protocols.http.endpoint;
      };
      expected = {
        hop1 = {
          EXTERNAL_CALL_URL = "http://192.168.1.3:8081/";
          OTEL_EXPORTER_OTLP_ENDPOINT = "http://192.168.1.1:4318";
          HTTP_HOST = "127.0.0.1";
        };
        hop3 = {
          HTTP_HOST = "192.168.1.4";
          OTEL_EXPORTER_OTLP_ENDPOINT = "http://192.168.1.1:4318";
        };
        collector = "192.168.1.1:4318";
      };
    };
    "refused: a hop on a host no machine has" = {
      actual = failedAssertions (
        acrossHosts "hop1" {
          services.tracing-lab.hosts = lib.mkForce {
            hop1.address = "192.168.1.2";
            backends.address = "192.168.1.1";
            hop2.address = "192.168.1.3";
          };
        }
      );
      expected = [
        "services.tracing-lab.chain: hop `3` runs on host `hop3`, which services.tracing-lab.hosts does not list"
      ];
    };
    "refused: a hop called across hosts with no address" = {
      actual = failedAssertions (
        acrossHosts "hop2" { services.tracing-lab.hosts.hop3.address = lib.mkForce null; }
      );
      expected = [
        "services.tracing-lab.chain: hop `3` on host `hop3` is called from host `hop2`, but services.tracing-lab.hosts.hop3.address is not set"
      ];
    };
    "refused: a port taken on a host" = {
      actual = failedAssertions (
        acrossHosts "hop2" {
          services.tracing-lab.chain = lib.mkForce (
            changedHop "3" {
              host = "hop2";
              port = 8081;
            }
          );
        }
      );
      # The microservice module's own check sees both instances on this machine too.
      expected = [
        "services.microservice.instances: two enabled instances use the same port."
        "services.tracing-lab.chain: port 8081 is used by more than one hop on host `hop2`: `2`, `3`"
      ];
    };
    "refused: a machine that is none of the hosts" = {
      actual = failedAssertions (acrossHosts "hop4" { });
      expected = [
        "services.tracing-lab.hostName: `hop4` is not one of services.tracing-lab.hosts (backends, hop1, hop2, hop3)"
      ];
    };
    "refused: a machine of a lab spread over several that does not say which it is" = {
      actual = failedAssertions (acrossHosts null { });
      expected = [
        "services.tracing-lab.hostName: not set, but the lab is spread over machines (hop `1` runs on host `hop1`): say which of services.tracing-lab.hosts this machine is"
      ];
    };
    "the network exercise is no specialisation: it needs machines of its own" = {
      actual = lib.elem "network" (lib.attrNames lab.specialisation);
      expected = false;
    };

    # Each kind of miswiring is caught, with what was expected and what was found.
    "caught: the collector exporting past Tempo" = {
      actual = wiringErrors (vm {
        services.opentelemetry-collector.settings.exporters.otlp_grpc.endpoint =
          lib.mkForce "127.0.0.1:4999";
      });
      expected = [
        "the collector's exporter (Tempo's OTLP/gRPC receiver): expected \"127.0.0.1:4417\", got \"127.0.0.1:4999\""
      ];
    };
    "caught: a hop listening elsewhere than lab.json says" = {
      actual = wiringErrors (vm {
        systemd.services.microservice-2.environment.HTTP_PORT = lib.mkForce "8091";
      });
      expected = [
        "microservice-2 listens on (HTTP_HOST:HTTP_PORT): expected \"127.0.0.1:8081\", got \"127.0.0.1:8091\""
      ];
    };
    "caught: a hop calling the wrong hop" = {
      actual = wiringErrors (vm {
        systemd.services.microservice-1.environment.EXTERNAL_CALL_URL =
          lib.mkForce "http://127.0.0.1:8082/";
      });
      expected = [
        "microservice-1 calls (EXTERNAL_CALL_URL): expected [\"http://127.0.0.1:8081/\"], got [\"http://127.0.0.1:8082/\"]"
      ];
    };
    "caught: Tempo's metrics going past Prometheus" = {
      actual = wiringErrors (vm {
        services.tempo.settings.metrics_generator.storage.remote_write = lib.mkForce [
          { url = "http://127.0.0.1:9091/api/v1/write"; }
        ];
      });
      expected = [
        "Tempo's metrics-generator writes to (Prometheus' remote-write URL): expected [\"http://127.0.0.1:9090/api/v1/write\"], got [\"http://127.0.0.1:9091/api/v1/write\"]"
      ];
    };
    "caught: a Tempo data source UID that the dashboard and the links do not use" = {
      actual = wiringErrors (vm {
        services.grafana.provision.datasources.settings.datasources = lib.mkForce (
          map renameTempoDatasource (backends.grafanaDatasources { ports = topology.defaultPorts; })
        );
      });
      expected =
        map
          (
            hop:
            "microservice-${hop}'s trace link uses the Tempo data source (pane, query): expected [\"traces\",\"traces\"], got [\"tempo\",\"tempo\"]"
          )
          [
            "1"
            "2"
            "3"
          ]
        ++ [
          "the Prometheus data source's exemplar links: expected [\"traces\"], got [\"tempo\"]"
          "data sources the dashboards use that Grafana does not have: expected [], got ${dashboardTempoRefs}"
        ];
    };
    "caught: Tempo's gRPC server on all interfaces" = {
      actual = wiringErrors (vm {
        services.tempo.settings.server.grpc_listen_address = lib.mkForce "0.0.0.0";
      });
      expected = [ "Tempo's gRPC address: expected \"127.0.0.1\", got \"0.0.0.0\"" ];
    };

    "an empty chain: only the lab's own assertion fails" = {
      actual = failedAssertions empty;
      expected = [ "services.tracing-lab.chain: the chain must contain at least one hop" ];
    };
    "an empty chain: every value the lab sets evaluates" = {
      actual = builtins.deepSeq [
        empty.environment.etc."tracing-lab/lab.json".text
        empty.users.motdFile
        empty.networking.firewall.allowedTCPPorts
        empty.services.microservice.instances
        empty.systemd.services.tracing-lab-host-ports.script
        empty.system.build.tracingLabVm.forwardedPorts
      ] (builtins.fromJSON empty.environment.etc."tracing-lab/lab.json".text).entryUrl;
      expected = null;
    };
  };
in
assert import ./expect.nix "eval-wiring" cases;
pkgs.writeText "eval-wiring" "Every case of nixos/tests/eval/wiring.nix held when this check was evaluated.\n"
