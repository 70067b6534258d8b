"""Optional objects come and go with their flags; the NetworkPolicy allows exactly the calls
the services make."""

from conftest import SERVICE_MONITOR_API, SERVICES, by_component, of_kind, render

ALL_OFF = {f"services.{s}.{what}.enabled": False for s in SERVICES for what in ("autoscaling", "pdb")}


def test_hpa_and_pdb_follow_their_flags():
    defaults = render()
    assert sorted(by_component(defaults, "HorizontalPodAutoscaler")) == ["cart", "catalog", "inventory", "orders"]
    assert sorted(by_component(defaults, "PodDisruptionBudget")) == sorted(SERVICES)
    off = render(sets=ALL_OFF)
    assert of_kind(off, "HorizontalPodAutoscaler") == []
    assert of_kind(off, "PodDisruptionBudget") == []
    one = render(sets={"services.cart.autoscaling.enabled": False, "services.cart.pdb.enabled": False})
    assert "cart" not in by_component(one, "HorizontalPodAutoscaler")
    assert "cart" not in by_component(one, "PodDisruptionBudget")
    assert "orders" in by_component(one, "HorizontalPodAutoscaler")


def test_the_hpa_owns_replicas_when_enabled():
    deployments = by_component(render(), "Deployment")
    assert "replicas" not in deployments["orders"]["spec"]
    assert deployments["payments"]["spec"]["replicas"] == 1
    hpa = by_component(render(), "HorizontalPodAutoscaler")["orders"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployments["orders"]["metadata"]["name"]


def test_network_policy_is_opt_in():
    assert of_kind(render(), "NetworkPolicy") == []
    assert of_kind(render(sets={"networkPolicy.enabled": False}), "NetworkPolicy") == []
    policies = by_component(render(sets={"networkPolicy.enabled": True}), "NetworkPolicy")
    assert sorted(policies) == sorted(SERVICES + ["migrate"])
    for p in policies.values():
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]


def _peers(rules):
    """Components of holdfast pods named in a list of rules' from/to."""
    out = set()
    for rule in rules:
        for peer in rule.get("from", []) + rule.get("to", []):
            component = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            if component and "namespaceSelector" not in peer:
                out.add(component)
    return out


def test_network_policy_allows_exactly_the_calls_services_make():
    policies = by_component(render(sets={"networkPolicy.enabled": True}), "NetworkPolicy")
    calls = {"orders": {"inventory", "catalog", "cart", "payments", "warehouse"}, "cart": {"catalog", "inventory"}}
    for name in SERVICES:
        spec = policies[name]["spec"]
        assert _peers(spec["egress"]) == calls.get(name, set()), name
        callers = {caller for caller, callees in calls.items() if name in callees}
        assert _peers(spec["ingress"]) == callers, name
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert 53 in egress_ports and 9092 in egress_ports, name  # DNS and Kafka everywhere
        assert (6379 in egress_ports) == (name in {"inventory", "catalog", "cart"}), name
        assert (9042 in egress_ports) == (name in {"catalog", "cart", "orders", "warehouse"}), name
    migrate = policies["migrate"]["spec"]
    assert migrate["ingress"] == []
    assert {p["port"] for rule in migrate["egress"] for p in rule["ports"]} == {53, 9042, 19042}


def test_service_monitor_only_with_the_crd_api():
    assert of_kind(render(), "ServiceMonitor") == []
    (sm,) = of_kind(render(api_versions=[SERVICE_MONITOR_API]), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    # Its selector matches every holdfast Service.
    for s in of_kind(render(), "Service"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    # The group/version alone (as `helm template --api-versions monitoring.coreos.com/v1`) counts too.
    assert len(of_kind(render(api_versions=["monitoring.coreos.com/v1"]), "ServiceMonitor")) == 1
    assert of_kind(render(api_versions=["monitoring.coreos.com/v1alpha1"]), "ServiceMonitor") == []
    off = render(sets={"serviceMonitor.enabled": False}, api_versions=[SERVICE_MONITOR_API])
    assert of_kind(off, "ServiceMonitor") == []


def test_grpc_web_ingress_is_optional_and_routes_by_grpc_service():
    assert of_kind(render(), "Ingress") == []
    (ing,) = of_kind(render(sets={"ingress.enabled": True, "ingress.hosts": ["api.example.com"],
                                  "ingress.tls": [{"secretName": "api-tls", "hosts": ["api.example.com"]}]}), "Ingress")
    assert ing["spec"]["tls"] == [{"secretName": "api-tls", "hosts": ["api.example.com"]}]
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ing["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {
        "/holdfast.catalog.v1.CatalogService": "holdfast-catalog",
        "/holdfast.cart.v1.CartService": "holdfast-cart",
        "/holdfast.orders.v1.OrderService": "holdfast-orders",
    }


def test_migration_job_follows_its_flag():
    assert len(of_kind(render(), "Job")) == 1
    assert of_kind(render(sets={"migrate.enabled": False}), "Job") == []
