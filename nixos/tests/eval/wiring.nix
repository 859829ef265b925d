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
